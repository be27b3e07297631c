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
from fusionrs_jax.pipeline import stats as pipeline
from fusionrs_jax.pipeline import thermal

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
  for name, inputs, enc in pipe.captioner_runs():
    r = _result(finished, name)
    if not r:
      continue
    row = {"inputs": inputs, "encoder": enc}
    # METEOR is Meteor 1.5 when pycocoevalcap + Java ran it, else the exact-match stand-in.
    row["meteor"] = "Meteor 1.5" if "caption/METEOR" in r else "exact-match approximation"
    for task in ("caption", "ir_caption"):
      row.update(
        {f"{task}/{m}": r.get(f"{task}/{m}", r.get(f"{task}/{m}-exact")) for m in CAPTION_METRICS}
      )
    row["answers/exact_match"] = r.get("answers/exact_match")
    row["answers/token_f1"] = r.get("answers/token_f1")
    captioning[name] = row
  out["captioning"] = captioning
  out["thermal"] = thermal.summary(pipe, finished)
  out["claims"] = claims(retrieval, presence, captioning) + thermal.claims(out["thermal"])
  return out


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
      a["ir_caption/CIDEr-D"],
      "scene_captions encoder",
      b["ir_caption/CIDEr-D"],
    )
  a, b = captioning.get("captioner_rgb_ir"), captioning.get("captioner_rgb")
  if a and b:
    for m in ("CIDEr-D", "BLEU-4"):
      add(
        3,
        f"IR-aware captioning {m}",
        "rgb_ir captioner",
        a[f"ir_caption/{m}"],
        "rgb captioner",
        b[f"ir_caption/{m}"],
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
    values = {}
    for key in ("IR->text", "text->IR", "IR<->IR-aware", "mR"):
      for v, table in summary["retrieval"].items():
        values[f"{key} {v}"[:34]] = table[key]["mean"]
    out["retrieval"] = _save_png(
      metrics.bar_chart(
        values,
        "retrieval, own captions as positives, mean over seeds (R@1/5/10 averaged)",
        width=640,
        label_width=250,
      ),
      os.path.join(fig_dir, "retrieval.png"),
    )
  samples = _caption_samples(pipe)
  if samples:
    ids = list(dict.fromkeys(r["record_id"] for r in samples))[:4]
    pairs = _test_images(pipe, ids)
    if pairs:
      grid = metrics.image_grid([np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])])
      out["caption_pairs"] = _save_png(grid, os.path.join(fig_dir, "caption_pairs.png"))
  return out


def _caption_samples(pipe, name: str = "captioner_rgb_ir") -> list[dict]:
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
      "significant the other way. Captioner runs use one seed: no noise estimate."
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


def _presence_section(summary: dict) -> list[str]:
  if not summary["presence"]:
    return []
  lines = [
    "## Zero-shot presence on REAL thermal images (HIT-UAV val)",
    "",
    (
      "Prompts 'an infrared aerial image with {people,cars,bicycles}' against "
      "'... without ...'; labels from the boxes. AUC 0.5 is chance."
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
  return lines + [""]


def _captioning_section(summary: dict, figs: dict[str, str], samples: list[dict], rel) -> list[str]:
  lines = []
  if summary["captioning"]:
    lines += [
      "## Captioning (UCM test, one seed per run)",
      "",
      (
        "BLEU-4, ROUGE-L and CIDEr-D are this project's implementations of coco-caption's "
        "(equal to pycocoevalcap's to 1e-9); METEOR: "
        + ", ".join(sorted({r["meteor"] for r in summary["captioning"].values()}))
        + " (Meteor 1.5 is the coco-caption jar; the exact-match approximation reads "
        "much higher and is not comparable to published METEOR). Answers = exact "
        "match over all instruction items."
      ),
      "",
      "| run | inputs | encoder | scene "
      + " | scene ".join(CAPTION_METRICS)
      + " | IR-aware "
      + " | IR-aware ".join(CAPTION_METRICS)
      + " | answers exact match | answers token F1 |",
      "|---" * 13 + "|",
    ]
    for name, r in summary["captioning"].items():
      lines.append(
        f"| {name} | {r['inputs']} | {r['encoder']} | "
        + " | ".join(_num(r[f"caption/{m}"]) for m in CAPTION_METRICS)
        + " | "
        + " | ".join(_num(r[f"ir_caption/{m}"]) for m in CAPTION_METRICS)
        + " | "
        f"{_num(r['answers/exact_match'])} | {_num(r['answers/token_f1'])} |"
      )
    lines.append("")
  if samples:
    ids = list(dict.fromkeys(r["record_id"] for r in samples))[:4]
    lines += ["### Samples of the rgb_ir captioner", ""]
    if "caption_pairs" in figs:
      lines += [
        f"![RGB | translated IR]({rel(figs['caption_pairs'])})",
        "",
        "Rows top to bottom are the records below (RGB | translated IR).",
        "",
      ]
    lines += ["| record | task | prediction | first reference |", "|---|---|---|---|"]
    for row in samples:
      if row["record_id"] in ids and row["task"] in ("caption", "ir_caption"):
        lines.append(
          f"| {row['record_id']} | {row['task']} | {_cell(row['prediction'])} | "
          f"{_cell(row['references'][0])} |"
        )
    lines.append("")
  return lines


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
  lines += ["", "## Time per stage", "", "| stage | time |", "|---|---|"]
  for name, secs in summary["stage_seconds"].items():
    lines.append(f"| {name} | {_duration(secs)} |")
  return lines + [f"| **total** | **{_duration(summary['total_seconds'])}** |", ""]


def markdown(pipe, summary: dict, figs: dict[str, str], samples: list[dict]) -> str:
  """The whole RESULTS.md page; figure paths are made relative to the docs folder."""
  rel = lambda p: os.path.relpath(p, pipe.c.docs)
  return "\n".join(
    _header(pipe, summary)
    + _claims_section(summary)
    + _retrieval_section(summary, figs, rel)
    + _presence_section(summary)
    + thermal.section(summary.get("thermal") or {})
    + _captioning_section(summary, figs, samples, rel)
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
