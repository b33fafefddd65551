"""fastres.errors.first_line: every catch-all's one line, an empty message included."""
from __future__ import annotations

from fastres.errors import first_line


def test_first_line():
    exc = ValueError("\n  bad input \nsecond line\n")
    assert first_line(exc) == "ValueError: bad input"
    assert first_line(exc, typed=False) == "bad input"
    assert first_line(exc, last=True) == "ValueError: second line"
    assert first_line(ValueError("x" * 500)) == ("ValueError: " + "x" * 500)[:300]
    assert first_line(ValueError("x" * 500), limit=None) == "ValueError: " + "x" * 500


def test_an_empty_message_gives_the_type():
    for exc in (MemoryError(), RuntimeError(""), KeyboardInterrupt(" \n ")):
        name = type(exc).__name__
        assert first_line(exc) == first_line(exc, typed=False) == first_line(exc, last=True) == name
