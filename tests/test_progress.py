"""fastres.progress: a bar on a terminal, plain lines every few seconds elsewhere."""
from __future__ import annotations

import io
import re
import time

from fastres.progress import DEFAULT_INTERVAL_S, Progress, heartbeat, interval_s


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_without_a_terminal(monkeypatch):
    monkeypatch.setenv("FASTRES_PROGRESS_INTERVAL", "0")
    log = io.StringIO()
    with Progress(3, desc="classifying", unit="img", stream=log) as bar:
        for _ in range(3):
            bar.update()
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"classifying: {i}/3 img" for i in (1, 2, 3)], lines
    assert all(re.fullmatch(r"classifying: \d/3 img, [\d.]+ img/s, \d+ s", line) for line in lines), lines
    assert "\r" not in log.getvalue()


def test_lines_every_interval_and_a_last_one(monkeypatch):
    monkeypatch.setenv("FASTRES_PROGRESS_INTERVAL", "0.05")
    log = io.StringIO()
    with Progress(100, desc="classifying", unit="img", stream=log) as bar:
        for _ in range(100):
            bar.update()  # 100 updates in far less than 0.05 s...
        time.sleep(0.06)
        bar.update()  # ...then one after the interval: one line
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["classifying: 101/100 img"], lines
    log = io.StringIO()
    with Progress(4, desc="x", unit="conv", stream=log) as bar:
        time.sleep(0.06)
        bar.update()
        bar.update(3)
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == ["x: 1/4 conv", "x: 4/4 conv"]


def test_a_bar_on_a_terminal_and_nothing_when_disabled(monkeypatch):
    monkeypatch.setenv("FASTRES_PROGRESS_INTERVAL", "0")
    tty = Terminal()
    with Progress(2, desc="classifying", unit="img", stream=tty) as bar:
        bar.update(2)
    assert "\r" in tty.getvalue() and "2/2" in tty.getvalue()
    quiet = io.StringIO()
    with Progress(2, desc="classifying", unit="img", stream=quiet, enabled=False) as bar:
        bar.update(2)
    assert quiet.getvalue() == "" and bar.done == 2


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("FASTRES_PROGRESS_INTERVAL", raising=False)
    assert interval_s() == DEFAULT_INTERVAL_S
    for text, value in (("2.5", 2.5), ("0", 0.0), ("-1", 0.0), ("soon", DEFAULT_INTERVAL_S)):
        monkeypatch.setenv("FASTRES_PROGRESS_INTERVAL", text)
        assert interval_s() == value


def test_heartbeat(monkeypatch):
    monkeypatch.setenv("FASTRES_PROGRESS_INTERVAL", "0.1")
    log = io.StringIO()
    with heartbeat("first forward", stream=log):
        time.sleep(0.35)
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and all(re.fullmatch(r"first forward: still running, \d+ s", x) for x in lines), lines
    tty = Terminal()
    with heartbeat("first forward", stream=tty):
        time.sleep(0.15)
    assert tty.getvalue() == ""
