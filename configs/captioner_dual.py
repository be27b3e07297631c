r"""PaliGemma-style dual-image RGB-IR captioner (prefix-LM over [RGB][IR][BOS prompt SEP] answer).

Run (fresh clone: builds the demo world + tokenizer in `data/demo_world` first):
  python -m fusionrs_jax.main --config=configs/captioner_dual.py --workdir=workdirs/captioner
Presets through the config arg, e.g. `configs/captioner_dual.py:size=small,inputs=rgb`:
  size     tiny (tests) | small (this 2-core CPU) | paligemma_3b (So400m/14 + Gemma-2B, pods)
  inputs   rgb_ir (both images in the prefix) | rgb | ir (single-image ablations)
  recipe   scratch (the default) | transfer: fine-tune public weights (below)
  runlocal 1 = a seconds-long smoke run of any preset
Fine-tune a public PaliGemma (google/paligemma-3b-pt-224 saved on disk by transformers:
config.json, model.safetensors (or its shards + index) and the tokenizer.model it was trained
with) with big_vision's PaliGemma transfer recipe (big_vision/configs/proj/paligemma/transfers/
rsvqa_hr.py, cococap.py: Adam b2=0.999, lr 1e-5, cosine decay after a 5% linear warmup, no
weight decay, no label smoothing, global-norm clip 1, batch 256, resize only, every part
trained), tokenizing with the folder's tokenizer.model:
  python -m fusionrs_jax.main --config=configs/captioner_dual.py:size=paligemma_3b,recipe=transfer \
    --config.init_from=/path/to/paligemma-3b-pt-224 --config.data.dir=data/ucm_ir \
    --config.data.demo_world_if_missing=False --workdir=workdirs/captioner_transfer
At each eval the run writes `samples/step_N.{jsonl,html}` (image pair, prompt, prediction,
references) and BLEU/METEOR/ROUGE-L/CIDEr-D + instruction exact match to metrics.jsonl.
"""

import ml_collections

from configs import common

# PaliGemma's vocabulary: Gemma's 256,000 pieces + 1024 <locNNNN> + 128 <segNNN>, padded to 257,216
# embedding rows (the public pt-224 folder's text_config.vocab_size).
PALIGEMMA_VOCAB = 257_216

