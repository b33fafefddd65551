"""`python -m fastres.benchmark ...`: the same as `fastres bench ...`."""
import sys

from fastres.cli import run_subcommand

sys.exit(run_subcommand("bench"))
