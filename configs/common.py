"""Config pieces shared by every experiment file: the `arg` parser and the run skeleton
(seed, mesh, checkpointing, logging) that every trainer reads."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults: str) -> ml_collections.ConfigDict:
  """'size=tiny,variant=rgb_only' -> ConfigDict(size='tiny', variant='rgb_only').

  Only keys present in `defaults` are accepted, so a misspelt preset key is an error.
  """
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" not in part:
      raise ValueError(f"config arg {part!r} is not key=value (e.g. size=tiny)")
    key, value = (s.strip() for s in part.split("=", 1))
    if key not in defaults:
      raise ValueError(f"unknown config arg {key!r}; known: {', '.join(sorted(defaults))}")
    out[key] = value
  return ml_collections.ConfigDict(out)


def choose(value: str, table: dict, what: str):
  """table[value] with an error listing the choices."""
  if value not in table:
    raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(table)}")
  return table[value]


def run_config(trainer: str) -> ml_collections.ConfigDict:
  """Fields every trainer reads; experiment files fill in data/model/optim."""
  c = ml_collections.ConfigDict()
  c.trainer = trainer
  c.seed = 0
  # Device mesh sizes; -1 = all remaining devices. data x fsdp shards the batch,
  # fsdp also shards params/optimizer state, model shards mlp/heads/vocab.
  # Device mesh; one axis may be -1 (the rest). fsdp_max > 0 caps fsdp, moving the rest of
  # it to data (for widths that do not divide by the slice size).
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1, "fsdp_max": 0})
  c.total_steps = 1000
  # Global batch size (all processes together); must divide by data*fsdp.
  c.batch_size = 64
  c.log_every = 50
  c.eval_every = 500
  # Checkpoint every N steps (and always at the end); keep the newest `keep`.
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.async_checkpoints = True
  # Resume from the newest checkpoint in the workdir when one exists.
  c.resume = True
  # Where to start from when not resuming: "" (random init), an Orbax checkpoint folder of
  # this project, or a transformers save_pretrained folder (SigLIP trainer: SiglipModel;
  # captioner: PaliGemmaForConditionalGeneration) whose architecture matches the config.
  c.init_from = ""
  # Write a sample image grid / plot every N steps (0 = only at evals).
  c.sample_every = 0
  return c


def dataset_config(vocab_size: int) -> ml_collections.ConfigDict:
  """The `config.data` fields shared by trainers that read one prepared dataset folder."""
  d = ml_collections.ConfigDict()
  # Prepared dataset folder (data_prep output). Missing + demo_world_if_missing -> the
  # demo world (synthetic; never reported as real data), its IR-aware captions and a
  # tokenizer are generated there first.
  d.dir = "data/demo_world"
  d.demo_world_if_missing = True
  d.demo_num_train = 1000
  d.demo_num_val = 100
  d.demo_num_test = 100
  d.demo_image_size = 64
  d.demo_seed = 0
  # SentencePiece model (with the <sep> piece); "" = <data.dir>/tokenizer.model, trained
  # there if missing for the demo world.
  d.tokenizer = ""
  d.vocab_size = vocab_size
  d.train_split = "train"
  d.eval_split = "test"
  return d


def adamw_config(lr: float, warmup_steps: int) -> ml_collections.ConfigDict:
  """The `config.optim` fields read by trainers.common.make_optimizer (Adam with decoupled
  weight decay on weight matrices, linear warmup then cosine decay to lr * end_lr_frac,
  global-norm clipping)."""
  o = ml_collections.ConfigDict()
  o.lr = lr
  o.warmup_steps = warmup_steps
  o.end_lr_frac = 0.0
  # Decoupled weight decay (big_vision's `wd`): each step a weight matrix shrinks by
  # weight_decay * (lr(t) / lr), i.e. this fraction at the peak learning rate, whatever the
  # learning rate; biases, norms, embeddings, t and b never decay.
  o.weight_decay = 1e-4
  # Adam's first-moment dtype: float32, or bfloat16 to halve it on pods.
  o.mu_dtype = "float32"
  o.b1 = 0.9
  o.b2 = 0.95
  # 0 = no clipping.
  o.grad_clip = 1.0
  # >1 accumulates gradients over micro-steps (for the sigmoid loss: fewer negatives
  # per update than one big batch would give).
  o.accum_steps = 1
  return o


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a seconds-long smoke run (size=tiny presets set the model)."""
  c.total_steps = 4
  c.batch_size = 16
  c.log_every = 1
  c.eval_every = 4
  c.checkpoint_every = 2
  return c
