"""Progress of long work on stderr: tqdm's bar on a terminal, else a plain line every few
seconds (what was done, the rate), which a log file or a CI console can show; a bar's
carriage returns would be one endless line there, or nothing at all.

The interval of those lines is ``$FASTRES_PROGRESS_INTERVAL`` seconds (default 5; 0: a line
per update), read when the progress starts.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import IO, Iterator

DEFAULT_INTERVAL_S = 5.0


def interval_s() -> float:
    """Seconds between two progress lines when stderr is not a terminal."""
    text = os.environ.get("FASTRES_PROGRESS_INTERVAL", "")
    try:
        value = float(text) if text.strip() else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S
    return max(0.0, value)


def is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return False


class Progress:
    """Counts `total` units of work: ``update(n)`` as they finish, as a context manager.

    enabled=False shows nothing. On a terminal (``stream``, default stderr) a tqdm bar; else
    ``"{desc}: {done}/{total} {unit}, {rate} {unit}/s, {elapsed} s"`` every ``interval_s()``
    seconds, checked at each update, and a last line at the end when any was printed.
    """

    def __init__(self, total: int, *, desc: str, unit: str, enabled: bool = True, stream: IO | None = None,
                 leave: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self._bar = None
        self._lines = False
        self._shown = -1  # `done` when the last line was printed (-1: none yet)
        if not enabled:
            return
        if is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, smoothing=0.1,
                             leave=leave)
        else:
            self._lines = True
            self._interval = interval_s()
            self._start = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines:
            now = time.perf_counter()
            if now - self._last >= self._interval:
                self._last = now
                self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        rate = f"{self.done / elapsed:.1f} {self.unit}/s" if elapsed > 0 else f"- {self.unit}/s"
        total = f"/{self.total}" if self.total else ""
        print(f"{self.desc}: {self.done}{total} {self.unit}, {rate}, "
              f"{elapsed:.0f} s", file=self.stream, flush=True)
        self._shown = self.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines:
            if self._shown >= 0 and self._shown != self.done:
                self._line(time.perf_counter())
            self._lines = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def heartbeat(text: str, stream: IO | None = None) -> Iterator[None]:
    """A step of unknown length: when `stream` (default stderr) is not a terminal, a line
    ``"{text}: still running, {n} s"`` every ``interval_s()`` seconds (at least 0.1 s)
    until the block ends; on a terminal, nothing (the caller shows the step itself)."""
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        yield
        return
    period, start, stop = max(0.1, interval_s()), time.perf_counter(), threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            print(f"{text}: still running, {time.perf_counter() - start:.0f} s", file=stream, flush=True)

    thread = threading.Thread(target=beat, name="fastres-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
