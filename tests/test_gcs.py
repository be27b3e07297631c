"""gs:// paths against a real GCS server: gcp-storage-emulator started on 127.0.0.1 by these
tests (gcsfs via STORAGE_EMULATOR_HOST, tensorstore via TENSORSTORE_GCS_HTTP_URL).

core/fs round trips; shards + dataset_info, ingest, the Beam pipeline and the tokenizer
writing to a bucket (compared with local runs); metrics, TensorBoard events, images, captioner
samples and Orbax checkpoints in a bucket; the one-line error for a gs:// data dir; and a SigLIP
run with a gs:// work dir, killed after its first checkpoint and resumed, bit-identical to a
local run. The emulator's tracebacks about closed connections (BrokenPipeError) are noise."""

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gcsfs")
emulator = pytest.importorskip("gcp_storage_emulator.server")
objects = pytest.importorskip("gcp_storage_emulator.handlers.objects")

from data_prep.ingest import tokenizer
from data_prep.ingest.writer import IngestOptions, ingest
from fusionrs_jax.core import checkpoint, fs, metrics, records
from fusionrs_jax.core.errors import UserError
from fusionrs_jax.core.records import Record
from fusionrs_jax.data import input_pipeline
from tests.conftest import REPO

BUCKET = "fusionrs-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _download_with_generation(download):
  """The emulator's object download plus the x-goog-generation header real GCS sends:
  tensorstore's OCDBT manifest updates (Orbax) are conditional on that generation."""

  def handler(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status in (200, 206):  # whole object or a range of it
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

  return handler


@pytest.fixture(scope="module")
def gcs_url():
  """A fresh in-memory GCS server with one bucket; gcsfs and tensorstore point at it."""
  port = _free_port()
  server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  url = f"http://127.0.0.1:{port}"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(objects, "download", _download_with_generation(objects.download))
    mp.setenv("STORAGE_EMULATOR_HOST", url)
    mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
    yield url
  server.stop()


def _png(seed: int, size: int = 40) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def _records(n: int) -> list[Record]:
  splits = ("train", "val", "test")
  return [
    Record(id=f"g/{i}", source="g", split=splits[i % 3], rgb=_png(i), captions=[f"scene {i}"])
    for i in range(n)
  ]


# ----------------------------------------------------------------------------
# core/fs and records.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "gs"])
def test_fs_reads_writes_lists_and_appends_the_same_on_local_and_gs(gcs_url, tmp_path, where):
  base = str(tmp_path / "d") if where == "local" else f"gs://{BUCKET}/fs-{where}"
  fs.makedirs(base)
  records.write_json_atomic(fs.join(base, "a.json"), {"x": 1})
  fs.write_bytes(fs.join(base, "sub", "b.bin") if where == "gs" else fs.join(base, "b.bin"), b"B")
  assert json.loads(fs.read_text(fs.join(base, "a.json"))) == {"x": 1}
  assert [fs.basename(p) for p in fs.glob(fs.join(base, "*.json"))] == ["a.json"]
  for _ in range(2):  # a reopened appender continues the file (a resumed run's metrics)
    with fs.AppendFile(fs.join(base, "m.jsonl")) as f:
      f.write("line\n")
  assert fs.read_text(fs.join(base, "m.jsonl")) == "line\nline\n"
  with fs.staged_file(fs.join(base, "c.bin")) as tmp, open(tmp, "wb") as f:
    f.write(b"staged")
  with fs.local_copy(fs.join(base, "c.bin")) as local, open(local, "rb") as f:
    assert os.path.exists(local) and f.read() == b"staged"
  with pytest.raises(RuntimeError), fs.staged_file(fs.join(base, "never.bin")) as tmp:
    open(tmp, "wb").close()
    raise RuntimeError("writer failed")
  assert not fs.exists(fs.join(base, "never.bin"))  # a failed write leaves no file
  assert not fs.glob(fs.join(base, "*.tmp-*"))
  fs.remove(fs.join(base, "c.bin"))
  assert not fs.exists(fs.join(base, "c.bin")) and fs.isfile(fs.join(base, "a.json"))
  fs.rmtree(base)
  assert not fs.exists(fs.join(base, "a.json"))


def test_only_local_paths_and_gs_urls_are_taken():
  assert not fs.is_remote("/data/x") and not fs.is_remote("file:///data/x")
  assert fs.is_remote("gs://b/x")
  with pytest.raises(UserError, match="only local paths and gs://"):
    fs.exists("s3://b/x")


def test_shards_and_dataset_info_on_gs_equal_the_local_ones(gcs_url, tmp_path):
  recs = _records(9)
  local, remote = str(tmp_path / "local"), f"gs://{BUCKET}/shards"
  for out in (local, remote):
    records.write_split(recs, out, "g", "train", records_per_shard=4)
    records.write_split(recs, out, "g", "val", records_per_shard=2)
    records.write_split(recs[:3], out, "g", "val", records_per_shard=2)  # 5 -> 2 shards
  assert [fs.basename(p) for p in records.list_shards(remote, "val")] == [
    "g-val.array_record-00000-of-00002",
    "g-val.array_record-00001-of-00002",
  ]
  info_local, info_remote = records.write_info(local, "g"), records.write_info(remote, "g")
  assert info_remote == info_local == records.read_info(remote)  # same sha256 per shard
  back = list(records.read_records(records.list_shards(remote, "train")))
  assert [r.id for r in back] == [r.id for r in recs] and back[4].rgb == recs[4].rgb


def test_main_with_a_gs_data_dir_is_one_error_line_naming_the_gcsfuse_mount(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "fusionrs_jax.main",
      "--config=configs/siglip_ir.py:size=tiny",
      f"--workdir={tmp_path / 'run'}",
      f"--config.data.dir=gs://{BUCKET}/data/ucm",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
  assert "Traceback" not in proc.stderr and "gcsfuse" in line
  assert f"/mnt/{BUCKET}/data/ucm" in line


# ----------------------------------------------------------------------------
# Work-dir files: metrics, TensorBoard, images, checkpoints.
# ----------------------------------------------------------------------------


def _events(data: bytes) -> list:
  """TensorBoard Event protos of one event file's bytes (TFRecord framing)."""
  from tensorboardX.proto import event_pb2

  out, pos = [], 0
  while pos < len(data):
    (n,) = struct.unpack("<Q", data[pos : pos + 8])
    out.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n]))
    pos += 12 + n + 4
  return out


