"""trainers.common.prepare_dataset refuses a data dir it cannot use before writing anything."""

import os

import ml_collections
import pytest

from fusionrs_jax.core.errors import UserError
from fusionrs_jax.trainers import common


@pytest.mark.parametrize("data_dir", ["", "  "])
def test_empty_data_dir_is_one_error_and_creates_nothing(data_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  cfg = ml_collections.ConfigDict({"dir": data_dir, "demo_world_if_missing": True})
  with pytest.raises(UserError, match="data.dir is empty"):
    common.prepare_dataset(cfg)
  assert os.listdir(tmp_path) == []


def test_missing_dataset_without_demo_world_names_the_ingest_command(tmp_path):
  cfg = ml_collections.ConfigDict({"dir": str(tmp_path / "nope"), "demo_world_if_missing": False})
  with pytest.raises(UserError, match="data_prep.ingest"):
    common.prepare_dataset(cfg)
