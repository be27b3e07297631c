"""Turns the pipeline's stage files into results/*.json, summary.json and docs/RESULTS.md.

Every number on the page is read from a stage file; nothing is typed in by hand. The four
FusionRS claims are checked with `pipeline.compare`: a difference counts only when it is
larger than two standard errors of the difference over seeds.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from fusionrs_jax.core import fs, metrics, records
from fusionrs_jax.evaluators import retrieval as retrieval_eval
from fusionrs_jax.pipeline import plots, thermal
from fusionrs_jax.pipeline import stats as pipeline

CAPTION_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")
PRESENCE_CLASSES = ("Person", "Car", "Bicycle")


def _result(finished: dict, name: str) -> dict[str, Any]:
  return finished.get(name, {}).get("result", {})


def build_summary(pipe, finished: dict) -> dict[str, Any]:

  c = pipe.c
  seeds = pipe.seeds()
  out: dict[str, Any] = {
    "profile": c.profile,
    "environment": pipeline.environment(),
    "stage_seconds": {n: round(e["seconds"], 1) for n, e in finished.items()},
  }
  out["total_seconds"] = round(sum(out["stage_seconds"].values()), 1)
  # A report built from an interrupted run says what it lacks.
  out["unfinished"] = [st.name for st in pipe.stages() if st.name not in finished]
  out["data"] = {
    k: _result(finished, k)
    for k in ("ingest_ucm", "ingest_hit_uav", "translate", "ir_captions", "tokenizer")
  }
  # The translator returns its final eval as "eval/<candidate>/<metric>".
  tr = {k.removeprefix("eval/"): v for k, v in _result(finished, "translator").items()}
  out["translation"] = {
    who: {
      m: tr[f"{who}/{m}"]
      for m in ("intensity_w1", "gradient_w1", "contrast_w1")
      if f"{who}/{m}" in tr
    }
    for who in ("generator", "gray", "inverted")
  }

  retrieval, same_text, stale = _retrieval_summaries(pipe, finished)
  out["retrieval_same_text"], out["retrieval_stale_runs"] = same_text, stale
  presence = {}
  for v in c.siglip.variants:
    pres = [_result(finished, f"presence_{v}_s{s}") for s in seeds]
    pres = [p for p in pres if "mean/auc" in p]
    if pres:
      presence[v] = {}
      for key in [f"{cl}/auc" for cl in PRESENCE_CLASSES] + ["mean/auc", "mean/balanced_acc"]:
        vals = [p[key] for p in pres]
        presence[v][key] = {"per_seed": vals, **dict(zip(("mean", "std"), pipeline.mean_std(vals)))}
      for cl in PRESENCE_CLASSES:
        presence[v][f"{cl}/prevalence"] = pres[0][f"{cl}/prevalence"]
        presence[v][f"{cl}/chance_acc"] = pres[0][f"{cl}/chance_acc"]
      # Data facts, the same for every seed (absent in stage files of older runs).
      for key in [
        f"{cl}/{m}" for cl in PRESENCE_CLASSES for m in ("median_box_px", "train_caption_mentions")
      ] + ["image_size", "patch_size", "train_captions"]:
        if key in pres[0]:
          presence[v][key] = pres[0][key]
  out["retrieval"], out["presence"] = retrieval, presence

  captioning = {}
  seeds_of = {}
  for name, inputs, enc, seed in pipe.captioner_runs():
    base = name.removesuffix(f"_s{seed}")
    if _result(finished, name):
      seeds_of.setdefault(base, (inputs, enc, []))[2].append(_result(finished, name))
  for base, (inputs, enc, runs) in seeds_of.items():
    captioning[base] = _captioner_row(inputs, enc, runs)
  out["captioning"] = captioning
  out["thermal"] = thermal.summary(pipe, finished)
  out["claims"] = claims(retrieval, presence, captioning) + thermal.claims(out["thermal"])
  return out


def _captioner_row(inputs: str, encoder: str, runs: list[dict]) -> dict[str, Any]:
  """One captioner's metrics over its seeds, each as {per_seed, mean, std}."""
  r0 = runs[0]
  # METEOR is Meteor 1.5 when pycocoevalcap + Java ran it, else the exact-match stand-in.
  row: dict[str, Any] = {
    "inputs": inputs,
    "encoder": encoder,
    "seeds": len(runs),
    "meteor": "Meteor 1.5" if "caption/METEOR" in r0 else "exact-match approximation",
  }
  keys = {f"{t}/{m}": None for t in ("caption", "ir_caption") for m in CAPTION_METRICS}
  keys.update({"answers/exact_match": None, "answers/token_f1": None})
  for key in keys:
    vals = [r.get(key, r.get(f"{key}-exact")) for r in runs]
    if all(v is not None for v in vals):
      row[key] = {"per_seed": vals, **dict(zip(("mean", "std"), pipeline.mean_std(vals)))}
  return row


