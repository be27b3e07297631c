"""Batches placed on device ahead of the step that uses them, without breaking exact resume.

A background thread pulls host batches from a grain iterator and places them on the mesh
(`place`, e.g. sharding.place_batch) while the previous step runs. Checkpoints must record the
position of the last batch the loop *consumed*, not of the batches waiting in the queue, so
`get_state()` returns the wrapped iterator's state captured right after that batch was read.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


def resolve_worker_count(worker_count: int, cpu_count: int | None = None) -> int:
  """config.data.worker_count: >= 0 as given; -1 = auto: half the host's cores (at most 32)
  on hosts with 8 or more cores (TPU/GPU VMs have 100+), none on a laptop, where worker
  processes cost more start-up than they give back."""
  if worker_count >= 0:
    return worker_count
  cpus = os.cpu_count() if cpu_count is None else cpu_count
  return min(32, cpus // 2) if cpus and cpus >= 8 else 0


class DevicePrefetch:
  """Iterator of `place(batch)` results, up to `size` batches ahead (size 0: synchronous).

  Checkpointable like a grain DataLoader iterator (get_state / set_state / start_prefetch);
  set_state is only allowed before the first batch is drawn (as restore does).
  """

  def __init__(self, iterator: Iterator, place: Callable[[Any], Any], size: int = 2):
    self._it, self._place, self._size = iterator, place, size
    self._state = iterator.get_state()
    self._queue: queue.Queue | None = None
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()

  def _fill(self) -> None:
    try:
      while not self._stop.is_set():
        batch = next(self._it)
        item = (self._place(batch), self._it.get_state())
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except StopIteration:
      self._queue.put(_DONE)
    except BaseException as e:  # re-raised in the consumer thread
      self._queue.put(e)

  def __iter__(self):
    return self

  def __next__(self):
    if self._size <= 0:
      batch = self._place(next(self._it))
      self._state = self._it.get_state()
      return batch
    if self._queue is None:
      self._queue = queue.Queue(maxsize=self._size)
      self._thread = threading.Thread(target=self._fill, name="device-prefetch", daemon=True)
      self._thread.start()
      # Also on the way out of a run that raised before calling close().
      atexit.register(self.close)
    item = self._queue.get()
    if item is _DONE:
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    batch, self._state = item
    return batch

  def get_state(self):
    return self._state

  def set_state(self, state) -> None:
    if self._queue is not None:
      raise RuntimeError("DevicePrefetch.set_state after batches were drawn")
    self._it.set_state(state)
    self._state = self._it.get_state()

  def start_prefetch(self) -> None:
    """Called by grain's checkpoint handler after a restore; the thread starts on demand."""

  def close(self) -> None:
    """Stops the thread and waits for it: a thread still placing arrays while the
    interpreter shuts down can abort the process (seen as SIGABRT at exit)."""
    self._stop.set()
    if self._thread is None:
      return
    while self._thread.is_alive():
      with contextlib.suppress(queue.Empty):  # unblock a pending put
        self._queue.get(timeout=0.1)
      self._thread.join(timeout=0.1)
