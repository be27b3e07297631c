"""Captioning and short-answer metrics against all references: BLEU-1..4, METEOR, ROUGE-L,
CIDEr-D, exact match and token F1, plus the evaluator the captioner trainer and this CLI share.

BLEU, ROUGE-L and CIDEr-D are own implementations of coco-caption's (pycocoevalcap) and equal
its scorers to 1e-9 (tested). METEOR is the real Meteor 1.5 jar through pycocoevalcap
(coco_caption.py) when that package and Java are installed (`pip install -e '.[coco]'`);
otherwise the key is "METEOR-exact", an exact-match-only approximation that reads much higher
than Meteor 1.5 and must not be compared with published METEOR. Text is lowercased and
stripped of punctuation first.
  python -m fusionrs_jax.cli.evaluate captioning --predictions=preds.jsonl [--out=scores.json]
where each JSONL line is {"prediction": str, "references": [str, ...], "task": str}.
"""

from __future__ import annotations

import collections
import itertools
import math
import re
import string
import sys
from collections.abc import Callable, Iterable, Sequence

from fusionrs_jax.evaluators import coco_caption

# Tasks scored as captions; everything else is a short answer (exact match / token F1).
CAPTION_TASKS = ("caption", "ir_caption", "describe_rgb", "describe_ir", "compare_views")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def tokenize(text: str) -> list[str]:
  """Lowercase, punctuation removed, whitespace split (as coco-caption's PTB step, roughly)."""
  return _PUNCT.sub(" ", text.lower()).split()


def _ngrams(tokens: Sequence[str], n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


# ----------------------------------------------------------------------------
# BLEU.
# ----------------------------------------------------------------------------


def bleu(hyps: Sequence[list[str]], refs: Sequence[list[list[str]]], max_n: int = 4) -> list[float]:
  """Corpus BLEU-1..max_n as coco-caption: clipped n-gram counts summed over the corpus,
  brevity penalty from the closest reference length of each hypothesis."""
  correct, total = [0] * max_n, [0] * max_n
  hyp_len = ref_len = 0
  for h, rs in zip(hyps, refs):
    hyp_len += len(h)
    ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
    for n in range(1, max_n + 1):
      counts = _ngrams(h, n)
      best = collections.Counter()
      for r in rs:
        best |= _ngrams(r, n)  # max count per n-gram over references
      correct[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
      total[n - 1] += max(len(h) - n + 1, 0)
  bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / max(hyp_len, 1e-9))
  scores, log_sum = [], 0.0
  for n in range(max_n):
    # coco-caption's smoothing constants: tiny=1e-15 on matches, small=1e-9 on totals.
    log_sum += math.log((correct[n] + 1e-15) / (total[n] + 1e-9))
    scores.append(bp * math.exp(log_sum / (n + 1)))
  return scores


# ----------------------------------------------------------------------------
# METEOR (exact-match approximation).
# ----------------------------------------------------------------------------


def _align(h: list[str], r: list[str]) -> list[tuple[int, int]]:
  """Exact-match unigram alignment: each hypothesis word takes the unused reference position of
  the same word closest to just after the previous match (few crossings, as METEOR prefers)."""
  free = collections.defaultdict(list)
  for j, w in enumerate(r):
    free[w].append(j)
  pairs, prev = [], -1
  for i, w in enumerate(h):
    if free[w]:
      j = min(free[w], key=lambda j: (abs(j - (prev + 1)), j))
      free[w].remove(j)
      pairs.append((i, j))
      prev = j
  return pairs


def meteor_single(h: list[str], r: list[str], alpha=0.9, beta=3.0, gamma=0.5) -> float:
  """METEOR with exact matches only: Fmean = PR / (alpha P + (1-alpha) R), times
  (1 - gamma (chunks / matches)^beta). No stemming, synonyms or paraphrases."""
  pairs = _align(h, r)
  m = len(pairs)
  if m == 0:
    return 0.0
  p, rec = m / len(h), m / len(r)
  fmean = p * rec / (alpha * p + (1 - alpha) * rec)
  chunks = 1 + sum(
    1 for (i0, j0), (i1, j1) in itertools.pairwise(pairs) if not (i1 == i0 + 1 and j1 == j0 + 1)
  )
  return fmean * (1 - gamma * (chunks / m) ** beta)


def meteor(hyps, refs) -> float:
  """Mean over hypotheses of the best METEOR against any reference."""
  return _mean(max(meteor_single(h, r) for r in rs) if h else 0.0 for h, rs in zip(hyps, refs))


# ----------------------------------------------------------------------------
# ROUGE-L and CIDEr-D.
# ----------------------------------------------------------------------------


def _lcs(a: list[str], b: list[str]) -> int:
  row = [0] * (len(b) + 1)
  for x in a:
    prev_diag = 0
    for j, y in enumerate(b, 1):
      prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
  return row[-1]


def rouge_l_single(h: list[str], rs: list[list[str]], beta: float = 1.2) -> float:
  """coco-caption ROUGE-L: max precision and max recall over references, then F_beta."""
  if not h:
    return 0.0
  lcs = [_lcs(h, r) for r in rs]
  p = max(c / len(h) for c in lcs)
  rec = max(c / len(r) for c, r in zip(lcs, rs) if r)
  if p == 0 or rec == 0:
    return 0.0
  return (1 + beta**2) * p * rec / (rec + beta**2 * p)


def rouge_l(hyps, refs) -> float:
  return _mean(rouge_l_single(h, rs) for h, rs in zip(hyps, refs))


def _tfidf(tokens, doc_freq, log_num_docs, n_max=4):
  """Per n: ({ngram: tf * idf}, norm); tf is the raw count, idf = log(N) - log(max(1, df))."""
  vecs = []
  for n in range(1, n_max + 1):
    vec = {
      g: c * (log_num_docs - math.log(max(1.0, doc_freq[g]))) for g, c in _ngrams(tokens, n).items()
    }
    vecs.append((vec, math.sqrt(sum(v * v for v in vec.values()))))
  return vecs


def cider_d(hyps, refs, sigma: float = 6.0) -> tuple[float, list[float]]:
  """CIDEr-D (coco-caption): idf from the references of the whole set, n = 1..4, clipped
  tf-idf cosine, Gaussian length penalty (sigma 6), x10. Returns (corpus mean, per item)."""
  doc_freq = collections.Counter()
  for rs in refs:
    doc_freq.update({g for r in rs for n in range(1, 5) for g in _ngrams(r, n)})
  log_n = math.log(max(len(refs), 1))
  per_item = []
  for h, rs in zip(hyps, refs):
    hv = _tfidf(h, doc_freq, log_n)
    total = 0.0
    for r in rs:
      rv = _tfidf(r, doc_freq, log_n)
      sims = []
      for (vh, nh), (vr, nr) in zip(hv, rv):
        val = sum(min(x, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, x in vh.items())
        sims.append(val / (nh * nr) if nh and nr else 0.0)
      total += _mean(sims) * math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma**2))
    per_item.append(10.0 * total / len(rs))
  return _mean(per_item), per_item