def _seed_table(per_seed: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
  """[{group: value} per seed] -> {group: {per_seed, mean, std}}."""
  return {
    k: {
      "per_seed": [p[k] for p in per_seed],
      **dict(zip(("mean", "std"), pipeline.mean_std([p[k] for p in per_seed]))),
    }
    for k in per_seed[0]
  }


def _retrieval_summaries(pipe, finished: dict) -> tuple[dict, dict, list[str]]:
  """Per variant: the headline table (own captions as positives), the same-text table, and
  the SigLIP stages whose results predate the own-caption protocol (left out of both)."""
  own, same, stale = {}, {}, []
  for v in pipe.c.siglip.variants:
    named = [
      (pipe.siglip_name(v, s), _result(finished, pipe.siglip_name(v, s))) for s in pipe.seeds()
    ]
    stale += [n for n, r in named if "mR" in r and f"{retrieval_eval.SAME_TEXT}mR" not in r]
    runs = [r for _, r in named if f"{retrieval_eval.SAME_TEXT}mR" in r]
    if runs:
      own[v] = _seed_table([pipeline.retrieval_summary(r) for r in runs])
      same_text = [
        {
          k.removeprefix(retrieval_eval.SAME_TEXT): x
          for k, x in r.items()
          if k.startswith(retrieval_eval.SAME_TEXT)
        }
        for r in runs
      ]
      same[v] = _seed_table([pipeline.retrieval_summary(r) for r in same_text])
  return own, same, stale


def _vals(table: dict, variant: str, key: str) -> list[float] | None:
  return table.get(variant, {}).get(key, {}).get("per_seed")


def claims(retrieval: dict, presence: dict, captioning: dict) -> list[dict[str, Any]]:
  """The four FusionRS claims as measured comparisons (a over b)."""

  out = []

  def add(claim: int, what: str, a_name: str, a: Any, b_name: str, b: Any) -> None:
    if a is None or b is None:
      return
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    out.append(
      {
        "claim": claim,
        "measure": what,
        "a": a_name,
        "b": b_name,
        "a_mean": pipeline.mean_std(a)[0],
        "a_std": pipeline.mean_std(a)[1],
        "b_mean": pipeline.mean_std(b)[0],
        "b_std": pipeline.mean_std(b)[1],
        **pipeline.compare(a, b),
      }
    )

  for key in ("IR->text", "text->IR"):
    add(
      1,
      f"{key} mean R@1/5/10 (scene captions, own captions as positives)",
      "trimodal",
      _vals(retrieval, "trimodal", key),
      "rgb_only",
      _vals(retrieval, "rgb_only", key),
    )
  add(
    2,
    "IR<->IR-aware captions mean R@1/5/10 (own captions as positives)",
    "trimodal",
    _vals(retrieval, "trimodal", "IR<->IR-aware"),
    "scene_captions",
    _vals(retrieval, "scene_captions", "IR<->IR-aware"),
  )
  a, b = captioning.get("captioner_rgb_ir"), captioning.get("captioner_rgb_ir_scene_encoder")
  if a and b:
    add(
      2,
      "IR-aware captioning CIDEr-D (rgb_ir captioner; encoder from each SigLIP)",
      "trimodal encoder",
      a["ir_caption/CIDEr-D"]["per_seed"],
      "scene_captions encoder",
      b["ir_caption/CIDEr-D"]["per_seed"],
    )
  a, b = captioning.get("captioner_rgb_ir"), captioning.get("captioner_rgb")
  if a and b:
    for m in ("CIDEr-D", "BLEU-4"):
      add(
        3,
        f"IR-aware captioning {m}",
        "rgb_ir captioner",
        a[f"ir_caption/{m}"]["per_seed"],
        "rgb captioner",
        b[f"ir_caption/{m}"]["per_seed"],
      )
  trimodal_auc = _vals(presence, "trimodal", "mean/auc")
  if trimodal_auc:
    add(
      4,
      "HIT-UAV val presence AUC, mean over person/car/bicycle",
      "trimodal",
      trimodal_auc,
      "chance",
      [0.5] * len(trimodal_auc),
    )
    add(
      4,
      "HIT-UAV val presence AUC, mean over person/car/bicycle",
      "trimodal",
      trimodal_auc,
      "rgb_only",
      _vals(presence, "rgb_only", "mean/auc"),
    )
  return out


# ----------------------------------------------------------------------------- figures


def _save_png(image: np.ndarray, path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path + ".tmp.png")
  os.replace(path + ".tmp.png", path)
  return path


def figures(pipe, summary: dict, fig_dir: str) -> dict[str, str]:
  out = {}
  # Run folders (local or gs://) are read through core/fs; the report itself stays local.
  grids = fs.glob(fs.join(pipe.workdir("translator"), "images", "rgb_fakeir_recrgb_*.png"))
  if grids:
    os.makedirs(fig_dir, exist_ok=True)
    out["translation"] = os.path.join(fig_dir, "translation_grid.png")
    with Image.open(io.BytesIO(fs.read_bytes(grids[-1]))) as im:
      im.save(out["translation"])
  if summary["retrieval"]:
    out["retrieval"] = plots.grouped_bars(
      summary["retrieval"],
      list(next(iter(summary["retrieval"].values()))),
      os.path.join(fig_dir, "retrieval.png"),
      "UCM test retrieval, own captions as positives (bars: mean over seeds, "
      "error bars: std, dots: seeds)",
      "mean R@1/5/10",
    )
  panels = {
    "SigLIP variants (64 px)": _metric_rows(
      pipe, [pipe.siglip_name(v, sd) for v in pipe.c.siglip.variants for sd in pipe.seeds()]
    ),
    "captioners": _metric_rows(pipe, [name for name, *_ in pipe.captioner_runs()]),
    "real-thermal arms": _metric_rows(
      pipe,
      [
        pipe.thermal_name(arm, sd)
        for arm in pipe.c.thermal.arms
        for sd in range(int(pipe.c.thermal.seeds))
      ],
    ),
  }
  if any(panels.values()):
    out["loss"] = plots.loss_curves(panels, os.path.join(fig_dir, "loss_curves.png"))
  for fig, groups, title in (
    (
      "presence_roc",
      {v: [pipe.siglip_name(v, sd) for sd in pipe.seeds()] for v in pipe.c.siglip.variants},
      "HIT-UAV val presence ROC, SigLIP trained on UCM (one curve per seed)",
    ),
    (
      "thermal_roc",
      {
        arm: [pipe.thermal_name(arm, sd) for sd in range(int(pipe.c.thermal.seeds))]
        for arm in pipe.c.thermal.arms
      },
      "HIT-UAV val presence ROC, translated vs real vs mixed training (one curve per seed)",
    ),
  ):
    saved = {g: _presence_scores(pipe, runs) for g, runs in groups.items()}
    saved = {g: v for g, v in saved.items() if v}
    if saved:
      out[fig] = plots.presence_roc(saved, os.path.join(fig_dir, f"{fig}.png"), title)
  samples = _caption_samples(pipe)
  if samples:
    ids = list(dict.fromkeys(r["record_id"] for r in samples))[:4]
    pairs = _test_images(pipe, ids)
    if pairs:
      grid = metrics.image_grid([np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])])
      out["caption_pairs"] = _save_png(grid, os.path.join(fig_dir, "caption_pairs.png"))
  return out


