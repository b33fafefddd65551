"""fastres.kernels.launch: launches run, or inside precompiling() compile ahead in parallel;
on a GPU an engine compiles every kernel of a new shape before its first launch."""
from __future__ import annotations

import pytest
import torch

import fastres
import fastres.kernels.launch as L
from fastres import kernels as K
from helpers import DEVICE, ON_GPU
from test_build import calibrated


class _FakeKernel:
    """Records how it was launched: kernel[grid](...) or kernel.warmup(..., grid=...)."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append(("run", grid, args, kwargs))

    def warmup(self, *args, grid, **kwargs):
        self.calls.append(("warmup", grid, args, kwargs))


def test_launch_runs_or_only_compiles():
    k = _FakeKernel()
    L.launch(k, (3, 1), 1, 2, BLOCK=16)
    token = L._warming_up.set(set())
    try:
        L.launch(k, (3, 1), 1, 2, BLOCK=16)
    finally:
        L._warming_up.reset(token)
    L.launch(k, (4,), 5)
    assert k.calls == [("run", (3, 1), (1, 2), {"BLOCK": 16}), ("warmup", (3, 1), (1, 2), {"BLOCK": 16}),
                       ("run", (4,), (5,), {})]


def test_forget_unfinished_drops_only_pending_compiles():
    class FutureKernel:  # what triton's JIT cache holds for a compile not finalized
        pass

    class Compiled:
        pass

    class Fn:
        def __init__(self):
            self.device_caches = {0: ({"a": FutureKernel(), "b": Compiled(), "c": FutureKernel()}, None)}

    f, g = Fn(), Fn()
    assert L.forget_unfinished([f]) == 2
    assert list(f.device_caches[0][0]) == ["b"] and len(g.device_caches[0][0]) == 3
    assert L.forget_unfinished([object()]) == 0  # a kernel without JIT caches (the interpreter's)


@pytest.mark.skipif(ON_GPU, reason="the interpreter's refusal")
def test_precompiling_refused_under_the_interpreter():
    assert not K.can_precompile()
    with pytest.raises(RuntimeError, match="not TRITON_INTERPRET"):
        with K.precompiling():
            pass


@pytest.mark.skipif(not ON_GPU, reason="compiles sm_90 kernels through the JIT: needs a GPU")
def test_engine_compiles_every_kernel_before_its_first_launch(monkeypatch):
    """With the JIT's in-memory caches emptied, every compile during a new shape's build is a
    warm-up (ahead, in parallel); none happens at a launch."""
    from triton.runtime.jit import JITFunction

    from fastres.gate.compile import KERNEL_FN, kernel_fn

    fns = {kernel_fn(k) for k in KERNEL_FN}
    if not all(hasattr(fn, "device_caches") for fn in fns):
        pytest.skip("this triton keeps its JIT cache elsewhere")
    for fn in fns:
        fn.device_caches.clear()
    seen = []
    original = JITFunction._do_compile

    def recording(self, *args, **kwargs):
        seen.append((self.fn.__name__, kwargs["warmup"] if "warmup" in kwargs else args[-1]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(JITFunction, "_do_compile", recording)
    fast = fastres.from_torchvision(calibrated("resnet50"), dtype=torch.float16, device=DEVICE)
    fast(torch.randn(1, 3, 64, 64, device=DEVICE))
    assert seen, "nothing compiled: the caches were not emptied"
    late = sorted({name for name, warmup in seen if not warmup})
    assert not late, f"kernels compiled at their first launch: {late}"
