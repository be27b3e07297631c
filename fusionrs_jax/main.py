"""`python -m fusionrs_jax.main --config=configs/<file>.py[:arg] --workdir=DIR` (see cli/main.py)."""

from fusionrs_jax.cli.main import entry

if __name__ == "__main__":
  entry()
