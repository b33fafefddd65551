"""``python -m fastres.gate ARGS``: the same as ``fastres check ARGS``."""
import sys

from fastres.cli import run_subcommand

if __name__ == "__main__":
    sys.exit(run_subcommand("check"))