def test_metric_writer_puts_jsonl_events_and_images_in_a_bucket(gcs_url):
  workdir = f"gs://{BUCKET}/metrics-run"
  writer = metrics.MetricWriter(workdir)
  writer.write_scalars(1, {"loss": 2.5})
  writer.write_scalars(2, {"loss": 1.5})
  path = writer.write_image(2, "grid", np.full((4, 6, 3), 200, np.uint8))
  writer.close()
  assert [r["loss"] for r in metrics.read_jsonl(fs.join(workdir, "metrics.jsonl"))] == [2.5, 1.5]
  with Image.open(io.BytesIO(fs.read_bytes(path))) as im:
    assert im.size == (6, 4)
  (event_file,) = fs.glob(fs.join(workdir, "tb", "events.out.tfevents.*"))
  scalars = [
    (e.step, v.simple_value)
    for e in _events(fs.read_bytes(event_file))
    for v in e.summary.value
    if v.tag == "loss"
  ]
  assert scalars == [(1, 2.5), (2, 1.5)]


def test_orbax_checkpoint_in_a_bucket_restores_bit_exact(gcs_url):
  state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.int32(7)}
  ckpt = checkpoint.Checkpointer(f"gs://{BUCKET}/ckpt-run/checkpoints", save_every=1)
  ckpt.save(7, state, force=True)
  ckpt.close()
  again = checkpoint.Checkpointer(f"gs://{BUCKET}/ckpt-run/checkpoints", save_every=1)
  assert again.latest_step == 7
  raw = again.restore_raw()
  again.close()
  np.testing.assert_array_equal(raw["w"], state["w"])
  assert raw["step"] == 7