# ----------------------------------------------------------------------------
# Short answers, tables, the evaluator.
# ----------------------------------------------------------------------------


def _answer_tokens(text: str) -> list[str]:
  return [t for t in tokenize(text) if t not in ("a", "an", "the")]


def exact_match(pred: str, answers: Sequence[str]) -> float:
  """1 when the normalised prediction equals any normalised answer (SQuAD-style)."""
  return float(any(_answer_tokens(pred) == _answer_tokens(a) for a in answers))


def token_f1(pred: str, answers: Sequence[str]) -> float:
  """Best bag-of-tokens F1 against the answers."""
  p = collections.Counter(_answer_tokens(pred))
  best = 0.0
  for a in answers:
    g = collections.Counter(_answer_tokens(a))
    common = sum((p & g).values())
    if common:
      prec, rec = common / sum(p.values()), common / sum(g.values())
      best = max(best, 2 * prec * rec / (prec + rec))
  return best


def _mean(xs: Iterable[float]) -> float:
  xs = list(xs)
  return sum(xs) / len(xs) if xs else 0.0


def caption_metrics(
  predictions: Sequence[str],
  references: Sequence[Sequence[str]],
  official_meteor: bool | None = None,
) -> dict[str, float]:
  """{BLEU-1..4, METEOR, ROUGE-L, CIDEr-D} in [0, 1] (CIDEr-D in [0, 10]) over a set.

  official_meteor: None = Meteor 1.5 when coco_caption.available(), else "METEOR-exact".
  """
  hyps = [tokenize(p) for p in predictions]
  refs = [[tokenize(r) for r in rs] for rs in references]
  out = {f"BLEU-{n}": s for n, s in enumerate(bleu(hyps, refs), 1)}
  if coco_caption.available() if official_meteor is None else official_meteor:
    out["METEOR"] = coco_caption.meteor(hyps, refs)[0]
  else:
    out["METEOR-exact"] = meteor(hyps, refs)
  out["ROUGE-L"] = rouge_l(hyps, refs)
  out["CIDEr-D"] = cider_d(hyps, refs)[0]
  return out


def score_by_task(rows: Sequence[dict]) -> dict[str, float]:
  """Rows {prediction, references, task} -> "<task>/<metric>" for caption tasks and
  "<task>/exact_match", "<task>/token_f1" (and "answers/...") for short answers."""
  by_task = collections.defaultdict(list)
  for row in rows:
    by_task[row["task"]].append(row)
  out: dict[str, float] = {}
  answers = []
  for task, group in sorted(by_task.items()):
    preds, refs = [r["prediction"] for r in group], [r["references"] for r in group]
    if task in CAPTION_TASKS:
      out.update({f"{task}/{k}": v for k, v in caption_metrics(preds, refs).items()})
    else:
      answers += group
      out[f"{task}/exact_match"] = _mean(exact_match(p, r) for p, r in zip(preds, refs))
      out[f"{task}/token_f1"] = _mean(token_f1(p, r) for p, r in zip(preds, refs))
  if answers:
    out["answers/exact_match"] = _mean(
      exact_match(r["prediction"], r["references"]) for r in answers
    )
    out["answers/token_f1"] = _mean(token_f1(r["prediction"], r["references"]) for r in answers)
  return out


class CaptioningEvaluator:
  """`run(params) -> {metric: value}` over fixed eval items; `generate(params, batch)` returns
  the decoded strings of a batch. The last rows scored are kept in `self.rows`."""

  def __init__(self, items, batches: Callable[[], Iterable], generate: Callable):
    self.items, self.batches, self.generate = items, batches, generate
    self.rows: list[dict] = []

  def run(self, params) -> dict[str, float]:
    rows = []
    for batch, chunk in self.batches():
      texts = self.generate(params, batch)
      rows += [
        {
          "record_id": it.record_id,
          "task": it.task,
          "prompt": it.prompt,
          "prediction": t,
          "references": it.references,
        }
        for it, t in zip(chunk, texts)
      ]
    self.rows = rows
    return score_by_task(rows)


if __name__ == "__main__":
  import runpy
  import sys

  print("deprecated: use `python -m fusionrs_jax.cli.evaluate captioning`", file=sys.stderr)
  sys.argv.insert(1, "captioning")
  runpy.run_module("fusionrs_jax.cli.evaluate", run_name="__main__", alter_sys=True)
