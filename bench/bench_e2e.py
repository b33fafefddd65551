"""End-to-end benchmark: resnet18 ... resnet152 at 224x224, fastres (CUDA-graphed) vs cuDNN
eager, cuDNN eager in a CUDA graph and torch.compile.

As a script (the same as `fastres bench e2e ...`):

    python bench/bench_e2e.py --models resnet50 --batches 1,8,32,64,128,256 --dtypes float16,bfloat16
    python bench/bench_e2e.py --max-autotune      # adds torch.compile(mode="max-autotune")
    python bench/bench_e2e.py --smoke             # through the interpreter, tiny shapes

As pytest-benchmark tests (device-synchronized timer; GPU only):

    pytest bench/bench_e2e.py --benchmark-only

Each system's logits are checked against the float32 model (TF32 off) before it is timed.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    from fastres.cli import run_subcommand

    sys.exit(run_subcommand("bench", ["e2e", *sys.argv[1:]]))

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import ON_GPU, run_rotating  # noqa: E402

from fastres.benchmark.environment import baseline_flags, l2_bytes  # noqa: E402
from fastres.benchmark.names import DTYPES  # noqa: E402
from fastres.benchmark.numerics import e2e_tolerance, rel_error  # noqa: E402
from fastres.benchmark.systems import GraphedModule, build_fastres, build_model, system_flags  # noqa: E402
from fastres.benchmark.timing import rotation_count  # noqa: E402

pytestmark = pytest.mark.skipif(
    not ON_GPU,
    reason="GPU only: one interpreter forward of resnet18 even at 32x32 takes seconds; "
    "`fastres bench --smoke` (tests/test_benchmark_cli.py) covers the end-to-end path on the CPU",
)

CASES = [("resnet50", 1), ("resnet50", 32), ("resnet50", 256), ("resnet18", 1), ("resnet18", 256)]
SYSTEMS = ("fastres", "cudnn-eager", "cudnn-eager-graph")
SIZE = 224


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache.clear()  # one model at a time on the device
            cache[name] = build_model(name, torch.device("cuda"), calib_size=64)
        return cache[name]

    return get


@pytest.mark.gpu
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("model_name, batch", CASES, ids=[f"{m}-b{b}" for m, b in CASES])
def test_e2e(model_name, batch, dtype_name, system, models, device, device_benchmark):
    dtype = DTYPES[dtype_name]
    model32 = models(model_name)
    n_sets, _ = rotation_count(batch * 3 * SIZE * SIZE * dtype.itemsize, l2_bytes(device), max_sets=16)
    gen = torch.Generator(device=device).manual_seed(batch)
    xs = [torch.randn(batch, 3, SIZE, SIZE, generator=gen, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
          for _ in range(n_sets)]
    eager = copy.deepcopy(model32).to(dtype=dtype, memory_format=torch.channels_last).eval()
    with torch.inference_mode(), baseline_flags():
        ref = model32(xs[0].float())
        torch_rel = rel_error(eager(xs[0]), ref)
    if system == "fastres":
        fn = build_fastres(model32, dtype, device)
    elif system == "cudnn-eager":
        fn = eager
    else:
        with torch.inference_mode(), baseline_flags():
            fn = GraphedModule(eager, xs[0])
    with torch.inference_mode(), system_flags(system):
        rel = rel_error(fn(xs[0]), ref)
    tol = e2e_tolerance(dtype_name, torch_rel, system=system)
    assert rel <= tol, f"{system} {model_name} b{batch} {dtype_name}: logits rel error {rel:.3e} > {tol:.1e} (not timed)"
    device_benchmark.group = f"{model_name} b{batch} {dtype_name}"
    device_benchmark.extra_info.update(model=model_name, batch=batch, dtype=dtype_name, system=system, rel_err=rel)
    with torch.inference_mode(), system_flags(system):
        run_rotating(device_benchmark, lambda i: fn(xs[i]), n_sets, rounds=30, warmup_rounds=5)
