r"""SigLIP-style sigmoid-contrastive RGB-IR-text model (the default job).

Run (fresh clone: builds the demo world + its tokenizer in `data/demo_world` first):
  python -m fusionrs_jax.main --config=configs/siglip_ir.py --workdir=workdirs/siglip_ir
Presets through the config arg, e.g. `configs/siglip_ir.py:size=small,variant=rgb_only`:
  size     tiny (tests) | mini (the default: minutes on this 2-core CPU) |
           small (this CPU, ~1 h on UCM) | B16 (ViT-B/16 @224, pods) | So400m
  variant  trimodal       RGB-text + IR-text (IR-aware captions) + RGB-IR
           scene_captions as trimodal, but the IR-text term uses the scene captions
           rgb_only       RGB-text only; IR is evaluated through the same (shared) tower
           ir_only        IR-text only (IR-aware captions)
           ir_scene       IR-text only (scene captions; on real thermal the box-grounded ones)
  recipe   scratch (the default) | transfer: fine-tune public weights (below)
  runlocal 1 = a seconds-long smoke run of any preset
Fine-tune a public SigLIP 2 (google/siglip2-base-patch16-224 with size=B16,
google/siglip2-so400m-patch14-224 with size=So400m, saved on disk by transformers: config.json,
model.safetensors and the Gemma tokenizer.model they were trained with; 256k vocabulary, 64
text tokens), tokenizing with the folder's tokenizer.model:
  python -m fusionrs_jax.main --config=configs/siglip_ir.py:size=B16,recipe=transfer \
    --config.init_from=/path/to/siglip2-base-patch16-224 --config.data.dir=data/ucm_ir \
    --config.data.demo_world_if_missing=False --workdir=workdirs/siglip_transfer
big_vision publishes no config that fine-tunes both towers of a SigLIP; the recipe takes what
its SigLIP fine-tuning config (big_vision/configs/proj/image_text/siglip_lit_coco.py) sets
outside the tower it trains from scratch: Adam, cosine decay after a linear warmup of
max(3% of the steps, 100), global-norm clip 1, batch 512, 5000 steps; with both towers
pretrained, the learning rate and weight decay are those of the PaliGemma transfers (lr 1e-5,
wd 0, Adam b2 0.999), not LiT's 1e-3 / 0.01 for a fresh text tower.
On the default (demo world, size=mini, 300 steps) the run prints the six-direction
retrieval table of the test split at the end; see README for measured numbers.
"""

import ml_collections

from configs import common

# variant -> (loss pair weights, caption fields fed to the pipeline, training modalities)
VARIANTS = {
  "trimodal": (
    {"rgb_text": 1.0, "ir_text": 1.0, "rgb_ir": 1.0},
    ("captions", "ir_captions"),
    ("rgb", "ir"),
  ),
  "scene_captions": (
    {"rgb_text": 1.0, "ir_text": 1.0, "rgb_ir": 1.0},
    ("captions",),
    ("rgb", "ir"),
  ),
  "rgb_only": ({"rgb_text": 1.0}, ("captions",), ("rgb",)),
  "ir_only": ({"ir_text": 1.0}, ("captions", "ir_captions"), ("ir",)),
  # IR images against their scene captions only (on real thermal: the box-grounded ones).
  "ir_scene": ({"ir_text": 1.0}, ("captions",), ("ir",)),
}

# SigLIP 2 text towers: the Gemma tokenizer's 256,000 pieces, 64 tokens per text.
SIGLIP2_VOCAB, SIGLIP2_TEXT_LEN = 256_000, 64

