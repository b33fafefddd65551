"""fastres.ops: a fastres engine inside torch.compile (fullgraph, no graph break, no
recompilation at a fixed shape) and torch.export (a program calling fastres.forward)."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters
from torchvision.models._utils import IntermediateLayerGetter

import fastres
from fastres import ops
from helpers import DEVICE, assert_close, calibrate_

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Around(torch.nn.Module):
    """A model holding a fastres trunk between torch ops (as a detector holds its backbone)."""

    def __init__(self, trunk):
        super().__init__()
        self.trunk = trunk
        self.head = torch.nn.Conv2d(128, 5, 1).to(DEVICE)

    def forward(self, x):
        feats = self.trunk(x * 2.0)
        return self.head(feats["c2"]).mean((2, 3)) + feats["c1"].amax((1, 2, 3))[:, None]


@pytest.fixture(scope="module")
def around():
    torch.manual_seed(0)
    tv = calibrate_(torchvision.models.resnet18(num_classes=4))
    getter = IntermediateLayerGetter(tv, {"layer1": "c1", "layer2": "c2"}).eval()
    return _Around(fastres.from_torchvision(getter, dtype=torch.float32, device=DEVICE)).eval()


def test_fullgraph_compile_one_graph_no_recompile(around):
    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("aot_eager")  # AOTAutograd runs the op's fake implementation
    compiled = torch.compile(around, backend=backend, fullgraph=True)
    x = torch.randn(1, 3, 16, 16, device=DEVICE)
    with torch.no_grad():
        assert_close(compiled(x), around(x), 1e-5, what="compiled")
        compiled(torch.randn(1, 3, 16, 16, device=DEVICE))
    assert backend.frame_count == 1, "recompiled at a fixed shape"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert any(n.target is torch.ops.fastres.forward.default for n in backend.graphs[0].graph.nodes) or (
        "fastres.forward" in backend.graphs[0].code)


def test_inductor(around):
    torch._dynamo.reset()
    compiled = torch.compile(around, fullgraph=True)
    x = torch.randn(1, 3, 16, 16, device=DEVICE)
    with torch.no_grad():
        assert_close(compiled(x), around(x), 1e-5, what="inductor")


def test_fake_shapes_match_the_engine(around):
    trunk = around.trunk
    x = torch.randn(1, 3, 37, 30, device=DEVICE)
    real = [tuple(t.shape) for t in trunk(x).values()]
    assert ops.output_shapes(trunk, x.shape) == real == [(1, 64, 10, 8), (1, 128, 5, 4)]


def test_export_calls_the_op(around):
    x = torch.randn(1, 3, 16, 16, device=DEVICE)
    program = torch.export.export(around, (x,))
    assert any(n.target is torch.ops.fastres.forward.default for n in program.graph.nodes)
    with torch.no_grad():
        assert_close(program.module()(x), around(x), 1e-6, what="exported")


def test_the_op_fails_clearly_without_its_engine():
    fast = fastres.from_torchvision(calibrate_(torchvision.models.resnet18(num_classes=3)), dtype=torch.float32,
                                    device=DEVICE)
    handle = fast._op_handle
    del fast
    gc.collect()
    with pytest.raises(RuntimeError, match=f"no fastres engine with handle {handle}"):
        torch.ops.fastres.forward(torch.randn(1, 3, 16, 16, device=DEVICE), handle)


# torch 2.6-2.8 as fastres meets them: no torch.Tag.cudagraph_unsafe (2.9), no
# torch.compiler.is_exporting (2.7). The child removes the tag before fastres is imported, and
# is_exporting for the forward (this torch's own internals call it: building the engine needs it).
_OLD_TORCH_CHILD = textwrap.dedent("""
    import sys
    import torch, torchvision
    del torch.Tag.cudagraph_unsafe
    assert not hasattr(torch.Tag, "cudagraph_unsafe")
    import fastres
    sys.path.insert(0, "tests")
    from helpers import assert_close, calibrate_
    torch.manual_seed(0)
    model = calibrate_(torchvision.models.resnet18(num_classes=3))
    fast = fastres.from_torchvision(model, dtype=torch.float32, device="cpu")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        is_exporting = torch.compiler.is_exporting
        del torch.compiler.is_exporting
        out = fast(x)
        torch.compiler.is_exporting = is_exporting
    assert_close(out, ref, 1e-5, what="forward")
    print("ok", any("cudagraph_unsafe" in str(t) for t in torch.ops.fastres.forward.default.tags))
""")


def test_torch_without_the_newer_apis():
    """Where torch has neither torch.Tag.cudagraph_unsafe nor torch.compiler.is_exporting (the
    declared floor, torch 2.6, has neither), fastres imports, builds an engine and runs a
    forward: the op is then untagged."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
               TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", _OLD_TORCH_CHILD], capture_output=True, text=True, env=env,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "ok False", run.stdout


@pytest.mark.skipif(not hasattr(torch.Tag, "cudagraph_unsafe"),
                    reason="torch < 2.9 has no cudagraph_unsafe tag: test_torch_without_the_newer_apis covers it")
def test_the_op_is_tagged_where_torch_has_the_tag():
    assert torch.Tag.cudagraph_unsafe in torch.ops.fastres.forward.default.tags


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor's CUDA graphs need a CUDA device")
def test_reduce_overhead_gives_the_eager_results(around):
    """mode="reduce-overhead": the op stays out of inductor's CUDA graphs (torch >= 2.9), so
    the compiled model gives the eager results on its warm-up, recording and replaying calls,
    for new inputs each time; an engine with CUDA graphs of its own refuses to run inside a
    capture, saying so."""
    torch._dynamo.reset()
    compiled = torch.compile(around, mode="reduce-overhead", fullgraph=True)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(2, 3, 32, 32, generator=gen).to(DEVICE)
            want = around(x).clone()
            got = compiled(x).clone()
            torch.cuda.synchronize()
            assert_close(got, want, 1e-5, what="reduce-overhead")
    graph, trunk = torch.cuda.CUDAGraph(), around.trunk
    x = torch.randn(1, 3, 32, 32, device=DEVICE)
    trunk(x)
    with pytest.raises(RuntimeError, match="cannot run inside a CUDA graph capture"):
        with torch.no_grad(), torch.cuda.graph(graph):
            trunk(x)