# ----------------------------------------------------------------------------
# Ingest and training against the bucket.
# ----------------------------------------------------------------------------


def test_ingest_writes_the_same_shards_info_and_rejects_to_gs_as_locally(gcs_url, tmp_path):
  recs = _records(12) + [Record(id="g/small", source="g", split="train", rgb=_png(99, 8))]
  opts = IngestOptions(progress=False, records_per_shard=2, chunk_size=4)
  local, remote = str(tmp_path / "local"), f"gs://{BUCKET}/ingest/g"
  for out in (local, remote):
    ingest(recs, out, "g", opts)
  assert records.read_info(remote) == records.read_info(local)
  assert fs.read_text(fs.join(remote, "rejects.jsonl")) == fs.read_text(
    fs.join(local, "rejects.jsonl")
  )
  rejects = [
    json.loads(line) for line in fs.read_text(fs.join(remote, "rejects.jsonl")).splitlines()
  ]
  assert [r["id"] for r in rejects] == ["g/small"]
  names = lambda out: sorted(fs.basename(p) for p in fs.glob(fs.join(out, "g-*")))
  assert names(remote) == names(local)
  for name in names(local):
    assert fs.read_bytes(fs.join(remote, name)) == fs.read_bytes(fs.join(local, name))
  assert not fs.glob(fs.join(remote, ".ingest-g", "*"))  # the work folder is gone
  # A re-ingest with another shard size leaves no stale shard in the bucket.
  ingest(recs, remote, "g", IngestOptions(progress=False, records_per_shard=100, chunk_size=4))
  assert names(remote) == [f"g-{s}.array_record-00000-of-00001" for s in ("test", "train", "val")]


def _cli(workdir, data_dir):
  """tiny_siglip_run's run (conftest: size=tiny,runlocal=1: 4 steps, a checkpoint every 2, an
  eval at the end) with synchronous checkpoints, so a checkpoint's marker means it is whole."""
  return [
    sys.executable,
    "-m",
    "fusionrs_jax.main",
    "--config=configs/siglip_ir.py:size=tiny,runlocal=1",
    f"--workdir={workdir}",
    f"--config.data.dir={data_dir}",
    "--config.async_checkpoints=False",
  ]


def _kill_after(proc, committed: str, timeout: float = 300) -> None:
  """SIGKILLs `proc` as soon as the object `committed` (a checkpoint's marker) exists."""
  deadline = time.time() + timeout
  while not fs.exists(committed) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


@pytest.mark.slow
def test_siglip_run_in_a_bucket_killed_and_resumed_ends_bit_identical_to_a_local_run(
  gcs_url, tiny_dataset, tiny_siglip_run, tmp_path
):
  """The local run is conftest's tiny_siglip_run (trained once per session, in process)."""
  _, local, _ = tiny_siglip_run
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
    # The resumed run loads the killed run's compiled train step from this cache.
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )
  # Shards are read through a gcsfuse mount on a pod (MaxText's way): the same folder layout.
  data = str(shutil.copytree(tiny_dataset, tmp_path / "gcsfuse" / BUCKET / "data" / "tiny"))
  steps, remote = 4, f"gs://{BUCKET}/workdirs/siglip"
  proc = subprocess.Popen(
    _cli(remote, data), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
  )
  committed = fs.join(remote, "checkpoints", "2", "commit_success.txt")
  _kill_after(proc, committed)
  assert fs.exists(committed), proc.stderr.read().decode()[-3000:]
  assert not fs.exists(fs.join(remote, "checkpoints", str(steps))), "finished before the kill"
  subprocess.run(_cli(remote, data), cwd=REPO, env=env, check=True, capture_output=True)

  step_a, a = checkpoint.run_params(local)
  step_b, b = checkpoint.run_params(remote)
  assert step_a == step_b == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The rest of the run folder is in the bucket too, and says what the local one says.
  assert json.loads(fs.read_text(fs.join(remote, "config.json")))["total_steps"] == steps
  rows = lambda w, name: metrics.read_jsonl(fs.join(w, name))
  loss = lambda w: {r["step"]: r["loss"] for r in rows(w, "metrics.jsonl") if "loss" in r}
  assert loss(remote)[steps] == loss(local)[steps]
  assert rows(remote, "eval.jsonl") == rows(local, "eval.jsonl")
  assert [fs.basename(p) for p in fs.glob(fs.join(remote, "images", "*.png"))] == [
    f"retrieval_R5_{steps:07d}.png"
  ]
  # TensorBoard events (the killed run's were not uploaded yet: its writer never flushed).
  events = [_events(fs.read_bytes(p)) for p in fs.glob(fs.join(remote, "tb", "events.*"))]
  assert steps in {e.step for file in events for e in file if e.summary.value}


