"""Per-layer benchmark: every distinct conv of ResNet-50 and ResNet-18, the fastres kernel vs
cuDNN's fused eager (F.conv2d + bias + add + ReLU) vs F.conv2d alone.

As a script (the same as `fastres bench layers ...`):

    python bench/bench_conv.py --models resnet50 --batches 1,32,256 --dtypes float16
    python bench/bench_conv.py --smoke          # through the interpreter, tiny shapes

As pytest-benchmark tests (per-kernel latencies, device-synchronized timer):

    pytest bench/bench_conv.py --benchmark-only

On a GPU: every distinct ResNet-50 conv at batch 32 in float16 and bfloat16, fastres and
cudnn-eager, each checked against a float32 reference before it is timed. Without a GPU: two
small convs through the interpreter in float32 (the numbers only show that the path works).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    from fastres.cli import run_subcommand

    sys.exit(run_subcommand("bench", ["layers", *sys.argv[1:]]))

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import ON_GPU, run_rotating  # noqa: E402

from fastres.benchmark.environment import l2_bytes  # noqa: E402
from fastres.benchmark.geometry import conv_layers  # noqa: E402
from fastres.benchmark.layer_calls import layer_callable, layer_inputs, layer_reference  # noqa: E402
from fastres.benchmark.names import DTYPES as DTYPE_BY_NAME  # noqa: E402
from fastres.benchmark.numerics import LAYER_TOL, rel_error  # noqa: E402
from fastres.benchmark.systems import system_flags  # noqa: E402
from fastres.benchmark.timing import rotation_count  # noqa: E402

if ON_GPU:
    LAYERS = conv_layers("resnet50", 224)
    BATCH, DTYPES, SYSTEMS, ROUNDS, WARMUP = 32, ("float16", "bfloat16"), ("fastres", "cudnn-eager"), 200, 20
else:
    # the interpreter: a 3x3 with residual and the strided 1x1 projection of resnet18 at 32x32
    _small = {l.name: l for l in conv_layers("resnet18", 32)}
    LAYERS = [_small["3x3/1 64->64 @8x8 +res relu"], _small["1x1/2 64->128 @8x8"]]
    BATCH, DTYPES, SYSTEMS, ROUNDS, WARMUP = 1, ("float32",), ("fastres", "cudnn-eager"), 2, 0


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: l.name.replace(" ", "_"))
def test_layer(layer, dtype_name, system, device, device_benchmark):
    dtype = DTYPE_BY_NAME[dtype_name]
    n_sets, _ = rotation_count(layer.bytes(BATCH, dtype.itemsize), l2_bytes(device), max_sets=16)
    gen = torch.Generator(device=device).manual_seed(len(layer.name) * 1000 + BATCH)
    sets = layer_inputs(layer, BATCH, dtype, device, n_sets, gen)
    fn = layer_callable(system, layer, sets)
    ref = layer_reference(layer, sets[0], fused=True, device=device)
    sets[0].out.fill_(float("nan"))
    with torch.inference_mode(), system_flags(system):
        rel = rel_error(fn(0), ref)
    assert rel <= LAYER_TOL[dtype_name], f"{system} {layer.name} {dtype_name}: rel error {rel:.3e} (not timed)"
    device_benchmark.group = f"{layer.name} b{BATCH} {dtype_name}"
    device_benchmark.extra_info.update(
        layer=layer.name, batch=BATCH, dtype=dtype_name, system=system, gflop=layer.flops(BATCH) / 1e9, rel_err=rel
    )
    with torch.inference_mode(), system_flags(system):
        run_rotating(device_benchmark, fn, n_sets, rounds=ROUNDS, warmup_rounds=WARMUP)