def _metric_rows(pipe, runs: list[str]) -> dict[str, list[dict]]:
  """{run: its metrics.jsonl rows} for the runs whose folder has one."""
  out = {}
  for run in runs:
    path = fs.join(pipe.workdir(run), "metrics.jsonl")
    if fs.exists(path):
      out[run] = metrics.read_jsonl(path)
  return out


def _presence_scores(pipe, runs: list[str]) -> list[dict[str, np.ndarray]]:
  """The saved presence scores (see Pipeline.presence) of each run that has them."""
  out = []
  for run in runs:
    path = fs.join(pipe.workdir(run), f"presence_{pipe.c.presence_split}_scores.npz")
    if fs.exists(path):
      with np.load(io.BytesIO(fs.read_bytes(path))) as z:
        out.append({k: z[k] for k in z.files})
  return out


def _caption_samples(pipe, name: str = "captioner_rgb_ir_s0") -> list[dict]:
  files = fs.glob(fs.join(pipe.workdir(name), "samples", "step_*.jsonl"))
  if not files:
    return []
  return metrics.read_jsonl(files[-1])


def _test_images(pipe, ids: list[str], size: int = 128) -> list[tuple[np.ndarray, np.ndarray]]:
  """(RGB, IR) uint8 [size, size, 3] of the given test records, in `ids` order."""

  want, found = set(ids), {}
  data_dir = pipe.dataset("ucm_ir")
  for rec in records.read_records(records.list_shards(data_dir, "test")):
    if rec.id in want and rec.rgb and rec.ir:
      rgb = Image.open(io.BytesIO(rec.rgb)).convert("RGB").resize((size, size))
      ir = Image.open(io.BytesIO(rec.ir)).convert("RGB").resize((size, size))
      found[rec.id] = (np.asarray(rgb), np.asarray(ir))
  return [found[i] for i in ids if i in found]


