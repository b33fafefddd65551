"""The systems a bench run compares, built: torchvision's model with calibrated BN, the fastres
engine, eager captured in a CUDA graph, torch.compile, and the torch.backends flags each one
runs under.

End to end, ``fastres`` is the engine (CUDA-graphed), ``cudnn-eager`` torchvision (channels_last,
cast to the dtype, ``cudnn.benchmark=True``, ``torch.inference_mode()``), ``cudnn-eager-graph``
the same captured in one CUDA graph and ``torch-compile`` its default mode (``--max-autotune``
adds ``torch-compile-max-autotune``). In int8 and float8_e4m3fn ``fastres`` is the engine
``fastres.quantize`` makes (fastres.benchmark.quantized), its build time its calibration's.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch

from ..precision import QUANT_DTYPES
from .environment import baseline_flags
from .names import MAX_AUTOTUNE_SYSTEM
from .quantized import build_quantized
from .timing import sync


def build_model(name: str, device: torch.device, *, calib_size: int, seed: int = 0) -> torch.nn.Module:
    """torchvision's `name` with random weights and calibrated BN, float32, eval, on `device`."""
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None).to(device)
    from ..models import calibrate_

    return calibrate_(model, size=(calib_size, calib_size), seed=seed)


class GraphedModule:
    """`module` captured in one CUDA graph for one input shape; a call copies the input into
    the static buffer and replays."""

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, warmup: int = 3):
        self.static_x = example.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                module(self.static_x)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_y = module(self.static_x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_y


# `fastres bench --tune`: the fastres system tunes each conv's tile config on its first forward
# (fastres.tuning; the tuning time is in `first_call_s`, never in the timed calls).
FASTRES_OPTIONS = {"tune": False}


def build_fastres(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fastres engine for `model` (CUDA-graphed on a GPU)."""
    import fastres

    tune = FASTRES_OPTIONS["tune"] and device.type == "cuda"
    return fastres.from_torchvision(model, dtype=dtype, cuda_graph=device.type == "cuda", tune=tune)


def system_flags(system: str) -> contextlib.AbstractContextManager:
    """The torch.backends flags `system` runs under: fastres its own, every baseline baseline_flags()."""
    return contextlib.nullcontext() if system == "fastres" else baseline_flags()


def e2e_system(system: str, model32: torch.nn.Module, eager: torch.nn.Module, dtype: torch.dtype, device: torch.device,
               example: torch.Tensor, built: dict[str, object]) -> tuple[Callable, float]:
    """The callable for `system` (built once per dtype, graphs once per shape) and build time
    (8-bit fastres: also in built["quantize_s"])."""
    t = time.perf_counter()
    if system == "fastres":
        if "fastres" not in built and dtype in QUANT_DTYPES:
            built["fastres"] = build_quantized(model32, dtype, device, tuple(example.shape[2:]))
            built["quantize_s"] = round(time.perf_counter() - t, 3)
        elif "fastres" not in built:
            built["fastres"] = build_fastres(model32, dtype, device)
        fn = built["fastres"]
    elif system == "cudnn-eager":
        fn = eager
    elif system == "cudnn-eager-graph":
        with torch.inference_mode(), baseline_flags():
            built[system] = GraphedModule(eager, example)
        fn = built[system]
    elif system in ("torch-compile", MAX_AUTOTUNE_SYSTEM):
        if system not in built:
            mode = "max-autotune" if system == MAX_AUTOTUNE_SYSTEM else None
            built[system] = torch.compile(eager, mode=mode, dynamic=False)
        fn = built[system]
    else:
        raise ValueError(f"unknown system {system!r}")
    return fn, time.perf_counter() - t


def first_checked_call(system: str, fn: Callable, x: torch.Tensor, device: torch.device, first_s: float,
                       error: Callable) -> tuple[float, float]:
    """Run `system`'s fn(x) once under its flags, to completion: (the first call's seconds,
    `first_s` of building it included; error(output) against the reference)."""
    with torch.inference_mode(), system_flags(system):
        t = time.perf_counter()
        out = fn(x)
        sync(device)
        first_s += time.perf_counter() - t
        rel = error(out)
        del out
    return first_s, rel
