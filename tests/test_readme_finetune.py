"""README's "Fine-tune from public weights" commands name real presets and config fields."""

import importlib
import os
import re
import shlex

import pytest

from tests.conftest import REPO


def _commands() -> list[str]:
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  section = readme.split("### Fine-tune from public weights", 1)[1].split("\n## ", 1)[0]
  return [
    line
    for block in re.findall(r"```bash\n(.*?)```", section, re.S)
    for line in block.splitlines()
    if line.startswith("python -m fusionrs_jax.main ")
  ]


def test_section_has_siglip_and_captioner_transfer_commands():
  joined = "\n".join(_commands())
  assert "configs/siglip_ir.py:size=B16,recipe=transfer --config.init_from=" in joined
  assert "configs/captioner_dual.py:size=paligemma_3b,recipe=transfer --config.init_from=" in joined


@pytest.mark.parametrize("command", _commands())
def test_command_loads_its_config_and_every_override_is_a_field(command):
  flags = dict(a.removeprefix("--").split("=", 1) for a in shlex.split(command)[3:])
  path, _, arg = flags.pop("config").partition(":")
  module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
  config = module.get_config(arg)
  for key in flags:
    if key.startswith("config."):
      node = config
      for part in key.removeprefix("config.").split("."):
        assert part in node, f"{key} is not a field of {path}:{arg}"
        node = node[part]
  assert "workdir" in flags
