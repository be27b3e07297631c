"""Test session set-up: 8 fake CPU devices, shared-data lookup, session-wide fixtures."""

import os

# Must happen before jax is imported anywhere: sharding tests run on 8 fake devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir() -> str | None:
  """../shared/data beside the checkout (or $FUSIONRS_DATA_DIR), None when absent."""
  path = os.environ.get("FUSIONRS_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")
  return os.path.abspath(path) if os.path.isdir(path) else None


@pytest.fixture(scope="session")
def shared_data() -> str:
  path = shared_data_dir()
  if path is None:
    pytest.skip("../shared/data is absent (set FUSIONRS_DATA_DIR to the real UCM/HIT-UAV "
                "data to run this test)")
  return path
