"""Shared data for the benchmark harness tests: a results environment, synthetic records and
results, and a smoke run that logs nothing."""
from __future__ import annotations

import torch

from fastres.benchmark.environment import environment
from fastres.benchmark.results import add_record, new_results, open_results, results_path
from fastres.benchmark.run import Run
from fastres.benchmark.timing import SMOKE_TIMING, Budget


def fake_env(**kw):
    env = {"device": "NVIDIA H100 80GB HBM3", "card": "h100-sxm", "date": "2026-01-02", "commit": "abc123", "dirty": False,
           "torch": "2.11.0", "triton": "3.6.0", "cuda": "13.0", "cudnn": 91000, "smoke": False}
    env.update(kw)
    return env


def e2e_record(system, batch, ms, dtype="float16", model="resnet50", **kw):
    r = {"kind": "e2e", "model": model, "batch": batch, "dtype": dtype, "system": system, "size": 224,
         "median_ms": ms, "images_per_s": batch / (ms * 1e-3) if ms else None, "status": "ok", "p10_ms": ms, "p90_ms": ms}
    r.update(kw)
    return r


def synthetic_results(smoke=False):
    res = new_results(fake_env(smoke=smoke))
    res["peaks"] = {"matmul_tflops": {"float16": 790.0}, "copy_tb_s": 3.0, "note": "8192^3 matmul"}
    for batch, f_ms, e_ms in ((1, 1.0, 2.0), (32, 4.0, 5.0)):
        add_record(res, e2e_record("fastres", batch, f_ms))
        add_record(res, e2e_record("cudnn-eager", batch, e_ms, fastres_speedup=e_ms / f_ms))
    add_record(res, e2e_record("cudnn-eager-graph", 1, None, status="wrong", rel_err=3.1e-2, images_per_s=None))
    add_record(res, e2e_record("torch-compile", 1, None, status="skipped", reason="needs CUDA", images_per_s=None))
    for system, ms in (("fastres", 0.010), ("cudnn-eager", 0.012), ("cudnn-conv", 0.008)):
        add_record(res, {"kind": "layer", "model": "resnet50", "layer": "3x3/1 64->64 @56x56 relu", "batch": 1,
                         "dtype": "float16", "system": system, "size": 224, "median_ms": ms, "images_per_s": 1 / (ms * 1e-3),
                         "tflops": 0.231 / ms / 1e3 * 1e3, "pct_peak": 3.0, "uses": ["layer1.0.conv2", "layer1.1.conv2"],
                         "status": "ok"})
    return res


def smoke_run(tmp_path, device: torch.device = torch.device("cpu"), budget: float | None = None) -> Run:
    """A smoke run on `device` writing into `tmp_path`, logging nothing. Pass the test device
    wherever fastres kernels run: on a GPU machine they refuse CPU tensors (the interpreter is
    off there); the CPU default is for stand-in systems that are plain torch."""
    env = environment(device, smoke=True)
    path = results_path(tmp_path, env)
    return Run(device, True, path, open_results(path, env), SMOKE_TIMING, Budget(budget), log=lambda s: None)