# size -> (model preset name, global batch, steps, learning rate, warmup)
SIZES = {
  "tiny": ("tiny", 16, 20, 1e-3, 2),
  "mini": ("mini", 64, 300, 1e-3, 30),
  "small": ("small", 64, 600, 5e-4, 60),
  "B16": ("B16", 32768, 40000, 1e-3, 2000),
  "So400m": ("So400m", 32768, 40000, 1e-3, 2000),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, size="mini", variant="trimodal", recipe="scratch", runlocal="0")
  preset, batch, steps, lr, warmup = common.choose(arg.size, SIZES, "size")
  weights, caption_fields, modalities = common.choose(arg.variant, VARIANTS, "variant")
  common.choose(arg.recipe, {"scratch": 0, "transfer": 0}, "recipe")

  c = common.run_config("siglip")
  c.size = arg.size
  c.variant = arg.variant
  c.batch_size = batch
  c.total_steps = steps
  c.log_every = 20
  # Two evals per run (midway and at the end).
  c.eval_every = max(1, steps // 2)
  c.checkpoint_every = max(1, steps // 2)

  c.data = common.dataset_config(vocab_size=2000)
  c.data.modalities = modalities
  c.data.caption_fields = caption_fields
  # Batch rows lacking a requested modality get zeros ("zeros") or stop the run ("error").
  c.data.missing_modality = "error"
  # Loader worker processes; -1 = auto (half the cores on hosts with >= 8, else none).
  c.data.worker_count = -1
  # Batches placed on device ahead of the step (a background thread); 0 = none.
  c.data.prefetch = 2
  c.data.augment = True
  # More prepared dataset folders whose train split joins data.dir's (records concatenated,
  # so each folder's share of the batches is its share of the records); e.g. translated UCM
  # plus real HIT-UAV thermal. Their records may lack a modality: set missing_modality.
  c.data.mix_dirs = ()
  # Folder whose eval_split the periodic retrieval eval reads; "" = data.dir.
  c.data.eval_dir = ""

  c.model = ml_collections.ConfigDict()
  c.model.preset = preset
  # "shared": IR goes through the RGB tower (replicated to 3 channels);
  # "separate": a second ViT with `ir_channels` input channels.
  c.model.ir_tower = "shared"
  c.model.ir_channels = 1
  c.model.remat = False
  # What remat keeps from the forward pass: a `jax.checkpoint_policies` name, e.g.
  # nothing_saveable (plain remat), dots_saveable, dots_with_no_batch_dims_saveable.
  c.model.remat_policy = "nothing_saveable"
  # nn.scan over the transformer layers: one compiled layer, params stacked under `layers`
  # (fusionrs_jax/models/scan.py converts checkpoints between the two layouts).
  c.model.scan_layers = False
  # Compute dtype: "float32" or "bfloat16" (params and optimizer state stay float32).
  c.model.dtype = "float32"
  # Overrides of preset fields (e.g. image_size) go here: --config.model.image_size=64.
  c.model.image_size = 0
  c.model.patch_size = 0
  c.model.text_len = 0

  c.loss = ml_collections.ConfigDict()
  # "chunked" (ring over devices; memory ~ local batch), "reference" (all-gather,
  # full logits) or "softmax" (CLIP InfoNCE, for comparison).
  c.loss.impl = "chunked"
  c.loss.weights = ml_collections.ConfigDict(
    {k: weights.get(k, 0.0) for k in ("rgb_text", "ir_text", "rgb_ir")}
  )

  c.optim = common.adamw_config(lr, warmup)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.ks = (1, 5, 10)
  # Zero-shot classification prompts when records carry a class label.
  c.eval.rgb_prompt = "an aerial image of a {}"
  c.eval.ir_prompt = "an infrared aerial image of a {}"

  if arg.size in ("B16", "So400m"):
    # FSDP: params and Adam moments of ViT-B and larger are sharded over every chip; the
    # batch is still split over all of them (data x fsdp).
    c.mesh.data, c.mesh.fsdp = 1, -1
    # Widths bound fsdp: B16's 768 = 2^8 * 3 divides by 256 chips, not 512; So400m's
    # 1152 = 2^7 * 9 (MLP 4304 = 2^4 * 269) by 128, not 256. Beyond that, larger slices add
    # tensor parallelism (model axis) so each chip still holds ~1/#chips of the params.
    c.mesh.fsdp_max = 128 if arg.size == "So400m" else 256
    # Pod recipe (checked by `python -m fusionrs_jax.cli.aot`, see README "Scale-out"):
    # bf16 compute with float32 params and Adam moments, blocks rematerialised (remat_policy).
    c.model.dtype = "bfloat16"
    c.model.remat = True
    # One scanned layer body: the compiled program (and its compile time) does not grow with depth.
    c.model.scan_layers = True
  if arg.recipe == "transfer":
    transfer_recipe(c, public_size=arg.size in ("B16", "So400m"))
  if arg.runlocal not in ("0", ""):
    common.runlocal(c)
    c.data.demo_num_train, c.data.demo_num_val, c.data.demo_num_test = 64, 16, 16
  if arg.size == "tiny":
    c.data.demo_image_size = 32
    c.data.vocab_size = 512
  return c


def transfer_recipe(c: ml_collections.ConfigDict, public_size: bool) -> None:
  """Fine-tuning settings for a run that starts from a SigLIP folder (--config.init_from);
  sources in the module docstring."""
  # The folder's tokenizer (a reference: it follows --config.init_from).
  c.data.tokenizer = c.get_ref("init_from") + "/tokenizer.model"
  if public_size:
    c.data.vocab_size = SIGLIP2_VOCAB
    c.model.text_len = SIGLIP2_TEXT_LEN
    # siglip_lit_coco.py: batch 512, 5000 steps.
    c.batch_size, c.total_steps = 512, 5000
    c.eval_every = c.checkpoint_every = 1000
  c.optim.lr = 1e-5
  # siglip_lit_coco.py: warmup max(3% of the steps, 100), then cosine decay to 0.
  c.optim.warmup_steps = min(max(round(0.03 * c.total_steps), 100), c.total_steps // 2)
  c.optim.end_lr_frac = 0.0
  # Adam's default b2 (siglip_lit_coco's scale_by_adam, the PaliGemma transfers' 0.999); no
  # weight decay toward zero for pretrained towers; global-norm clip 1.
  c.optim.b1, c.optim.b2 = 0.9, 0.999
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0
