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
  runlocal 1 = a seconds-long smoke run of any preset
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
}

# size -> (model preset name, global batch, steps, learning rate, warmup)
SIZES = {
  "tiny": ("tiny", 16, 20, 1e-3, 2),
  "mini": ("mini", 64, 300, 1e-3, 30),
  "small": ("small", 64, 600, 5e-4, 60),
  "B16": ("B16", 32768, 40000, 1e-3, 2000),
  "So400m": ("So400m", 32768, 40000, 1e-3, 2000),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, size="mini", variant="trimodal", runlocal="0")
  preset, batch, steps, lr, warmup = common.choose(arg.size, SIZES, "size")
  weights, caption_fields, modalities = common.choose(arg.variant, VARIANTS, "variant")

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
  if arg.runlocal not in ("0", ""):
    common.runlocal(c)
    c.data.demo_num_train, c.data.demo_num_val, c.data.demo_num_test = 64, 16, 16
  if arg.size == "tiny":
    c.data.demo_image_size = 32
    c.data.vocab_size = 512
  return c