def test_tokenizer_trains_from_shards_in_a_bucket_and_is_written_there(gcs_url):
  data = f"gs://{BUCKET}/tok-data"
  records.write_split(_records(30), data, "g", "train")
  texts = tokenizer.train_texts([data])
  assert sorted(texts) == sorted(f"scene {i}" for i in range(30))
  path = tokenizer.train_tokenizer(texts * 20, fs.join(data, "tokenizer.model"), vocab_size=300)
  assert fs.isfile(path) and not os.path.exists(path.replace("gs://", "gs:/"))
  ids = tokenizer.load_tokenizer(path).encode("scene 3")
  assert ids and input_pipeline.Tokenizer(path).decode(np.array([ids])) == ["scene 3"]


def test_captioner_samples_are_written_to_a_bucket(gcs_url):
  from types import SimpleNamespace

  from fusionrs_jax.trainers import captioner

  image = lambda c: np.zeros((8, 8, c), np.float32)
  items = {"g/0": SimpleNamespace(rgb=image(3), ir=image(1))}
  rows = [dict(record_id="g/0", task="caption", prompt="p", prediction="a road", references=["r"])]
  folder = f"gs://{BUCKET}/cap-run/samples"
  jsonl, page = captioner.write_samples(folder, 7, rows, items, html_rows=1)
  assert metrics.read_jsonl(jsonl) == rows
  assert "a road" in fs.read_text(page) and fs.basename(page) == "step_0000007.html"


def test_beam_pipeline_writes_the_same_shards_and_rejects_to_gs_as_locally(gcs_url, tmp_path):
  beam_prep = pytest.importorskip("data_prep.beam")
  images = tmp_path / "images"
  images.mkdir()
  entries = []
  for i in range(6):
    (images / f"img{i}.png").write_bytes(_png(i, 8 if i == 5 else 40))  # img5: too small
    split = ("train", "val", "test")[i % 3]
    entries.append({"filename": f"img{i}.png", "split": split, "sentences": [{"raw": f"s {i}"}]})
  (tmp_path / "captions.json").write_text(json.dumps({"images": entries}))
  spec = {
    "source": "karpathy",
    "json": [str(tmp_path / "captions.json")],
    "images": str(images),
    "name": "b",
  }
  local, remote = str(tmp_path / "local"), f"gs://{BUCKET}/beam/b"
  options = beam_prep.BeamOptions(records_per_shard=1, ir_captions=False)
  for out in (local, remote):
    beam_prep.run(spec, out, "b", options)
  names = lambda out: sorted(fs.basename(p) for p in fs.glob(fs.join(out, "b-*")))
  assert names(remote) == names(local) and len(names(local)) == 5
  for name in names(local):
    assert fs.read_bytes(fs.join(remote, name)) == fs.read_bytes(fs.join(local, name))
  rejects = fs.read_text(fs.join(remote, "rejects.jsonl"))
  assert rejects == fs.read_text(fs.join(local, "rejects.jsonl")) and "img5" in rejects
  assert records.read_info(remote)["splits"] == records.read_info(local)["splits"]
  assert not fs.glob(fs.join(remote, ".beam-b", "*"))
