"""`fastres run`, the main job, end to end as a user runs it."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torchvision

from helpers import ON_GPU


def fastres(*args: str, timeout: int = 300, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_vars)
    env.pop("TRITON_INTERPRET", None)  # the CLI must choose the interpreter by itself
    return subprocess.run(
        [sys.executable, "-m", "fastres", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_run_end_to_end():
    r = fastres("run", "--arch", "resnet18", "--size", "40", "--batch", "2", FASTRES_PROGRESS_INTERVAL="0.2")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    if not ON_GPU:
        assert "no CUDA device" in out.splitlines()[0] and "interpreter" in out.splitlines()[0]
    assert "parity vs torchvision float64: rel L2" in out
    # The top-5 classes by name, as `fastres predict` names them, and index.
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    tops = [line.split("top-5 classes ", 1)[1] for line in out.splitlines() if "top-5 classes" in line]
    assert len(tops) == 2, out
    for top in tops:
        classes = re.findall(r"(?:^|, )(.+?) \((\d+)\)", top)
        assert len(classes) == 5 and all(categories[int(i)] == name for name, i in classes), top
    assert "time per batch" in out
    # Progress of the long steps goes to stderr; without a terminal, a line every interval.
    assert "first forward" in r.stderr
    assert re.search(r"^first forward .*: still running, \d+ s$", r.stderr, re.M), r.stderr
    assert re.search(r"^first forward .*: done in [\d.]+ s$", r.stderr, re.M), r.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "--batch", "0"], ["--batch"]),
        (["run", "--arch", "resnext50"], ["invalid choice"]),
        (["run", "--weights", "does-not-exist.safetensors"], ["no such file"]),
    ],
)
def test_run_user_errors_are_one_line(args, words):
    r = fastres(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.skipif(ON_GPU, reason="on a GPU bfloat16 runs")
def test_run_bf16_on_cpu_says_why():
    r = fastres("run", "--arch", "resnet18", "--size", "16", "--batch", "1", "--dtype", "bfloat16")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "11584" in r.stderr


def test_help_lists_subcommands():
    r = fastres("--help")
    assert r.returncode == 0
    for cmd in ("run", "convert", "bench", "check"):
        assert cmd in r.stdout


def test_run_plan_prints_the_schedule_without_running():
    r = fastres("run", "--plan", "--arch", "resnet50", "--batch", "3", "--size", "64")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("resnet50 schedule: input 3x3x64x64, float16 activations, 1000 classes")
    assert lines[-1].startswith("55 launches (16 with a fused residual")
    assert any(" layer4.2.conv3 " in line for line in lines)
    assert "parity" not in r.stdout and "first forward" not in r.stderr  # nothing ran


def test_run_plan_defaults_to_the_gpu_size():
    """A plan launches nothing: it is for 224x224, batch 8 by default, on a CPU too."""
    r = fastres("run", "--plan", "--arch", "resnet18")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0].startswith("resnet18 schedule: input 8x3x224x224, float16 activations"), r.stdout


def test_run_plan_int8_names_each_launch_dtype():
    """Every conv in int8, as fastres.quantize makes it by default; the head reads the codes and
    computes in float16. A plan launches nothing: nothing is calibrated either."""
    from fastres.plan import arch_convs
    from quant_helpers import launch_dtypes

    r = fastres("run", "--plan", "--dtype", "int8", "--arch", "resnet18", "--batch", "2", "--size", "32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("resnet18 schedule: input 2x3x32x32, int8 and float16 activations, 1000 classes")
    convs = [c.name for c in arch_convs("resnet18")]
    dtypes = launch_dtypes(r.stdout)
    assert list(dtypes) == [convs[0], "maxpool", *convs[1:], "fc"], r.stdout
    assert (dtypes.pop("conv1"), dtypes.pop("fc")) == ("int8(-->int8)", "f16(int8->-)")
    assert set(dtypes.values()) == {"int8(int8->int8)"}, dtypes
    assert "parity" not in r.stdout and "quantizing" not in r.stderr


def test_run_int8_against_the_reference_of_its_integer_math():
    """Random weights quantized on random batches, then the engine against the torch reference
    of its integer math on the same input: equal in the interpreter but for the rounding of
    the float16 logits (at most 2**-11 of each)."""
    r = fastres("run", "--dtype", "int8", "--arch", "resnet18", "--size", "32", "--batch", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"resnet18 \(random weights, int8\), int8 \(2[01] layers; float layers float16\), batch 2, 32x32", out), out
    assert "against the float model it stands for (float64): rel L2" in out
    parity = next(line for line in out.splitlines() if line.startswith("parity vs that reference: rel L2 "))
    assert "(bound 1e-02)" in parity and float(parity.split()[6]) <= (1e-2 if ON_GPU else 1e-3), parity
    assert len([line for line in out.splitlines() if "top-5 classes" in line]) == 2
    assert "quantizing to int8" in r.stderr
