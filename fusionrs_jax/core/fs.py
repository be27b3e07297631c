"""One path layer for every file the project reads or writes: local paths and gs:// URLs alike.

Local paths go to the os module as before; gs:// goes to fsspec's gcsfs. Why fsspec + gcsfs
rather than etils.epath: without TensorFlow, epath (Orbax's path library) itself reaches gs://
through fsspec + gcsfs, so fsspec is the layer under both, and using it directly lets us choose
gcsfs's plain `GCSFileSystem`. The default class (`ExtendedGcsFileSystem`) first asks the
storage-control gRPC API whether a bucket is zonal/hierarchical: against the local emulator with
an anonymous token its first write took 73 s (a 60 s gRPC timeout), the plain class's 0.04 s,
and zonal/HNS features buy nothing for whole-object reads and writes. The plain class is
registered for fsspec's "gs"/"gcs" protocols here, so Orbax's epath listings use it too. A
`STORAGE_EMULATOR_HOST` in the environment points gcsfs at an emulator (tensorstore's is
`TENSORSTORE_GCS_HTTP_URL`).

What is atomic. Local files: written to a temp sibling, fsynced, renamed (atomic on POSIX).
GCS: one object upload is atomic (a reader sees the whole old or the whole new object, never a
part), so a file is uploaded once, straight to its name, when its writer closes; there is no
rename (a move is copy + delete, two requests), no atomicity across objects (a shard folder is
complete only once its dataset_info.json, written last, exists), and no append: an appended file
(metrics.jsonl, eval.jsonl, TensorBoard events) is kept in memory and re-uploaded whole on flush,
so a killed writer loses the lines since its last upload, never the earlier ones.

ArrayRecord's C++ reader and writer open local files only: shards bound for gs:// are written to
a local temp file and uploaded (`staged_file`); tools that scan shards download one at a time
(`local_copy`); training reads shards through a gcsfuse mount (`require_local`).
"""

from __future__ import annotations

import builtins
import contextlib
import glob as globlib
import os
import posixpath
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

import fsspec

from fusionrs_jax.core.errors import UserError

# gcsfs is imported lazily (gs:// paths only): pip install gcsfs, as the dev extra and the
# launchers do. The string form registers it without importing it.
GCSFS_CLASS = "gcsfs.core.GCSFileSystem"
for _protocol in ("gs", "gcs"):
  fsspec.register_implementation(_protocol, GCSFS_CLASS, clobber=True)

# How often an appended remote file is re-uploaded at most (close always uploads).
REMOTE_APPEND_SECS = 10.0


class NotLocalError(UserError, ValueError):
  """A gs:// path was given where only a local (or gcsfuse-mounted) path can be read (CLIs
  print it as one line)."""


def is_remote(path: str) -> bool:
  """True for gs:// (and gcs://) URLs, False for local paths; other schemes are an error."""
  path = str(path)
  if "://" not in path or path.startswith("file://"):
    return False
  if not path.startswith(("gs://", "gcs://")):
    raise UserError(f"{path!r}: only local paths and gs:// URLs are supported")
  return True


def _gcs():
  """The process's gcsfs filesystem (fsspec caches one instance per set of arguments)."""
  try:
    import gcsfs.core  # noqa: F401 -- checks the install; fsspec builds the instance
  except ImportError as e:
    raise ImportError(f"gs:// paths need gcsfs: pip install gcsfs ({e})") from e
  # Listings are not cached: another host (or a resumed run) may have written since.
  return fsspec.filesystem("gs", use_listings_cache=False)


def _local(path: str) -> str:
  return path.removeprefix("file://")


def join(base: str, *parts: str) -> str:
  return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def basename(path: str) -> str:
  return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


def dirname(path: str) -> str:
  return posixpath.dirname(path.rstrip("/")) if is_remote(path) else os.path.dirname(path)


def abspath(path: str) -> str:
  return path if is_remote(path) else os.path.abspath(_local(path))


def exists(path: str) -> bool:
  return _gcs().exists(path) if is_remote(path) else os.path.exists(_local(path))


def isfile(path: str) -> bool:
  return _gcs().isfile(path) if is_remote(path) else os.path.isfile(_local(path))


def isdir(path: str) -> bool:
  return _gcs().isdir(path) if is_remote(path) else os.path.isdir(_local(path))


def makedirs(path: str) -> None:
  """A folder (and its parents); GCS has no folders, objects just have prefixes."""
  if not is_remote(path):
    os.makedirs(_local(path), exist_ok=True)


def glob(pattern: str) -> list[str]:
  """Sorted paths matching `pattern` (`*`, `?`, `[...]`), in the pattern's own scheme."""
  if not is_remote(pattern):
    return sorted(globlib.glob(_local(pattern)))
  scheme = pattern.split("://", 1)[0]
  return sorted(f"{scheme}://{p}" for p in _gcs().glob(pattern))


