"""DevicePrefetch: batches arrive in order, placed; checkpoints record the last batch the
loop consumed (not the ones queued ahead), so a resumed run continues with the same batches."""

import grain
import numpy as np
import pytest

from fusionrs_jax.data import prefetch


def _loader(seed=0):
  return grain.DataLoader(
    data_source=grain.sources.RangeDataSource(0, 1000, 1),
    sampler=grain.samplers.IndexSampler(1000, shuffle=True, seed=seed, num_epochs=1),
    operations=[grain.transforms.Batch(4)],
    worker_count=0,
  )


def _place(batch):
  return np.asarray(batch) * 10


@pytest.mark.parametrize("size", [0, 1, 3])
def test_same_batches_as_the_loader_placed(size):
  want = [_place(b) for b, _ in zip(iter(_loader()), range(6))]
  it = prefetch.DevicePrefetch(iter(_loader()), _place, size=size)
  got = [next(it) for _ in range(6)]
  it.close()
  np.testing.assert_array_equal(np.stack(got), np.stack(want))


@pytest.mark.parametrize("size", [0, 2])
def test_state_is_that_of_the_last_consumed_batch(size):
  it = prefetch.DevicePrefetch(iter(_loader()), _place, size=size)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected_next = [next(it) for _ in range(2)]  # the queue is ahead of these by now
  it.close()
  resumed = prefetch.DevicePrefetch(iter(_loader()), _place, size=size)
  resumed.set_state(state)
  resumed.start_prefetch()
  got = [next(resumed) for _ in range(2)]
  resumed.close()
  np.testing.assert_array_equal(np.stack(got), np.stack(expected_next))


def test_set_state_after_drawing_is_refused():
  it = prefetch.DevicePrefetch(iter(_loader()), _place, size=2)
  state = it.get_state()
  next(it)
  with pytest.raises(RuntimeError, match="after batches were drawn"):
    it.set_state(state)
  it.close()


def test_errors_in_the_thread_reach_the_consumer():
  def bad(batch):
    raise ValueError("record #3 is broken")

  it = prefetch.DevicePrefetch(iter(_loader()), bad, size=2)
  with pytest.raises(ValueError, match="record #3 is broken"):
    next(it)


def test_stop_iteration_at_the_end():
  it = prefetch.DevicePrefetch(iter(_loader()), _place, size=2)
  assert len(list(it)) == 250


@pytest.mark.parametrize(
  "given,cpus,want", [(3, 2, 3), (0, 224, 0), (-1, 2, 0), (-1, 8, 4), (-1, 240, 32)]
)
def test_worker_count(given, cpus, want):
  assert prefetch.resolve_worker_count(given, cpus) == want


def test_close_stops_and_joins_the_thread():
  it = prefetch.DevicePrefetch(iter(_loader()), _place, size=2)
  next(it)
  it.close()
  assert not it._thread.is_alive()
  it.close()  # idempotent (also registered at exit)
