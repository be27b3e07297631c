"""Six-direction RGB/IR/text retrieval (R@1/5/10 and mR) and zero-shot scene
classification, shared by the SigLIP trainer and the standalone CLI:

  python -m fusionrs_jax.cli.evaluate retrieval --checkpoint=workdirs/siglip_ir [--data=DIR]
      [--split=test] [--out=metrics.json]

Headline protocol (as RemoteCLIP / GeoRSCLIP tables on RSICD, RSITMD and UCM): an image's
positives are its own captions, a caption's positive is its own image; RGB<->IR positives are
the same sample id. Metrics `<direction>/R@k`, `mR` (six directions), `mR_irtext`.
Second table, `same_text/...` (the FusionRS release's protocol): any caption whose normalized
text equals one of the image's own captions also counts, which inflates text->image recall
when datasets repeat captions.
A sample without IR (or RGB) and its captions leave the directions of that modality, as query
and as gallery item, as they leave the training loss's pairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import logging

from fusionrs_jax.core import records
from fusionrs_jax.data import input_pipeline

DIRECTIONS = ("rgb2text", "text2rgb", "ir2text", "text2ir", "rgb2ir", "ir2rgb")
# Against the IR-aware captions, reported when the split has them.
IR_CAPTION_DIRECTIONS = ("ir2irtext", "irtext2ir")
# Metric-name prefix of the caption-text-equality protocol (the second table).
SAME_TEXT = "same_text/"


def normalize_caption(text: str) -> str:
  return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def recall_at_k(scores: np.ndarray, positives: np.ndarray, ks: Sequence[int]) -> dict:
  """scores, positives: [Q, G] -> {k: % of queries with a positive in their top k}.

  Ties are broken against the query (a positive tied with a negative does not count
  unless it ranks first in a stable sort by descending score).
  """
  order = np.argsort(-scores, axis=1, kind="stable")
  hits = np.take_along_axis(positives, order, axis=1)
  first = np.where(hits.any(1), hits.argmax(1), scores.shape[1])  # rank of first positive
  return {k: float(100.0 * np.mean(first < k)) for k in ks}


def own_caption_positives(image_caption_ids: list[list[int]], num_texts: int) -> np.ndarray:
  """[I, T] bool: caption t is a positive of image i iff it is one of image i's captions."""
  pos = np.zeros((len(image_caption_ids), num_texts), bool)
  for i, ids in enumerate(image_caption_ids):
    pos[i, ids] = True
  return pos


def same_text_positives(image_caption_ids: list[list[int]], texts: list[str]) -> np.ndarray:
  """[I, T] bool: caption t is a positive of image i (its own, or the same normalized text)."""
  norm = [normalize_caption(t) for t in texts]
  by_text: dict[str, set[int]] = {}
  for i, ids in enumerate(image_caption_ids):
    for t in ids:
      by_text.setdefault(norm[t], set()).add(i)
  pos = np.zeros((len(image_caption_ids), len(texts)), bool)
  for t, n in enumerate(norm):
    pos[sorted(by_text[n]), t] = True
  return pos


def _pair_samples(present: dict | None, sides: tuple[str, str], num_images: int) -> np.ndarray:
  """[I] bool: the samples that have every image modality of a pair (all when present=None)."""
  keep = np.ones(num_images, bool)
  for side in sides:
    if present is not None and side in present:
      keep &= np.asarray(present[side], bool)
  return keep


def _recalls(sims: np.ndarray, pos: np.ndarray, ks: Sequence[int]) -> dict:
  if not len(sims):  # no sample has this pair's modalities
    return dict.fromkeys(ks, float("nan"))
  return recall_at_k(sims, pos, ks)