def escape(path: str) -> str:
  """A local `path` with glob's special characters escaped (so it matches only itself);
  gs:// names are left as they are (keep `*?[` out of bucket paths)."""
  return path if is_remote(path) else globlib.escape(path)


def remove(path: str) -> None:
  if is_remote(path):
    _gcs().rm_file(path)
  else:
    os.remove(_local(path))


def rmtree(path: str) -> None:
  """Removes a folder (or every object under a prefix); missing is fine."""
  if not is_remote(path):
    shutil.rmtree(_local(path), ignore_errors=True)
  elif _gcs().exists(path):
    _gcs().rm(path, recursive=True)


def open(path: str, mode: str = "r"):  # the builtin's name: the same call for both kinds
  """A file object for reading, or for writing a whole file (uploaded on close if remote).

  For writes that must be atomic locally as well use `write_bytes` / `staged_file`."""
  if is_remote(path):
    return _gcs().open(path, mode)
  return builtins.open(_local(path), mode)


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def temp_path(path: str) -> str:
  """A sibling temp name unique to this process and thread, for write-then-rename.

  Stale ones (a killed writer's) match `*.tmp-*` and are cleaned by the writers.
  """
  return f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"


def write_bytes(path: str, data: bytes) -> None:
  """Atomically replaces `path`: local temp + fsync + rename, or one GCS object upload."""
  if is_remote(path):
    _gcs().pipe_file(path, data)
    return
  path = _local(path)
  tmp = temp_path(path)
  with builtins.open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_file(path: str) -> Iterator[str]:
  """Yields a local file name to write `path` through (for writers that need a real file,
  such as ArrayRecord's); on success it is renamed (local) or uploaded once (gs://) to
  `path`, on error removed."""
  if is_remote(path):
    with tempfile.TemporaryDirectory(prefix="fusionrs-stage-") as tmp_dir:
      tmp = os.path.join(tmp_dir, basename(path))
      yield tmp
      _gcs().put_file(tmp, path)
    return
  tmp = temp_path(_local(path))
  try:
    yield tmp
    os.replace(tmp, _local(path))
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
  """Yields a local file name holding `path`'s bytes (itself when local; a downloaded temp
  copy, removed afterwards, when remote)."""
  if not is_remote(path):
    yield _local(path)
    return
  with tempfile.TemporaryDirectory(prefix="fusionrs-copy-") as tmp_dir:
    tmp = os.path.join(tmp_dir, basename(path))
    _gcs().get_file(path, tmp)
    yield tmp


def require_local(path: str, what: str) -> str:
  """`path` when a local reader (ArrayRecord, grain) can open it; NotLocalError otherwise."""
  if is_remote(path):
    bucket = path.split("://", 1)[1].split("/", 1)[0]
    raise NotLocalError(
      f"{what} {path!r}: ArrayRecord reads local files only; mount the bucket with gcsfuse "
      f"(launch/tpu_vm.sh and launch/gke do: gcsfuse --implicit-dirs {bucket} /mnt/{bucket}) "
      f"and pass the mount path ({path.replace(f'gs://{bucket}', f'/mnt/{bucket}', 1)})"
    )
  return path


class AppendFile:
  """A file written by appending (metrics.jsonl, eval.jsonl, TensorBoard events).

  Local: an ordinary append-mode file. gs://: GCS objects cannot be appended to, so the
  object's current bytes are read once, new writes are kept, and `flush` re-uploads the whole
  object (at most every `every_secs`; `close` always does).
  """

  def __init__(self, path: str, binary: bool = False, every_secs: float = REMOTE_APPEND_SECS):
    self.path, self.binary, self.every_secs = path, binary, every_secs
    self._local = None
    if not is_remote(path):
      mode = "ab" if binary else "a"
      self._local = builtins.open(_local(path), mode)  # noqa: SIM115 -- closed in close()
      return
    self._data = bytearray(read_bytes(path) if exists(path) else b"")
    self._dirty, self._uploaded = False, -float("inf")

  def write(self, data) -> None:
    if self._local is not None:
      self._local.write(data)
      return
    self._data += data if self.binary else data.encode("utf-8")
    self._dirty = True

  def flush(self, force: bool = False) -> None:
    if self._local is not None:
      self._local.flush()
    elif self._dirty and (force or time.monotonic() - self._uploaded >= self.every_secs):
      # Marked first: a log handler writing here must not re-enter through gcsfs's own logs.
      self._dirty, self._uploaded = False, time.monotonic()
      try:
        write_bytes(self.path, bytes(self._data))
      except BaseException:
        self._dirty = True
        raise

  def close(self) -> None:
    if self._local is not None:
      self._local.close()
    else:
      self.flush(force=True)

  def __enter__(self) -> AppendFile:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
