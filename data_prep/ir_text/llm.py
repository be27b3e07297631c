"""Optional model backends that rewrite measured IR facts into fluent captions.

One interface (`Rewriter.rewrite`), two backends: a local Hugging Face model directory
(transformers, local files only) and an OpenAI-compatible HTTP endpoint (urllib). Both share
the prompt below, tolerant JSON parsing and retries; the caller applies the post-filter.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

# The one place the rewrite prompt lives. {facts} is a JSON list of measured statements,
# {objects} the object nouns the scene captions mention, {scene} the scene captions.
REWRITE_PROMPT = """You write captions for the infrared (IR) view of an aerial image.
The IR image is rendered or translated, not a temperature measurement.
Scene captions of the RGB view: {scene}
Objects you may mention (no others): {objects}
Measured facts about the IR image (state only these; keep region names exactly):
{facts}
Write {n} different one-sentence captions describing the IR view. Use intensity words
(bright, dark, high or low intensity, contrast, outlines, texture). Never talk about heat or
temperature (no hot, warm, cold), never hedge (no maybe, might, possibly), never add objects
or counts that are not listed.
Answer with a JSON array of {n} strings and nothing else."""

SYSTEM_PROMPT = "You are a precise remote-sensing annotator. You answer in JSON only."


class RewriteError(RuntimeError):
  """The backend gave no usable answer after all retries."""


def build_prompt(facts: list[str], objects: list[str], scene_captions: list[str], n: int) -> str:
  return REWRITE_PROMPT.format(
    scene=json.dumps(scene_captions[:5]),
    objects=json.dumps(objects) if objects else "none",
    facts=json.dumps(facts, indent=0),
    n=n,
  )


def extract_json(text: str):
  """The first JSON array or object embedded in `text` (models wrap JSON in prose/fences)."""
  decoder = json.JSONDecoder()
  for i, ch in enumerate(text):
    if ch in "[{":
      try:
        return decoder.raw_decode(text, i)[0]
      except json.JSONDecodeError:
        continue
  raise ValueError(f"no JSON array/object in model output {text[:120]!r}")


def parse_captions(text: str) -> list[str]:
  """Model output -> list of caption strings; accepts [..], {"captions": [..]} and [{text}]."""
  data = extract_json(text)
  if isinstance(data, dict):
    data = next((v for k, v in data.items() if isinstance(v, list)), [data])
  out = []
  for item in data:
    if isinstance(item, dict):
      item = (
        item.get("caption")
        or item.get("text")
        or next((v for v in item.values() if isinstance(v, str)), None)
      )
    if isinstance(item, str) and item.strip():
      out.append(item.strip())
  if not out:
    raise ValueError(f"model JSON holds no caption strings: {str(data)[:120]!r}")
  return out


class Rewriter:
  """Prompt -> raw text (`complete`) with retries, backoff and JSON parsing (`rewrite`)."""

  name = "rewriter"

  def __init__(self, retries: int = 3, backoff: float = 1.0):
    self.retries = retries
    self.backoff = backoff
    self.failures: dict[str, int] = {}

  def complete(self, prompt: str, seed: int) -> str:
    raise NotImplementedError

  def rewrite(
    self, facts: list[str], objects: list[str], scene_captions: list[str], n: int, seed: int = 0
  ) -> list[str]:
    """n (or so) caption strings, unfiltered. Raises RewriteError after the last retry."""
    prompt = build_prompt(facts, objects, scene_captions, n)
    last = None
    for attempt in range(self.retries):
      try:
        return parse_captions(self.complete(prompt, seed))
      except (ValueError, OSError, KeyError, urllib.error.URLError) as e:
        kind = type(e).__name__
        self.failures[kind] = self.failures.get(kind, 0) + 1
        last = e
        if attempt + 1 < self.retries:
          time.sleep(self.backoff * 2**attempt)
    raise RewriteError(f"{self.name}: no usable answer after {self.retries} tries ({last})")


class HttpRewriter(Rewriter):
  """An OpenAI-compatible server: POST {endpoint}/v1/chat/completions."""

  def __init__(self, endpoint: str, model: str = "default", timeout: float = 60.0, **kwargs):
    super().__init__(**kwargs)
    endpoint = endpoint.rstrip("/")
    if not endpoint.endswith("/chat/completions"):
      endpoint += "/chat/completions" if endpoint.endswith("/v1") else "/v1/chat/completions"
    self.url, self.model, self.timeout = endpoint, model, timeout
    self.name = f"http:{self.url}"

  def complete(self, prompt: str, seed: int) -> str:
    body = json.dumps(
      {
        "model": self.model,
        "temperature": 0,
        "seed": seed,
        "messages": [
          {"role": "system", "content": SYSTEM_PROMPT},
          {"role": "user", "content": prompt},
        ],
      }
    ).encode()
    request = urllib.request.Request(
      self.url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=self.timeout) as response:
      reply = json.loads(response.read().decode("utf-8"))
    return reply["choices"][0]["message"]["content"]


class LocalRewriter(Rewriter):
  """A local Hugging Face causal LM (or chat model) directory, loaded from disk only."""

  def __init__(self, path: str, max_new_tokens: int = 256, **kwargs):
    super().__init__(**kwargs)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    self.model.eval()
    self.max_new_tokens = max_new_tokens
    self.name = f"local:{path}"

  def complete(self, prompt: str, seed: int) -> str:
    import torch

    tok = self.tokenizer
    if getattr(tok, "chat_template", None):
      text = tok.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
        tokenize=False,
        add_generation_prompt=True,
      )
    else:
      text = f"{SYSTEM_PROMPT}\n\n{prompt}\n"
    inputs = tok(text, return_tensors="pt")
    torch.manual_seed(seed)
    with torch.no_grad():
      out = self.model.generate(
        **inputs,
        max_new_tokens=self.max_new_tokens,
        do_sample=False,
        pad_token_id=tok.pad_token_id or tok.eos_token_id,
      )
    return tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def make_rewriter(llm: str | None = None, endpoint: str | None = None, **kwargs) -> Rewriter | None:
  """The backend the CLI flags ask for (None: templates only)."""
  if llm and endpoint:
    raise ValueError("give either --llm (a local model directory) or --endpoint, not both")
  if endpoint:
    return HttpRewriter(endpoint, **kwargs)
  if llm:
    return LocalRewriter(llm, **kwargs)
  return None
