"""A fastres engine inside torch.compile and torch.export: its whole forward is one custom op.

`torch.ops.fastres.forward(x, handle) -> list[Tensor]` runs the engine registered under
`handle` (every `fastres.ResNet` registers itself when built; the registry holds it weakly).
Its fake implementation gives the output shapes from the architecture alone, so dynamo and
AOTAutograd trace through it without running a kernel: a model holding a fastres engine
compiles with `fullgraph=True`, no graph break, and the engine's Triton launches, arenas and
CUDA graphs stay its own, opaque to inductor.

- `mode="default"` (and "max-autotune-no-cudagraphs"): fastres captures and replays its own
  CUDA graph per input shape inside the op, as it does eagerly.
- `mode="reduce-overhead"`: on torch >= 2.9 the op is tagged `cudagraph_unsafe`, so
  inductor's CUDA graphs never record it (a capture of fastres' own capture or replay is not
  what it is meant to do): inductor leaves the graph that holds it uncaptured (or, with graph
  partitioning, captures only the partitions around it); fastres' own graph still runs inside
  the op. torch 2.6-2.8 have no such tag: there inductor may try to record the op, and the
  engine refuses to run inside a CUDA graph capture with a RuntimeError saying so (use
  mode="default" there). Only a GPU can run this: tests/test_ops.py's gpu-marked test checks
  that a compiled model under "reduce-overhead" gives the eager logits across repeated calls
  and new inputs; the CPU tiers never run it.
- `torch.export.export` yields a program that calls `fastres.forward` with the engine's
  handle as a constant. The handle names an engine of this process only: running the
  program where no engine has it raises a RuntimeError saying so (export the model around a
  fastres engine to look at or transform it in this process, not to ship it).
"""
from __future__ import annotations

import itertools
import threading
import weakref

import torch

from .kernels._checks import out_size
from .plan import arch_blocks

_ENGINES: "weakref.WeakValueDictionary[int, torch.nn.Module]" = weakref.WeakValueDictionary()
_NEXT = itertools.count(1)
_LOCK = threading.Lock()


def register(engine: torch.nn.Module) -> int:
    """A fresh handle for `engine` (held weakly: it goes when the engine goes)."""
    with _LOCK:
        handle = next(_NEXT)
        _ENGINES[handle] = engine
    return handle


def _engine(handle: int):
    engine = _ENGINES.get(int(handle))
    if engine is None:
        raise RuntimeError(f"fastres.forward: no fastres engine with handle {handle} in this process (a program "
                           "exported or compiled elsewhere, or an engine since freed, cannot run here)")
    return engine


def output_shapes(engine, shape) -> list[tuple]:
    """The shapes the engine returns for an input of `shape` [N, 3, H, W], computed from its
    convs' geometry (plain integer arithmetic, so symbolic sizes pass through)."""
    n, _, h, w = shape
    stem, blocks = arch_blocks(engine._arch, engine.dilate, engine.depth)
    points = {}
    for c in stem:
        h, w = out_size(h, c.k, c.stride, c.pad, c.dilation), out_size(w, c.k, c.stride, c.pad, c.dilation)
    points["stem"] = (n, stem[-1].cout, h, w)
    h, w = out_size(h, 3, 2, 1), out_size(w, 3, 2, 1)
    points["maxpool"] = (n, stem[-1].cout, h, w)
    for b in blocks:
        for c in b.convs:
            h, w = out_size(h, c.k, c.stride, c.pad, c.dilation), out_size(w, c.k, c.stride, c.pad, c.dilation)
        points[b.name.split(".")[0]] = (n, b.convs[-1].cout, h, w)
    if engine.returns is None:
        return [(n, engine.num_classes)]
    return [points[layer] for layer, _ in engine.returns]


# torch.Tag.cudagraph_unsafe first shipped in torch 2.9; older ones run the op untagged.
_TAGS = (torch.Tag.cudagraph_unsafe,) if hasattr(torch.Tag, "cudagraph_unsafe") else ()


@torch.library.custom_op("fastres::forward", mutates_args=(), tags=_TAGS)
def forward(x: torch.Tensor, handle: int) -> list[torch.Tensor]:
    """The engine's forward: [logits] for a classifier, a trunk's features in its order."""
    engine = _engine(handle)
    out = engine.eager_forward(x)
    return [out] if isinstance(out, torch.Tensor) else list(out.values())


@forward.register_fake
def _forward_fake(x: torch.Tensor, handle: int) -> list[torch.Tensor]:
    engine = _engine(handle)
    engine._check_input(x, dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64), fake=True)
    outs = []
    for shape in output_shapes(engine, x.shape):
        if len(shape) == 4:
            outs.append(x.new_empty(shape).contiguous(memory_format=torch.channels_last))
        else:
            outs.append(x.new_empty(shape))
    return outs


def tracing() -> bool:
    """Whether torch.compile or torch.export is tracing the caller. torch 2.6 has no
    `torch.compiler.is_exporting` (2.7 added it); its `is_compiling` covers torch.export too,
    as its documentation says."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.compiler.is_compiling() or (is_exporting is not None and is_exporting())


def traced_forward(engine, x: torch.Tensor):
    """What the engine's forward is while torch.compile or torch.export traces it: the op."""
    outs = torch.ops.fastres.forward(x, engine._op_handle)
    if engine.returns is None:
        return outs[0]
    import collections

    return collections.OrderedDict((name, t) for (_, name), t in zip(engine.returns, outs))