def retrieval_table(
  emb: dict[str, np.ndarray],
  pos_text: np.ndarray,
  pos_irtext: np.ndarray | None,
  ks: Sequence[int],
  prefix: str = "",
  present: dict[str, np.ndarray] | None = None,
  owner: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
  """Embeddings {rgb [I,D], ir [I,D], text [T,D], ir_text [T',D]} and positives [I,T],
  [I,T'] -> flat metrics dict `{prefix}<direction>/R@k`, `{prefix}mR`, `{prefix}mR_irtext`.

  present: optional {"rgb", "ir"} -> [I] bool (has_rgb / has_ir); owner: {"text", "ir_text"}
  -> [T] int, the image each caption belongs to (needed with present). A pair is scored on
  the samples that have its image modalities only: a sample without IR (and its captions)
  leaves the IR directions, as query and as gallery item, like the training loss.
  """
  out = {}
  pairs = {
    "rgb2text": ("rgb", "text", pos_text),
    "ir2text": ("ir", "text", pos_text),
    "rgb2ir": ("rgb", "ir", np.eye(len(emb["rgb"]), dtype=bool)),
  }
  if pos_irtext is not None:
    pairs["ir2irtext"] = ("ir", "ir_text", pos_irtext)
  for name, (a, b, pos) in pairs.items():
    rows = _pair_samples(present, (a, b), len(emb[a]))
    if b in ("rgb", "ir"):
      cols = rows
    else:  # a caption stays while its image has the pair's modalities
      cols = np.ones(len(emb[b]), bool) if present is None else rows[owner[b]]
    sims, pos = emb[a][rows] @ emb[b][cols].T, pos[rows][:, cols]
    back = name.split("2")[1] + "2" + name.split("2")[0]
    for k, v in _recalls(sims, pos, ks).items():
      out[f"{prefix}{name}/R@{k}"] = v
    for k, v in _recalls(sims.T, pos.T, ks).items():
      out[f"{prefix}{back}/R@{k}"] = v
  out[f"{prefix}mR"] = float(np.mean([out[f"{prefix}{d}/R@{k}"] for d in DIRECTIONS for k in ks]))
  if pos_irtext is not None:
    out[f"{prefix}mR_irtext"] = float(
      np.mean([out[f"{prefix}{d}/R@{k}"] for d in IR_CAPTION_DIRECTIONS for k in ks])
    )
  return out


def caption_owner(image_caption_ids: list[list[int]], num_texts: int) -> np.ndarray:
  """[T] int: the image each caption belongs to."""
  owner = np.zeros(num_texts, np.int64)
  for i, ids in enumerate(image_caption_ids):
    owner[ids] = i
  return owner


def both_protocols(
  emb: dict[str, np.ndarray],
  caption_ids: list[list[int]],
  captions: list[str],
  ir_caption_ids: list[list[int]] | None,
  ir_captions: list[str] | None,
  ks: Sequence[int],
  present: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
  """The headline own-caption table and the `same_text/` table of the same embeddings.

  caption_ids[i]: indices into `captions` (rows of emb["text"]) of image i's captions; the
  IR-aware pair is scored when ir_caption_ids/ir_captions are given (emb["ir_text"]).
  present: optional {"rgb", "ir"} -> [I] bool, see `retrieval_table`.
  """
  owner = {"text": caption_owner(caption_ids, len(captions))}
  if ir_caption_ids is not None:
    owner["ir_text"] = caption_owner(ir_caption_ids, len(ir_captions))
  out = {}
  for prefix, positives in (
    ("", lambda ids, texts: own_caption_positives(ids, len(texts))),
    (SAME_TEXT, same_text_positives),
  ):
    pos_irtext = None if ir_caption_ids is None else positives(ir_caption_ids, ir_captions)
    pos_text = positives(caption_ids, captions)
    out.update(retrieval_table(emb, pos_text, pos_irtext, ks, prefix, present, owner))
  return out


_UCM_NAMES = {
  "baseballdiamond": "baseball diamond",
  "denseresidential": "dense residential area",
  "golfcourse": "golf course",
  "mediumresidential": "medium residential area",
  "mobilehomepark": "mobile home park",
  "parkinglot": "parking lot",
  "sparseresidential": "sparse residential area",
  "storagetanks": "storage tanks",
  "tenniscourt": "tennis court",
}


def class_phrase(label: str) -> str:
  """Dataset label -> words for a prompt ('denseresidential' -> 'dense residential area')."""
  return _UCM_NAMES.get(label, label.replace("_", " ").replace("-", " "))


def batched(fn: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over fixed-size batches of x [N, ...] (the last padded by repeating its final row),
  so a jitted fn compiles once; returns float32 [N, ...]."""
  out = []
  for start in range(0, len(x), batch_size):
    chunk = x[start : start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    out.append(np.asarray(jax.device_get(fn(chunk)))[: batch_size - pad])
  return np.concatenate(out).astype(np.float32)


class RetrievalEvaluator:
  """Embeds one split with given embedding functions and scores retrieval + zero-shot.

  `embed_images(params, images [N,S,S,C], modality) -> [N,D]` and
  `embed_texts(params, tokens [N,L]) -> [N,D]` are jitted by the caller's model code.
  """

  def __init__(
    self,
    data_dir: str,
    split: str,
    *,
    image_size: int,
    tokenizer_path: str,
    text_len: int,
    batch_size: int,
    embed_images: Callable,
    embed_texts: Callable,
    ks: Sequence[int] = (1, 5, 10),
    rgb_prompt: str = "an aerial image of a {}",
    ir_prompt: str = "an infrared aerial image of a {}",
  ):
    self.ks, self.batch_size = tuple(ks), batch_size
    self._embed_images, self._embed_texts = embed_images, embed_texts
    self.tokenizer = input_pipeline.Tokenizer(tokenizer_path)
    self.text_len = text_len
    self._load(data_dir, split, image_size)
    self._prompts = (rgb_prompt, ir_prompt)

  def _load(self, data_dir: str, split: str, image_size: int) -> None:
    pre = input_pipeline.Preprocess(
      image_size=image_size,
      tokenizer=self.tokenizer,
      text_len=self.text_len,
      caption_fields=(),
      # A missing image is a zero placeholder with has_<m>=False; `present` keeps it out.
      missing_modality="zeros",
      where=f"{data_dir}:{split}",
    )
    paths = records.list_shards(data_dir, split)
    rgb, ir, self.captions, self.ir_captions, self.labels = [], [], [], [], []
    self.present = {"rgb": [], "ir": []}
    self.caption_ids, self.ir_caption_ids = [], []
    for i, data in enumerate(d for p in paths for d in records.read_array_record(p)):
      rec = records.decode(data, where=f"{data_dir}:{split} record #{i}")
      ex = pre((i, data), None)
      rgb.append(ex["rgb"])
      ir.append(ex["ir"])
      for m in self.present:
        self.present[m].append(bool(ex[f"has_{m}"]))
      self.caption_ids.append(
        list(range(len(self.captions), len(self.captions) + len(rec.captions)))
      )
      self.captions.extend(rec.captions)
      self.ir_caption_ids.append(
        list(range(len(self.ir_captions), len(self.ir_captions) + len(rec.ir_captions)))
      )
      self.ir_captions.extend(rec.ir_captions)
      self.labels.append(rec.label)
    self.rgb, self.ir = np.stack(rgb), np.stack(ir)
    self.present = {m: np.asarray(v, bool) for m, v in self.present.items()}
    # The IR-aware directions are scored only when every image with IR has IR-aware captions.
    with_ir = [ids for ids, has in zip(self.ir_caption_ids, self.present["ir"]) if has]
    self.has_ir_captions = bool(all(with_ir) and self.ir_captions)
    logging.info(
      "retrieval eval: %d images (%d without RGB, %d without IR), %d captions, %d IR "
      "captions from %s:%s",
      len(self.rgb),
      int(np.sum(~self.present["rgb"])),
      int(np.sum(~self.present["ir"])),
      len(self.captions),
      len(self.ir_captions),
      data_dir,
      split,
    )

  def _batched(self, fn: Callable, x: np.ndarray) -> np.ndarray:
    return batched(fn, x, self.batch_size)

  def _texts(self, params, texts: list[str]) -> np.ndarray:
    tokens = self.tokenizer.encode(texts, self.text_len)
    return self._batched(lambda t: self._embed_texts(params, t), tokens)

  def run(self, params) -> dict[str, float]:
    """Six retrieval directions (+ IR-aware caption directions) under both protocols, +
    zero-shot accuracy."""
    emb = {
      m: self._batched(lambda x, m=m: self._embed_images(params, x, m), getattr(self, m))
      for m in ("rgb", "ir")
    }
    emb["text"] = self._texts(params, self.captions)
    ir_ids, ir_texts = None, None
    if self.has_ir_captions:
      emb["ir_text"] = self._texts(params, self.ir_captions)
      ir_ids, ir_texts = self.ir_caption_ids, self.ir_captions
    out = both_protocols(
      emb, self.caption_ids, self.captions, ir_ids, ir_texts, self.ks, self.present
    )
    classes = sorted(set(self.labels) - {""})
    if len(classes) > 1 and all(self.labels):
      target = np.array([classes.index(c) for c in self.labels])
      for modality, prompt in zip(("rgb", "ir"), self._prompts):
        has = self.present[modality]
        if not has.any():
          continue
        ztxt = self._texts(params, [prompt.format(class_phrase(c)) for c in classes])
        pred = np.argmax(emb[modality][has] @ ztxt.T, axis=1)
        out[f"zeroshot_{modality}/acc"] = float(100.0 * np.mean(pred == target[has]))
    return out


def _direction_rows(metrics: dict[str, float], ks: Sequence[int], prefix: str) -> list[str]:
  dirs = [d for d in DIRECTIONS + IR_CAPTION_DIRECTIONS if f"{prefix}{d}/R@{ks[0]}" in metrics]
  lines = [f"{'direction':<12}" + "".join(f"{'R@' + str(k):>8}" for k in ks)]
  for d in dirs:
    lines.append(f"{d:<12}" + "".join(f"{metrics[f'{prefix}{d}/R@{k}']:8.1f}" for k in ks))
  lines.append(f"{'mR (6 dirs)':<12}{metrics[f'{prefix}mR']:8.1f}")
  return lines


def format_table(metrics: dict[str, float], ks: Sequence[int] = (1, 5, 10)) -> str:
  """Plain-text tables: one row per direction, R@k columns, then mR; the headline
  (own-caption positives) first, then the same-text protocol when present, then zero-shot."""
  lines = ["retrieval, own captions as positives (headline)"]
  lines += _direction_rows(metrics, ks, "")
  if f"{SAME_TEXT}mR" in metrics:
    lines += ["", "retrieval, any caption with the same normalized text also counts (same_text/)"]
    lines += _direction_rows(metrics, ks, SAME_TEXT)
  for key in sorted(k for k in metrics if k.startswith("zeroshot")):
    lines.append(f"{key:<18}{metrics[key]:6.1f}")
  return "\n".join(lines)


if __name__ == "__main__":
  import runpy
  import sys

  print("deprecated: use `python -m fusionrs_jax.cli.evaluate retrieval`", file=sys.stderr)
  sys.argv.insert(1, "retrieval")
  runpy.run_module("fusionrs_jax.cli.evaluate", run_name="__main__", alter_sys=True)
