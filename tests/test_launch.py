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


def _tma_launch_in(runner) -> tuple[bool, bool, torch.Tensor]:
    """In the thread or context `runner` gives: (allocator before, after, the output) of one
    TMA launch (the 1x1 conv on the tma variant)."""
    from helpers import rand_nhwc

    x = rand_nhwc(1, 32, 4, 4, dtype=torch.float32, device=DEVICE)
    w = rand_nhwc(16, 32, 1, 1, dtype=torch.float32, device=DEVICE, scale=32 ** -0.5)
    b = torch.zeros(16, device=DEVICE)

    def body():
        before = L.has_tma_allocator()
        y = K.conv1x1(x, w, b, config=K.Config(16, 16, 16, 4, 1, variant="tma"))
        if y.is_cuda:
            torch.cuda.synchronize()
        return before, L.has_tma_allocator(), y

    return runner(body)


def _in_thread(fn):
    import threading

    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    assert out, "the launch raised in its thread"
    return out[0]


def _in_executor(fn):
    import asyncio

    async def main():
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    return asyncio.run(main())


def _in_task(fn):
    import asyncio

    import contextvars

    async def main():  # a task (and to_thread) runs in a copy of the context it was made in
        return await asyncio.create_task(asyncio.to_thread(fn))

    # from a context where no launch has run yet (this thread's own may have one)
    return contextvars.Context().run(asyncio.run, main())


@pytest.mark.parametrize("runner", [_in_thread, _in_executor, _in_task], ids=["thread", "executor", "task"])
def test_tma_launch_sets_the_allocator_in_every_thread(runner):
    """triton keeps its allocator in a ContextVar: a fresh thread, an executor's worker and an
    asyncio task each start without it, and each TMA launch sets it where it runs (on a GPU
    the launch would otherwise fail with "no allocator was set")."""
    before, after, y = _tma_launch_in(runner)
    assert not before, "a fresh thread should start with triton's null allocator"
    assert after, "the TMA launch left its thread without an allocator"
    assert torch.isfinite(y).all()


def test_tma_allocator_keeps_the_callers_own():
    import contextvars

    import triton

    def mine(size, alignment, stream):
        return torch.empty(size, device="cuda", dtype=torch.int8)

    def body():
        triton.set_allocator(mine)
        L.ensure_tma_allocator()
        return L._current_allocator()

    assert contextvars.Context().run(body) is mine
