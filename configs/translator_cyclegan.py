r"""CycleGAN RGB->IR translator (two ResNet generators, two PatchGANs, LSGAN + cycle + identity).

Default (demo world, paired, size=small; builds `data/demo_world.raw` on first use):
  python -m fusionrs_jax.main --config=configs/translator_cyclegan.py --workdir=workdirs/translator
It ends with PSNR/SSIM of the generator and of the grayscale / inverted-grayscale baselines
on the held-out test pairs (see README for measured numbers; the generator should beat both).

Presets via the config arg, e.g. `configs/translator_cyclegan.py:size=paper,variant=ucm_hituav`:
  size     tiny (tests, 32 px) | small (this 2-core CPU, 64 px) | paper (9 blocks/64 filters, 256 px)
  variant  demo        RGB and IR both from the demo world; paired L1 on (aligned pairs)
           ucm_hituav  unpaired: UCM RGB vs real HIT-UAV thermal, ingested first with
             python -m data_prep.ingest --source=karpathy \
               --json=../shared/data/ucm_captions/dataset_ucm.json \
               --images=../shared/data/ucm_captions/images --out=data/ucm --name=ucm
             python -m data_prep.ingest --source=coco_thermal \
               --json=../shared/data/hit_uav/annotations/train.json,../shared/data/hit_uav/annotations/val.json \
               --images=../shared/data/hit_uav/images --out=data/hit_uav --name=hit_uav
  runlocal 1 = a seconds-long smoke run of any preset
"""

import ml_collections

from configs import common

# size -> (crop px, resize-before-crop px, global batch, steps, sample/eval every)
SIZES = {
  "tiny": (32, 36, 8, 20, 10),
  "small": (64, 72, 8, 3000, 500),
  "paper": (256, 286, 1, 200 * 1000, 5000),
}


def _data(variant: str) -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  if variant == "demo":
    # The demo world's raw shards (RGB + rendered IR, aligned); siglip builds the same
    # folder. Missing + demo_world_if_missing -> generated there (synthetic data).
    d.rgb_dir = d.ir_dir = "data/demo_world.raw"
    d.paired = True
  else:
    d.rgb_dir, d.ir_dir = "data/ucm", "data/hit_uav"
    d.paired = False
  d.rgb_split = d.ir_split = "train"
  d.demo_world_if_missing = variant == "demo"
  d.demo_num_train, d.demo_num_val, d.demo_num_test = 1000, 100, 100
  d.demo_image_size = 64
  d.demo_seed = 0
  # Training crops: resize the shorter side to load_size (0 = keep native), then take a
  # random image_size x image_size crop (CycleGAN's 286 -> 256 jitter), random h-flip.
  d.image_size = 0
  d.load_size = 0
  d.hflip = True
  d.read_threads = 4
  return d


def _eval(variant: str) -> ml_collections.ConfigDict:
  e = ml_collections.ConfigDict()
  # RGB inputs of the evaluation; their IR (when present) gives PSNR/SSIM.
  e.rgb_dir = "data/demo_world.raw" if variant == "demo" else "data/ucm"
  e.rgb_split = "test"
  # Real thermal reference for distribution metrics ("" = skip).
  e.ref_ir_dir = "data/demo_world.raw" if variant == "demo" else "data/hit_uav"
  e.ref_ir_split = "test" if variant == "demo" else "val"
  # Evaluate at native resolution when 0 (all images one size); else resize to this.
  e.image_size = 0 if variant == "demo" else 256
  e.max_images = 200
  e.batch_size = 8
  # KID between generated and real IR on the image features of a SigLIP run's IR tower
  # (a SigLIP workdir; "" = skip). No Inception network can be downloaded here.
  e.kid_siglip = ""
  e.kid_subsets = 10
  e.kid_subset_size = 100
  return e


def get_config(arg=None):
  arg = common.parse_arg(arg, size="small", variant="demo", runlocal="0")
  crop, load, batch, steps, every = common.choose(arg.size, SIZES, "size")
  common.choose(arg.variant, {"demo": 0, "ucm_hituav": 0}, "variant")

  c = common.run_config("translator")
  c.size = arg.size
  c.variant = arg.variant
  c.batch_size = batch
  c.total_steps = steps
  c.log_every = 50
  c.eval_every = every
  c.sample_every = every
  c.checkpoint_every = every
  # Rows of the RGB | fake IR | reconstructed RGB (| real IR) sample grid.
  c.num_samples = 4

  c.data = _data(arg.variant)
  c.data.image_size, c.data.load_size = crop, load
  if arg.variant == "demo":
    # The demo world is rendered at 64 px; paper-size crops need bigger renders.
    c.data.demo_image_size = max(64, load)

  c.model = ml_collections.ConfigDict()
  # cyclegan.SIZES preset: tiny | small | paper.
  c.model.size = arg.size
  c.model.dtype = "float32"

  c.loss = ml_collections.ConfigDict()
  c.loss.gan = 1.0
  c.loss.cycle = 10.0
  # Identity loss, as a fraction of the cycle weight (CycleGAN's 0.5 gives 0.5 * 10 = 5).
  # Off: RGB (3 channels) and IR (1 channel) differ, and the published code only allows
  # identity loss between equal channel counts. > 0 compares G(y) with y through tiled /
  # channel-averaged inputs (losses.gan.as_channels), which is this project's addition, not
  # the paper's.
  c.loss.identity = 0.0
  # pix2pix L1 to the aligned target, used only when data.paired.
  c.loss.paired = 10.0
  # Generated images kept for the discriminators (0 = none).
  c.pool_size = 50

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  # Constant LR for this fraction of total_steps, then linear decay to 0.
  c.optim.constant_frac = 0.5

  c.eval = _eval(arg.variant)

  if arg.runlocal not in ("0", ""):
    common.runlocal(c)
    c.batch_size = 8
    c.sample_every = 2
    c.data.demo_num_train, c.data.demo_num_val, c.data.demo_num_test = 32, 8, 8
    c.eval.max_images = 8
    if arg.variant == "demo":
      # A smaller build of its own, so the full demo world folder is not rebuilt.
      small = "data/demo_world_runlocal.raw"
      c.data.rgb_dir = c.data.ir_dir = c.eval.rgb_dir = c.eval.ref_ir_dir = small
  return c
