"""The error every subcommand raises for a mistake in the user's input.

It lives below both the command line (`fastres.cli`, which prints it as one line and exits 2)
and the subcommands that raise it, so that neither imports the other for it."""
from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""
