"""Tests of the demo world: determinism, thermal physics, grounded captions, shards."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.demo_world import captions as captions_lib
from data_prep.demo_world import layout as layout_lib
from data_prep.demo_world import render
from data_prep.demo_world import world as demo_world
from fusionrs_jax.core import records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_CLASSES = len(demo_world.SCENE_CLASSES)


@pytest.fixture(scope="module")
def samples():
  """Two class cycles (day, then night) at 64 px."""
  return [demo_world.generate_sample(0, i) for i in range(2 * N_CLASSES)]


def _decode(png: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(png)))


def test_same_seed_gives_identical_bytes_and_other_seeds_differ():
  a = [records.encode(demo_world.generate_sample(7, i)) for i in range(4)]
  b = [records.encode(demo_world.generate_sample(7, i)) for i in range(4)]
  c = [records.encode(demo_world.generate_sample(8, i)) for i in range(4)]
  assert a == b
  assert all(x != y for x, y in zip(a, c))
  val = demo_world.generate_sample(7, 0, split="val")
  assert val.rgb != demo_world.generate_sample(7, 0).rgb  # splits use separate streams


def test_scene_classes_are_ucm_like_and_balanced(samples):
  assert N_CLASSES >= 10
  assert [r.label for r in samples] == list(demo_world.SCENE_CLASSES) * 2
  assert {r.meta["time_of_day"] for r in samples[:N_CLASSES]} == {"day"}
  assert {r.meta["time_of_day"] for r in samples[N_CLASSES:]} == {"night"}


@pytest.mark.parametrize("size", [32, 64, 256])
def test_rgb_and_ir_share_height_and_width(size):
  for scene in ("harbor", "parkinglot"):
    r = demo_world.generate_sample(3, 0, scene_class=scene, image_size=size)
    rgb, ir = _decode(r.rgb), _decode(r.ir)
    assert rgb.shape == (size, size, 3) and rgb.dtype == np.uint8
    assert ir.shape == (size, size) and ir.dtype == np.uint8  # single-channel 8-bit
    assert (r.meta["width"], r.meta["height"]) == (size, size)


def test_every_record_validates_round_trips_and_says_it_is_synthetic(samples):
  for r in samples:
    r.validate()
    assert records.decode(records.encode(r)) == r
    assert r.ir_origin == "rendered" and r.source == "demo_world"
    assert r.meta["synthetic"] is True and r.meta["generator"] == "demo_world"
    assert r.meta["seed"] == 0 and r.meta["time_of_day"] in ("day", "night")
    assert len(r.captions) == 5 and len(set(r.captions)) == 5
    for obj in r.meta["objects"]:
      x, y, w, h = obj["bbox"]
      assert x >= 0 and y >= 0 and x + w <= 64.01 and y + h <= 64.01 and w > 0 and h > 0


def test_many_layouts_keep_countable_objects_inside_and_apart():
  for scene in demo_world.SCENE_CLASSES:
    for seed in range(25):
      rng = np.random.default_rng(seed)
      lay = layout_lib.make_layout(rng, scene)
      assert len(captions_lib.captions_for(lay, rng)) == 5
      _, objects = demo_world.layout_meta(lay, 100)
      boxes = np.array([o["bbox"] for o in objects]).reshape(-1, 4)
      assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 100.01).all()
      assert (boxes[:, 2:] > 1).all(), (scene, seed)  # nothing clipped away at the border
      for i in range(len(boxes)):  # objects must not merge, or counts would be ambiguous
        for j in range(i):
          (x, y, w, h), (u, v, p, q) = boxes[i], boxes[j]
          inter = max(0, min(x + w, u + p) - max(x, u)) * max(0, min(y + h, v + q) - max(y, v))
          assert inter < 0.25 * min(w * h, p * q), (scene, seed, objects[i], objects[j])


def _halves_layout(left: str, right: str):
  """A layout whose left half is material `left` and right half `right`."""
  lay = layout_lib.Layout("test")
  lay.add("a", left, [layout_lib.rect(0.25, 0.5, 0.6, 1.2)])
  lay.add("b", right, [layout_lib.rect(0.75, 0.5, 0.5, 1.2)])
  return lay


def _region_means(left, right, time_of_day, seed=0):
  labels, shadow = render.rasterize(_halves_layout(left, right), 64, (1.0, 0.0))
  ir, _ = render.render_thermal(labels, shadow, np.random.default_rng(seed), time_of_day)
  a, b = ir[8:56, 6:26].astype(float), ir[8:56, 38:58].astype(float)
  return a.mean(), b.mean(), max(a.std(), b.std())


def test_thermal_day_asphalt_hotter_than_water_night_water_warmer_than_grass():
  asphalt, water, noise = _region_means("asphalt", "water", "day")
  assert asphalt > water + 20  # counts; ~29 K kinetic difference at 0.2 K/count
  assert 0 < noise < (asphalt - water) / 5  # noise present, but region contrast dominates
  water_n, grass_n, noise_n = _region_means("water", "grass", "night")
  assert water_n > grass_n + 10
  assert 0 < noise_n < (water_n - grass_n) / 3


def test_low_emissivity_metal_looks_colder_than_its_surroundings():
  tank, concrete, _ = _region_means("tank_white", "concrete", "day")
  assert tank < concrete - 20  # reflects the cold sky


def test_shadows_cool_the_ground_by_day_only():
  lay = layout_lib.Layout("test")
  lay.add("ground", "concrete", [layout_lib.rect(0.5, 0.5, 1.2, 1.2)])
  lay.add("tank", "tank_white", [layout_lib.circle(0.3, 0.5, 0.1)], height=0.2)
  labels, shadow = render.rasterize(lay, 64, (1.0, 0.0))
  # Tank spans x 0.2..0.4 image widths; its shadow 0.4..0.6 ([128, 128] supersampled mask).
  assert shadow[60:68, 56:72].all() and not shadow[:, :50].any() and not shadow[:, 80:].any()
  day = [
    render.render_thermal(labels, shadow, np.random.default_rng(s), "day")[0] for s in range(3)
  ]
  night = [
    render.render_thermal(labels, shadow, np.random.default_rng(s), "night")[0] for s in range(3)
  ]
  shade, lit = np.s_[30:34, 29:36], np.s_[30:34, 48:56]  # shadow vs open concrete (64 px)
  day_gap = np.mean([d[shade].mean() - d[lit].mean() for d in day])
  night_gap = np.mean([n[shade].mean() - n[lit].mean() for n in night])
  assert day_gap < -10 and abs(night_gap) < 5


_WORDS = {w: i for i, w in enumerate(captions_lib.NUMBER_WORDS)}
_NOUNS = {
  noun: cat for cat, forms in captions_lib.COUNT_NOUNS.items() for pair in forms for noun in pair
}
_COUNT_RE = re.compile(
  r"\b("
  + "|".join(captions_lib.NUMBER_WORDS)
  + r")\s+(?:(\w+)\s+)?("
  + "|".join(sorted(map(re.escape, _NOUNS), key=len, reverse=True))
  + r")\b",
  re.IGNORECASE,
)


def test_captions_state_true_object_counts():
  checked = 0
  for i in range(3 * N_CLASSES):
    r = demo_world.generate_sample(1, i)
    truth = {}
    for obj in r.meta["objects"]:
      truth[obj["category"]] = truth.get(obj["category"], 0) + 1
    for caption in r.captions:
      for word, adjective, noun in _COUNT_RE.findall(caption):
        if adjective and adjective.lower() + " " + noun.lower() in _NOUNS:
          noun = adjective + " " + noun  # "storage tanks" matched as adjective + "tanks"
        assert truth.get(_NOUNS[noun.lower()], 0) == _WORDS[word.lower()], (r.id, caption)
        checked += 1
  assert checked >= 20


def test_captions_only_mention_water_and_roof_colours_in_the_layout(samples):
  for r in samples:
    materials = {e["material"] for e in r.meta["layout"]}
    text = " ".join(r.captions).lower()
    if re.search(r"\b(pond|river|sea|harbor)\b", text) and r.label != "river":
      assert "water" in materials, (r.id, text)
    for colour in re.findall(r"(\w+)(?:,| and) (?:\w+ )*?roofs", text):
      if colour in ("red", "gray", "brown", "white", "blue"):
        assert f"roof_{colour}" in materials, (r.id, text)


def test_build_writes_balanced_splits_and_is_idempotent(tmp_path):
  out = str(tmp_path / "dw")
  info = demo_world.build_demo_world(
    out, num_train=2 * N_CLASSES, num_val=N_CLASSES, num_test=8, records_per_shard=20
  )
  assert info["synthetic"] is True and info["generator"] == "demo_world"
  counts = {s: v["records"] for s, v in info["splits"].items()}
  assert counts == {"train": 2 * N_CLASSES, "val": N_CLASSES, "test": 8}
  assert info["splits"]["train"]["ir_origins"] == {"rendered": 2 * N_CLASSES}
  assert len(info["splits"]["train"]["shards"]) == 2
  assert records.read_info(out) == info
  train = list(records.read_records(records.list_shards(out, "train")))
  labels = [r.label for r in train]
  assert all(labels.count(c) == 2 for c in demo_world.SCENE_CLASSES)
  mtimes = {p: os.path.getmtime(p) for p in records.list_shards(out, "train")}
  assert (
    demo_world.build_demo_world(
      out, num_train=2 * N_CLASSES, num_val=N_CLASSES, num_test=8, records_per_shard=20
    )
    == info
  )
  assert {p: os.path.getmtime(p) for p in records.list_shards(out, "train")} == mtimes


def test_bad_arguments_name_the_problem():
  with pytest.raises(ValueError, match="image_size"):
    demo_world.generate_sample(0, 0, image_size=16)
  with pytest.raises(ValueError, match="unknown scene class"):
    demo_world.generate_sample(0, 0, scene_class="moon")


def test_cli_writes_a_dataset(tmp_path):
  out = tmp_path / "cli"
  subprocess.run(
    [
      sys.executable,
      "-m",
      "data_prep.demo_world",
      f"--out={out}",
      "--num_train=16",
      "--num_val=0",
      "--num_test=0",
      "--image_size=32",
    ],
    cwd=REPO,
    check=True,
    capture_output=True,
    timeout=120,
  )
  assert records.read_info(str(out))["splits"]["train"]["records"] == 16
