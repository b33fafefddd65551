"""fastres.gate.variants: the launches each kernel is compiled for are the launches the engine
makes, which rows need the tensor cores, and which configs the engine can dispatch."""
from __future__ import annotations

import pytest
import torch

from fastres.gate.compile import CONFIG_META, arg_names, specialize
from fastres.gate.variants import DTYPES, dispatchable, variants, wgmma_required
from fastres.kernels.config import KERNELS, Config, config_space
from gate_helpers import DTYPE_NAMES


def test_dispatchable_drops_k_steps_wider_than_the_layer():
    import dataclasses

    body = next(v for v in variants("conv", "float16") if v.name.startswith("3x3"))
    thin = dataclasses.replace(body, gemm_k=3)  # a layer reducing over 3 channels only
    assert dispatchable("conv", Config(64, 64, 16, 4, 4), thin)
    assert not dispatchable("conv", Config(64, 64, 32, 4, 4), thin)
    assert dispatchable("conv", Config(64, 64, 64, 4, 4), body)
    # the stem's flat K (7*7*3 = 147) takes every K step
    stem = next(v for v in variants("conv_stem", "float16") if v.name.startswith("7x7"))
    assert stem.gemm_k == 147 and dispatchable("conv_stem", Config(128, 128, 64, 4, 3), stem)
    # every config of the space is compiled for some variant
    for dt in DTYPE_NAMES.values():
        for k in KERNELS:
            for cfg in config_space(k, DTYPES[dt]):
                assert any(dispatchable(k, cfg, v) for v in variants(k, dt)), (k, cfg, dt)


def test_wgmma_required():
    assert wgmma_required("conv", torch.float16, "ieee")
    assert wgmma_required("conv1x1", "float32", "tf32")
    assert not wgmma_required("avgpool", "float16", None)
    assert not wgmma_required("max_pool2d", "float16", None)


# -- the gate compiles what the launchers launch ---------------------------------------------

def _recorded_launches(monkeypatch, call) -> list[tuple]:
    """(kernel, {argument: value}) of every launch `call` makes, with the GPU heuristic's
    configs; nothing runs."""
    import fastres.kernels.config as config_mod
    from fastres.kernels import conv, gemm1x1, head, splitk

    monkeypatch.setattr(config_mod, "interpreting", lambda: False)
    # The launches are recorded, never run, so CPU tensors stand in for device ones on every
    # machine: the launchers' device check accepts them only under the interpreter, and on a
    # GPU machine it is off. The configs stay those planned for 132 SMs, the gate's target,
    # whatever GPU this is.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    seen = []

    def record(kernel, grid, *args, **kwargs):
        names = arg_names(kernel)
        seen.append((kernel, {**dict(zip(names, args)), **kwargs}))

    for module in (conv, gemm1x1, head, splitk):
        monkeypatch.setattr(module, "launch", record)
    call()
    return seen


def _jit_class(v):
    """What the JIT specializes an argument on: a pointer's dtype, an int's == 1 and % 16."""
    if isinstance(v, torch.Tensor):
        return ("ptr", {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[v.dtype])
    if isinstance(v, bool) or not isinstance(v, int):
        return ("const", v)
    return ("int", v == 1, v % 16 == 0)


def _gate_class(kernel_name: str, variant_name: str, config, fn) -> dict:
    v = next(v for v in variants(kernel_name, "float16") if v.name == variant_name)
    signature, constexprs, attrs, _ = specialize(fn, config, "float16", v)
    names = arg_names(fn)
    out = {}
    for i, name in enumerate(names):
        ty = signature[name]
        if ty.startswith("*"):
            out[name] = ("ptr", ty[1:])
        elif ty == "constexpr":
            value = constexprs[(i,)]
            out[name] = ("int", True, False) if value == 1 and not isinstance(value, bool) else ("const", value)
        else:
            out[name] = ("int", False, (i,) in attrs)
    return out


@pytest.mark.parametrize("case", ["3x3 split", "3x3 residual split", "1x1 split", "head"])
def test_gate_variants_are_the_launches(case, monkeypatch):
    """The gate's variant rows specialize exactly as the launchers' own launches at those
    layers do (pointer types, which ints are 1 and which divisible by 16, constexprs)."""
    from fastres import kernels as K

    def nhwc(*shape, dtype=torch.float16):
        return torch.zeros(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last)

    b512, b1000 = torch.zeros(512), torch.zeros(1000)
    if case == "3x3 split":
        call = lambda: K.conv_bn_relu(nhwc(1, 512, 7, 7), nhwc(512, 512, 3, 3), b512, padding=1)  # noqa: E731
        expect = [("conv", "3x3/s1/relu/splitk/ieee [layer4]"), ("splitk_reduce", "sum/relu [layer4 b1]")]
    elif case == "3x3 residual split":
        call = lambda: K.conv_bn_relu(nhwc(1, 512, 7, 7), nhwc(512, 512, 3, 3), b512, padding=1,  # noqa: E731
                                      residual=nhwc(1, 512, 7, 7))
        expect = [("conv", "3x3/s1/relu/res/splitk/ieee [resnet18 layer4]"), ("splitk_reduce", "sum/relu/res [layer4 b1]")]
    elif case == "1x1 split":
        call = lambda: K.conv1x1(nhwc(1, 2048, 7, 7), nhwc(512, 2048, 1, 1), b512)  # noqa: E731
        expect = [("conv1x1", "1x1/s1/relu/splitk/ieee [layer4 conv1]"), ("splitk_reduce", "sum/relu [layer4 b1]")]
    else:
        out = torch.zeros(1, 1000, dtype=torch.float16)
        call = lambda: K.avgpool_fc(nhwc(1, 2048, 7, 7), torch.zeros(1000, 2048, dtype=torch.float16), b1000,  # noqa: E731
                                    out=out)
        expect = [("avgpool", "7x7 [head pool]"), ("conv1x1", "fc/N1/splitk/ieee [head]"),
                  ("splitk_reduce", "sum/y:fp16 [head N1]")]
    launches = _recorded_launches(monkeypatch, call)
    assert len(launches) == len(expect)
    for (fn, args), (kernel_name, variant_name) in zip(launches, expect):
        meta = {k: args.pop(k) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M") if k in args}
        config = Config(meta["BLOCK_M"], meta.get("BLOCK_N", 1), meta.get("BLOCK_K", 1), args.pop("num_warps"),
                        args.pop("num_stages"), meta.get("GROUP_M", 8))
        gate = _gate_class(kernel_name, variant_name, config, fn)
        # Constexpr arguments (per the kernel) compare by value, the others by JIT class.
        got = {name: ("const", v) if gate.get(name, ("",))[0] == "const" else _jit_class(v) for name, v in args.items()}
        for name in CONFIG_META:
            gate.pop(name, None)
        mismatched = {n: (got.get(n), gate.get(n)) for n in set(got) | set(gate) if got.get(n) != gate.get(n)}
        assert not mismatched, f"{kernel_name} {variant_name}: launch vs gate {mismatched}"
