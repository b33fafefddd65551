"""Test set-up: the device, the interpreter, the shared assert_close and model builders.

On a machine without CUDA the kernels run through triton's interpreter; TRITON_INTERPRET must
be set before triton is first imported, which is why it happens here at import time.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import assert_close, DEVICE  # noqa: E402  (after TRITON_INTERPRET)


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture(autouse=True)
def _seed(request):
    """Fresh inputs per test, reproducible: seed from the test's id."""
    import zlib

    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


__all__ = ["assert_close", "DEVICE"]


_PARITY: list[str] = []


@pytest.fixture
def parity_report() -> list[str]:
    """Lines appended here are printed in the terminal summary (network parity figures)."""
    return _PARITY


def pytest_terminal_summary(terminalreporter):
    if _PARITY:
        terminalreporter.section("fastres parity against torchvision (float64 reference)")
        for line in _PARITY:
            terminalreporter.write_line(line)


# -- the local Ray cluster of the scale tests (tests/scale_helpers.py) --------------------------

@pytest.fixture
def ray_cluster(tmp_path_factory):
    """The local Ray cluster, started by the first test that asks for it (a skip without ray)."""
    from scale_helpers import CLUSTER

    return CLUSTER.start(tmp_path_factory.getbasetemp())


def _needs_ray(item) -> bool:
    return "ray_cluster" in item.fixturenames or item.path.name.startswith("test_scale_")


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the cluster once no test that may need it comes next (after the module fixtures'
    teardown, hence trylast): kept across the test_scale_* files, started once for them all;
    stopped after them, since idle its processes would still take CPU time from the rest."""
    import sys

    helpers = sys.modules.get("scale_helpers")
    if helpers is None or not helpers.CLUSTER.running:
        return
    if nextitem is None or not _needs_ray(nextitem):
        left = helpers.CLUSTER.stop()
        assert not left, f"Ray processes still alive after ray.shutdown(): {left}"


# The compile gate's long runs start as soon as their tests are collected and those tests run
# last, so that the compiles overlap the interpreter tests (tests/gate_helpers.py).
_BACKGROUND = {"test_gate_run.py": "gate_all", "test_gate_triton36.py": "triton36"}


def pytest_itemcollected(item):
    """Every test of the compile gate (tests/test_gate_*.py) is marked `gate`, so that
    `-m "not gate"` runs the interpreter tier alone."""
    if item.path.name.startswith("test_gate_"):
        item.add_marker(pytest.mark.gate)


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected: start only what will run
def pytest_collection_modifyitems(session, config, items):
    from pathlib import Path

    last = [i for i in items if Path(str(i.fspath)).name in _BACKGROUND]
    if not last:
        return
    items[:] = [i for i in items if i not in last] + last
    from gate_helpers import start_background

    for name in sorted({_BACKGROUND[Path(str(i.fspath)).name] for i in last}):
        start_background(name)


def pytest_sessionfinish(session, exitstatus):
    from gate_helpers import stop_background

    stop_background()