# ----------------------------------------------------------------------------- markdown


def _data_sentence(data: dict) -> str:
  ucm = (data.get("ingest_ucm") or {}).get("splits", {})
  hit = (data.get("ingest_hit_uav") or {}).get("splits", {})
  split = "/".join(str(ucm.get(k, 0)) for k in ("train", "val", "test"))
  return (
    f"Data: UCM-captions (RGB + human captions; train/val/test {split}), its RGB "
    "translated to IR by the CycleGAN translator trained against REAL HIT-UAV thermal "
    "images, IR-aware captions and instructions measured on the translated IR. Retrieval "
    f"and captioning are scored on the {ucm.get('test', 0)} UCM test images; presence on "
    f"the {hit.get('val', 0)} REAL thermal HIT-UAV val images."
  )


def _cell(text: str) -> str:
  """Text safe inside a markdown table cell."""
  return " ".join(str(text).split()).replace("|", "\\|")


def _pm(entry: dict, scale: float = 1.0, digits: int = 1) -> str:
  return f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f}"


def _num(x: Any, digits: int = 3) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def _duration(secs: float) -> str:
  secs = round(secs)
  return f"{secs // 60}m{secs % 60:02d}s"


def _header(pipe, summary: dict) -> list[str]:
  c, env = pipe.c, summary["environment"]
  return [
    "# FusionRS reproduction: results",
    "",
    (
      "Generated by `python -m fusionrs_jax.pipeline "
      f"--config=configs/pipeline_fusionrs.py:profile={c.profile}` (profile `{c.profile}`; "
      f"{len(pipe.seeds())} seed(s) per SigLIP variant). Do not edit by hand: re-run the "
      "pipeline."
    ),
    (
      f"Commit {env['commit']}, JAX {env['jax']} on {env['backend']} ({env['devices']} "
      f"device(s), {env['cpus']} CPU cores)."
    ),
    *(
      [
        "",
        f"**Incomplete run:** {len(summary['unfinished'])} stage(s) had not finished when this "
        f"page was written: {', '.join(summary['unfinished'])}. Their tables use the seeds "
        "that finished.",
      ]
      if summary.get("unfinished")
      else []
    ),
    "",
    _data_sentence(summary["data"]),
    "",
  ]