# size -> (SigLIP preset, Gemma preset, global batch, steps, lr, warmup, text_len)
SIZES = {
  "tiny": ("tiny", "tiny", 16, 20, 1e-3, 2, 32),
  "small": ("small", "small", 32, 1000, 5e-4, 50, 48),
  "paligemma_3b": ("So400m", "gemma_2b", 256, 20000, 1e-5, 500, 128),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, size="small", inputs="rgb_ir", recipe="scratch", runlocal="0")
  vit, llm, batch, steps, lr, warmup, text_len = common.choose(arg.size, SIZES, "size")
  common.choose(arg.inputs, {"rgb_ir": 0, "rgb": 0, "ir": 0}, "inputs")
  common.choose(arg.recipe, {"scratch": 0, "transfer": 0}, "recipe")

  c = common.run_config("captioner")
  c.size = arg.size
  c.batch_size = batch
  c.total_steps = steps
  c.log_every = 20
  c.eval_every = 250
  c.checkpoint_every = 250

  c.data = common.dataset_config(vocab_size=2000)
  # Tokens per training row: [BOS prompt SEP answer EOS] (answers are truncated to fit).
  c.data.text_len = text_len
  # Tokens of the [BOS prompt SEP] part (prompts/questions are truncated to fit).
  c.data.prompt_len = 16
  # Per-example task mixture; a record lacking a task's text draws among the others.
  c.data.task_weights = ml_collections.ConfigDict(
    {"caption": 1.0, "ir_caption": 0.5, "instruction": 1.0}
  )
  c.data.augment = True
  # Loader worker processes; -1 = auto (half the cores on hosts with >= 8, else none).
  c.data.worker_count = -1
  # Batches placed on device ahead of the step (a background thread); 0 = none.
  c.data.prefetch = 2

  c.model = ml_collections.ConfigDict()
  c.model.vision_preset = vit
  c.model.llm_preset = llm
  # Images in the prefix: rgb_ir | rgb | ir. Both go through the one shared SigLIP tower.
  c.model.inputs = arg.inputs
  # 0 = the SigLIP preset's size.
  c.model.image_size = 0
  # Keep the image tower (ViT) fixed; the projection and the decoder still train.
  c.model.freeze_image_encoder = False
  # Where the image encoder (ViT) starts: the RGB tower of a SigLIP run of this project (its
  # Orbax `<workdir>/checkpoints`) or the vision tower of a transformers SiglipModel /
  # SiglipVisionModel / PaliGemma folder ("" = random init, or init_from's).
  c.model.image_encoder_init = ""
  c.model.remat = False
  # What remat keeps from the forward pass: a `jax.checkpoint_policies` name, e.g.
  # nothing_saveable (plain remat), dots_saveable, dots_with_no_batch_dims_saveable.
  c.model.remat_policy = "nothing_saveable"
  # nn.scan over the transformer layers: one compiled layer, params stacked under `layers`
  # (fusionrs_jax/models/scan.py converts checkpoints between the two layouts).
  c.model.scan_layers = False
  # Compute dtype: float32 or bfloat16 (params and optimizer state stay float32).
  c.model.dtype = "float32"

  c.loss = ml_collections.ConfigDict()
  # per_example: mean over each example's answer tokens, then over examples (PaliGemma);
  # token: mean over all answer tokens of the batch (long answers weigh more).
  c.loss.normalize = "per_example"

  c.optim = common.adamw_config(lr, warmup)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 32
  # Tasks scored at each eval: caption, ir_caption, instruction.
  c.eval.tasks = ("caption", "ir_caption", "instruction")
  # 0 = every record of the eval split.
  c.eval.max_records = 0
  # Decoding: greedy | beam | sample.
  c.eval.decode_method = "greedy"
  c.eval.max_decode_len = 40
  c.eval.beam_size = 4
  c.eval.temperature = 1.0
  c.eval.top_k = 0
  # Repetition controls (greedy, sampling and beam): never repeat a generated n-gram of this
  # size (0 = off); 4 stops loops such as "the lower left, the lower left" while leaving the
  # templates' legitimately repeated 2-3 word phrases alone.
  c.eval.no_repeat_ngram_size = 4
  # CTRL / transformers repetition_penalty on already generated tokens (1.0 = off).
  c.eval.repetition_penalty = 1.0
  # Rows shown on the HTML sample page.
  c.eval.html_rows = 24

  if arg.size == "paligemma_3b":
    # Pod recipe (checked by `python -m fusionrs_jax.cli.aot`, see README "Scale-out"):
    # FSDP over every chip, bf16 compute with float32 params and Adam moments, remat.
    c.mesh.data, c.mesh.fsdp = 1, -1
    # Its So400m vision tower's widths divide by 128 chips, not 256 (1152 = 2^7 * 9):
    # fsdp stops at 128 and larger slices add tensor parallelism (model axis).
    c.mesh.fsdp_max = 128
    c.model.dtype = "bfloat16"
    c.model.remat = True
    # One scanned layer body: the compiled program (and its compile time) does not grow with depth.
    c.model.scan_layers = True
  if arg.recipe == "transfer":
    transfer_recipe(c)
  if arg.runlocal not in ("0", ""):
    common.runlocal(c)
    c.data.demo_num_train, c.data.demo_num_val, c.data.demo_num_test = 64, 16, 16
    c.eval.max_records = 4
    c.eval.max_decode_len = 8
  if arg.size == "tiny":
    c.data.demo_image_size = 32
    c.data.vocab_size = 512
    c.data.prompt_len = 12
    c.eval.max_decode_len = min(c.eval.max_decode_len, 12)
  return c


def transfer_recipe(c: ml_collections.ConfigDict) -> None:
  """big_vision's PaliGemma transfer settings (transfers/rsvqa_hr.py, cococap.py, forkme.py)
  on a run that starts from a PaliGemma folder given as --config.init_from."""
  # The folder's tokenizer: its embeddings index that vocabulary (a reference, so it follows
  # --config.init_from; the run refuses a folder without tokenizer.model).
  c.data.tokenizer = c.get_ref("init_from") + "/tokenizer.model"
  if c.size == "paligemma_3b":
    c.data.vocab_size = PALIGEMMA_VOCAB
  # The transfers preprocess with resize only (their default crop='rs').
  c.data.augment = False
  # 256 examples per step (rsvqa_hr, cococap); 400 steps ~ 5 epochs of a 20k-example
  # caption + instruction mixture (cococap trains 5 epochs, rsvqa_hr 1).
  c.batch_size = 256 if c.size == "paligemma_3b" else c.batch_size
  c.total_steps = 400 if c.size == "paligemma_3b" else c.total_steps
  # Adam (b1 0.9, b2 0.999), lr 1e-5 (their sweep_best), cosine to 0 after warmup_percent=0.05,
  # wd 0 and label_smoothing 0 (rsvqa_hr; cococap notes wd 0 works as well as its 1e-6),
  # grad_clip_norm 1.
  c.optim.lr = 1e-5
  c.optim.warmup_steps = max(1, round(0.05 * c.total_steps))
  c.optim.end_lr_frac = 0.0
  c.optim.b1, c.optim.b2 = 0.9, 0.999
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0
  # Every part trains (freeze_vit=False, freeze_llm=False: the transfers' default; gqa at
  # 448 px freezes the ViT, --config.model.freeze_image_encoder=True does that here).
  c.model.freeze_image_encoder = False
  # PaliGemma's loss: per-example mean over answer tokens.
  c.loss.normalize = "per_example"
