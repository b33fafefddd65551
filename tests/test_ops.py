"""fastres.ops: a fastres engine inside torch.compile (fullgraph, no graph break, no
recompilation at a fixed shape) and torch.export (a program calling fastres.forward)."""
from __future__ import annotations

import gc

import pytest
import torch
import torchvision
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters
from torchvision.models._utils import IntermediateLayerGetter

import fastres
from fastres import ops
from helpers import DEVICE, assert_close, calibrate_


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