def _claims_section(summary: dict) -> list[str]:
  lines = [
    "## The four claims",
    "",
    (
      "A comparison 'holds' when the difference of means exceeds two standard errors of the "
      "difference over seeds, 'within noise' when it does not, 'reversed' when it is "
      "significant the other way. With one seed per side there is no noise estimate and "
      "the verdict says so."
    ),
    "",
    "| claim | measure | a | b | a | b | a − b | verdict |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for cl in summary["claims"]:
    noise = "" if cl["noise"] is None else f" (noise {cl['noise']:.3g})"
    lines.append(
      f"| {cl['claim']} | {cl['measure']} | {cl['a']} | {cl['b']} | "
      f"{cl['a_mean']:.3g} ± {cl['a_std']:.2g} | {cl['b_mean']:.3g} ± {cl['b_std']:.2g} | "
      f"{cl['diff']:.3g}{noise} | {cl['verdict']} |"
    )
  return lines + [
    "",
    (
      "Claims: 1 dual-modal training beats RGB-only on IR↔text retrieval; "
      "2 IR-aware captions beat scene captions for infrared-language "
      "alignment; 3 the dual-image captioner beats the RGB-only one on "
      "IR-aware captioning; 4 models trained on translated IR transfer to "
      "real thermal images (zero-shot presence)."
    ),
    "",
  ]


def _retrieval_table(title: str, tables: dict) -> list[str]:
  keys = list(next(iter(tables.values())))
  lines = [title, "", "| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  for v, table in tables.items():
    lines.append(f"| {v} | " + " | ".join(_pm(table[k]) for k in keys) + " |")
  return lines + [""]


def _retrieval_section(summary: dict, figs: dict[str, str], rel) -> list[str]:
  stale = summary.get("retrieval_stale_runs") or []
  lines = []
  if stale:
    lines += [
      f"Left out of the retrieval tables: {', '.join(stale)} were evaluated before the "
      "own-caption protocol (no same_text/ metrics); re-run them with --redo=siglip_.",
      "",
    ]
  if not summary["retrieval"]:
    return ["## Retrieval", ""] + lines if lines else []
  lines = (
    _retrieval_table(
      "## Retrieval (UCM test, own captions as positives; mean R@1/5/10 per direction, "
      "mean ± std over seeds)",
      summary["retrieval"],
    )
    + lines
  )
  lines += [
    (
      "Positives are each image's own captions (and each caption's own image), as in the "
      "RemoteCLIP and GeoRSCLIP retrieval tables; RGB<->IR positives are the same sample. mR "
      "is the mean of R@1/5/10 over the six RGB/IR/text directions against scene captions; "
      "IR<->IR-aware uses the IR-aware captions as the text side."
    ),
    "",
  ]
  if "retrieval" in figs:
    lines += [f"![retrieval]({rel(figs['retrieval'])})", ""]
  same = summary.get("retrieval_same_text") or {}
  if same:
    lines += _retrieval_table(
      "### Second protocol: captions with the same text also count (metrics same_text/...)",
      same,
    )
    moved = ", ".join(
      f"{v} {same[v]['mR']['mean']:.1f} -> {summary['retrieval'][v]['mR']['mean']:.1f}"
      for v in same
      if v in summary["retrieval"]
    )
    lines += [
      (
        "Any caption whose normalized text equals one of the image's own captions counts as a "
        "positive too (the FusionRS release's protocol); repeated captions make text->image "
        f"recall easier. mR, same-text -> own captions: {moved}."
      ),
      "",
    ]
  return lines


def _presence_section(summary: dict, figs: dict[str, str] | None = None, rel=None) -> list[str]:
  if not summary["presence"]:
    return []
  lines = [
    "## Zero-shot presence on REAL thermal images (HIT-UAV val)",
    "",
    (
      "Score per class: cosine to 'an infrared aerial image with {people,cars,bicycles}' "
      "minus cosine to the class-free 'an infrared aerial image'; labels from the boxes. "
      "AUC 0.5 is chance. (Until stop 23 the contrast was '... with cars' against '... "
      "without cars', which cancels the noun: its class scores correlated at 0.99.)"
    ),
    "",
    "| variant | "
    + " | ".join(f"{cl} AUC" for cl in PRESENCE_CLASSES)
    + " | mean AUC | mean balanced acc |",
    "|---" * 6 + "|",
  ]
  for v, t in summary["presence"].items():
    lines.append(
      f"| {v} | "
      + " | ".join(_pm(t[f"{cl}/auc"], digits=3) for cl in PRESENCE_CLASSES)
      + f" | {_pm(t['mean/auc'], digits=3)} | "
      f"{_pm(t['mean/balanced_acc'], digits=3)} |"
    )
  first = next(iter(summary["presence"].values()))
  lines += [
    "",
    "Prevalence in HIT-UAV val: "
    + ", ".join(f"{cl} {first[f'{cl}/prevalence']:.2f}" for cl in PRESENCE_CLASSES)
    + ".",
  ]
  if "Person/median_box_px" in first:
    text = (
      f"Can the test be passed? At the model's {first['image_size']:.0f} px input "
      f"(ViT patch {first['patch_size']:.0f} px) the median object's longest side is "
      + ", ".join(f"{cl} {first[f'{cl}/median_box_px']:.1f} px" for cl in PRESENCE_CLASSES)
    )
    # Counted only when the run's training data was still on disk.
    if "train_captions" in first:
      text += (
        f"; of the {first['train_captions']:.0f} training captions (scene + IR-aware) "
        + ", ".join(
          f"{first[f'{cl}/train_caption_mentions']:.0f} name {cl}" for cl in PRESENCE_CLASSES
        )
      )
    lines += [
      "",
      text + ". A class the captions never name, or smaller than a patch, is not "
      "a fair test of transfer.",
    ]
  if figs and "presence_roc" in figs:
    lines += ["", f"![presence ROC]({rel(figs['presence_roc'])})"]
  return lines + [""]


def _captioning_section(summary: dict, figs: dict[str, str], samples: list[dict], rel) -> list[str]:
  lines = []
  if summary["captioning"]:
    n = sorted({r["seeds"] for r in summary["captioning"].values()})
    lines += [
      f"## Captioning (UCM test, mean ± std over {'/'.join(map(str, n))} seed(s) per run)",
      "",
      (
        "BLEU-4, ROUGE-L and CIDEr-D are this project's implementations of coco-caption's "
        "(equal to pycocoevalcap's to 1e-9); METEOR: "
        + ", ".join(sorted({r["meteor"] for r in summary["captioning"].values()}))
        + " (Meteor 1.5 is the coco-caption jar; the exact-match approximation reads "
        "much higher and is not comparable to published METEOR). Answers = exact "
        "match over all instruction items. Captioner seed s starts from the frozen image "
        "encoder of SigLIP seed s."
      ),
      "",
      "| run | inputs | encoder | scene "
      + " | scene ".join(CAPTION_METRICS)
      + " | IR-aware "
      + " | IR-aware ".join(CAPTION_METRICS)
      + " | answers exact match | answers token F1 |",
      "|---" * 13 + "|",
    ]
    cell = lambda e: "-" if not e else _pm(e, digits=3)
    for name, r in summary["captioning"].items():
      lines.append(
        f"| {name} | {r['inputs']} | {r['encoder']} | "
        + " | ".join(cell(r.get(f"caption/{m}")) for m in CAPTION_METRICS)
        + " | "
        + " | ".join(cell(r.get(f"ir_caption/{m}")) for m in CAPTION_METRICS)
        + " | "
        f"{cell(r.get('answers/exact_match'))} | {cell(r.get('answers/token_f1'))} |"
      )
    lines.append("")
  if samples:
    lines += _samples_table(samples, figs, rel)
  return lines


# Sample tasks shown in RESULTS.md, in this order (one row per record and task).
SAMPLE_TASKS = (
  "caption",
  "ir_caption",
  "describe_ir",
  "ir_brightness",
  "ir_contrast",
  "object_presence",
  "compare_views",
)


def _samples_table(samples: list[dict], figs: dict[str, str], rel) -> list[str]:
  """Predictions of the rgb_ir captioner (seed 0) on the first test records of its newest
  sample page: scene and IR-aware captions, then one instruction of each kind."""
  ids = list(dict.fromkeys(r["record_id"] for r in samples))[:4]
  lines = ["### Samples of the rgb_ir captioner (seed 0)", ""]
  if "caption_pairs" in figs:
    lines += [
      f"![RGB | translated IR]({rel(figs['caption_pairs'])})",
      "",
      "Rows top to bottom are the records below (RGB | translated IR).",
      "",
    ]
  lines += [
    "| record | task | prompt | prediction | first reference |",
    "|---|---|---|---|---|",
  ]
  rank = {t: i for i, t in enumerate(SAMPLE_TASKS)}
  rows = [r for r in samples if r["record_id"] in ids and r["task"] in rank]
  rows.sort(key=lambda r: (ids.index(r["record_id"]), rank[r["task"]]))
  for row in rows:
    prompt = row.get("prompt", "") if row["task"] not in ("caption", "ir_caption") else ""
    lines.append(
      f"| {row['record_id']} | {row['task']} | {_cell(prompt)} | {_cell(row['prediction'])} | "
      f"{_cell((row.get('references') or [''])[0])} |"
    )
  return lines + [""]


def _translation_section(summary: dict, figs: dict[str, str], rel) -> list[str]:
  tr = summary["translation"]
  if not tr.get("generator"):
    return []
  lines = [
    ("## Translation (UCM test RGB → IR against REAL HIT-UAV val; W1, lower is closer)"),
    "",
    "| | intensity W1 | gradient W1 | contrast W1 |",
    "|---|---|---|---|",
  ]
  for who, row in tr.items():
    lines.append(
      f"| {who} | "
      + " | ".join(_num(row.get(m), 4) for m in ("intensity_w1", "gradient_w1", "contrast_w1"))
      + " |"
    )
  lines.append("")
  if "translation" in figs:
    lines += [f"![RGB | fake IR | reconstructed RGB]({rel(figs['translation'])})", ""]
  return lines


def _data_and_time_section(summary: dict) -> list[str]:
  data = summary["data"]
  lines = ["## Data", ""]
  for key in ("ingest_ucm", "ingest_hit_uav"):
    d = data.get(key) or {}
    if d:
      lines.append(
        f"- {d.get('name', key)}: {d.get('splits')} records; rejects {d.get('rejects') or 'none'}."
      )
  ic = data.get("ir_captions") or {}
  if ic.get("splits"):
    per_split = ", ".join(
      f"{s} {v['ir_captions']} for {v['records']} records" for s, v in sorted(ic["splits"].items())
    )
    filt = ic.get("filter", {})
    grams = ic.get("vocabulary", {}).get("ir_captions", {})
    lines.append(
      f"- IR-aware captions ({ic.get('backend')}): {per_split}; the filter "
      f"accepted {filt.get('accepted')} of {filt.get('generated')} generated; "
      f"distinct 1/2/3-grams {grams.get('1-grams')}/{grams.get('2-grams')}/"
      f"{grams.get('3-grams')}."
    )
  tr = data.get("translate") or {}
  if tr:
    lines.append(
      f"- Translation: {tr.get('translated')} of {tr.get('records')} images "
      f"translated in {tr.get('seconds')} s."
    )
  return lines + [""] + _time_section(summary)


# Stage families of the time table: (title, stage-name prefixes, part of the cpu profile?).
STAGE_FAMILIES = (
  (
    "data: ingest, translator, translation, captions, tokenizer",
    ("ingest_", "translat", "ir_captions", "tokenizer"),
    True,
  ),
  ("HIT-UAV box-grounded captions", ("hit_uav_captions",), False),
  (
    "SigLIP variants + presence",
    ("siglip_", "presence_trimodal", "presence_scene", "presence_rgb"),
    True,
  ),
  ("captioners", ("captioner_",), True),
  ("real-thermal arms + presence", ("thermal_", "presence_thermal_"), False),
)
# The cpu profile's stages must fit this budget on the 2-core reference machine.
CPU_BUDGET_SECONDS = 90 * 60


def _family(stage: str) -> int:
  for i, (_, prefixes, _) in enumerate(STAGE_FAMILIES):
    if stage.startswith(prefixes):
      return i
  return len(STAGE_FAMILIES)


def _time_section(summary: dict) -> list[str]:
  """Where the time goes: per family (with the cpu profile's budget), then per stage."""
  secs = summary["stage_seconds"]
  fam: dict[int, list[float]] = {}
  for name, t in secs.items():
    fam.setdefault(_family(name), []).append(t)
  lines = [
    "## Time",
    "",
    "| stage family | stages | time | share |",
    "|---|---|---|---|",
  ]
  total = max(summary["total_seconds"], 1e-9)
  for i in sorted(fam):
    title = STAGE_FAMILIES[i][0] if i < len(STAGE_FAMILIES) else "other"
    t = sum(fam[i])
    lines.append(f"| {title} | {len(fam[i])} | {_duration(t)} | {100 * t / total:.0f}% |")
  cpu = sum(
    t for n, t in secs.items() if _family(n) < len(STAGE_FAMILIES) and STAGE_FAMILIES[_family(n)][2]
  )
  lines += [
    f"| **total** | **{len(secs)}** | **{_duration(summary['total_seconds'])}** | |",
    "",
    (
      f"The cpu profile's stages (everything but the HIT-UAV captions and the real-thermal "
      f"arms) took {_duration(cpu)} against a budget of {_duration(CPU_BUDGET_SECONDS)}"
      + (" (within budget)." if cpu <= CPU_BUDGET_SECONDS else " (OVER budget).")
    ),
    "",
    "<details><summary>Time per stage</summary>",
    "",
    "| stage | time |",
    "|---|---|",
  ]
  lines += [f"| {name} | {_duration(t)} |" for name, t in secs.items()]
  return lines + ["", "</details>", ""]


def _curves_section(figs: dict[str, str], rel) -> list[str]:
  if "loss" not in figs:
    return []
  return [
    "## Training curves",
    "",
    "Train loss per run (moving average over up to 10 logged points; seeds of a run share a color).",
    "",
    f"![training loss]({rel(figs['loss'])})",
    "",
  ]


def markdown(pipe, summary: dict, figs: dict[str, str], samples: list[dict]) -> str:
  """The whole RESULTS.md page; figure paths are made relative to the docs folder."""
  rel = lambda p: os.path.relpath(p, pipe.c.docs)
  return "\n".join(
    _header(pipe, summary)
    + _claims_section(summary)
    + _retrieval_section(summary, figs, rel)
    + _presence_section(summary, figs, rel)
    + thermal.section(
      summary.get("thermal") or {}, rel(figs["thermal_roc"]) if "thermal_roc" in figs else None
    )
    + _captioning_section(summary, figs, samples, rel)
    + _curves_section(figs, rel)
    + _translation_section(summary, figs, rel)
    + _data_and_time_section(summary)
  )


def write(pipe, finished: dict) -> dict[str, Any]:
  c = pipe.c
  os.makedirs(c.results, exist_ok=True)
  for name, entry in finished.items():
    records.write_json_atomic(os.path.join(c.results, f"{name}.json"), entry)
  summary = build_summary(pipe, finished)
  records.write_json_atomic(os.path.join(c.results, "summary.json"), summary)
  figs = figures(pipe, summary, os.path.join(c.docs, "results"))
  text = markdown(pipe, summary, figs, _caption_samples(pipe))
  path = os.path.join(c.docs, "RESULTS.md")
  os.makedirs(c.docs, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
  return summary
