"""What any module of fastres may import, since it imports nothing of fastres: the error every
subcommand raises for a mistake in the user's input, the error of a weights file fastres cannot
convert or load, and an exception as one line.

`UserError` lives below both the command line (`fastres.cli`, which prints it as one line and
exits 2) and the subcommands that raise it, so that neither imports the other for it;
`WeightsError` below the conversion (`fastres.weights`) and the file reading it uses
(`fastres.checkpoint_file`).
`first_line` is what every catch-all in fastres reports (an error line, a record's reason, an
HTTP answer)."""
from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


class WeightsError(ValueError):
    """A weights file or state_dict that fastres cannot convert or load (nothing was loaded)."""


def first_line(exc: BaseException, *, typed: bool = True, last: bool = False, limit: int | None = 300) -> str:
    """`exc` as one line: the first non-blank line of its message (`last`: the last one, where
    the reason comes after an excerpt, as in triton's CompilationError), after its type's name
    where `typed`; the type's name alone for an empty message (a bare ``MemoryError()``), never
    an empty string. `limit` (None: no limit) cuts the result to that many characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    name = type(exc).__name__
    if not lines:
        text = name
    else:
        line = lines[-1] if last else lines[0]
        text = f"{name}: {line}" if typed else line
    return text if limit is None else text[:limit]


__all__ = ["UserError", "WeightsError", "first_line"]
