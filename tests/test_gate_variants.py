"""fastres.gate.variants: the launches each kernel is compiled for are the launches the engine
makes, which rows need the tensor cores, and which configs the engine can dispatch."""
from __future__ import annotations

import pytest
import torch

from fastres.gate.compile import CONFIG_META, arg_defaults, arg_names, specialize
from fastres.gate.keys import unaligned, unspecialized
from fastres.gate.target import GFX942, SM80, SM90, SM100, TARGETS
from fastres.gate.selection import dispatchable, engine_space, has_engine_space, heaviest, tensor_core_required
from fastres.gate.rows import variants
from fastres.gate.variants import DTYPES
from fastres.kernels.config import KERNELS, Config, config_space
from gate_helpers import DTYPE_NAMES


def test_dispatchable_drops_k_steps_wider_than_the_layer():
    import dataclasses

    body = next(v for v in variants("conv", "float16") if v.name.startswith("3x3"))
    thin = dataclasses.replace(body, gemm_k=3)  # a layer reducing over 3 channels only
    assert dispatchable("conv", Config(64, 64, 16, 4, 4), thin, "float16")
    assert not dispatchable("conv", Config(64, 64, 32, 4, 4), thin, "float16")
    assert dispatchable("conv", Config(64, 64, 64, 4, 4), body, "float16")
    # the stem's flat K (7*7*3 = 147) takes every K step
    stem = next(v for v in variants("conv_stem", "float16") if v.name.startswith("7x7"))
    assert stem.gemm_k == 147 and dispatchable("conv_stem", Config(128, 128, 64, 4, 3), stem, "float16")
    # every config of the space is compiled for some variant
    for dt in DTYPE_NAMES.values():
        for k in KERNELS:
            for cfg in config_space(k, DTYPES[dt]) if has_engine_space(k, dt) else ():
                assert any(dispatchable(k, cfg, v, dt) for v in variants(k, dt)), (k, cfg, dt)


def test_dispatchable_keeps_residual_unsafe_tiles_from_residual_launches():
    big = Config(128, 128, 64, 4, 4)  # kernels/config.py: its fused residual spills
    by_name = {v.name.split()[0]: v for v in variants("conv", "float16")}
    assert not dispatchable("conv", big, by_name["3x3/s1/relu/res/ieee"], "float16")
    assert dispatchable("conv", big, by_name["3x3/s1/relu/ieee"], "float16")
    assert dispatchable("conv", big, by_name["3x3/s1/relu/res/splitk/ieee"], "float16")  # the reduce adds it


def test_tensor_core_required():
    assert tensor_core_required("conv", torch.float16, "ieee")
    assert tensor_core_required("conv1x1", "float32", "tf32")
    assert not tensor_core_required("avgpool", "float16", None)
    assert not tensor_core_required("max_pool2d", "float16", None)
    # exact float32 products: no NVIDIA tensor core takes them, MI300's MFMA does
    for t in (SM80, SM90, SM100):
        assert not tensor_core_required("conv", "float32", "ieee", t)
        assert tensor_core_required("conv", "float32", "tf32", t)
    assert tensor_core_required("conv", "float32", "ieee", GFX942)
    assert not tensor_core_required("add_relu", "float32", None, GFX942)


def test_engine_space_is_the_targets_own_space():
    """Each target gets its own space from kernels.config, and the gate compiles exactly it."""
    from fastres.gate.run import tasks

    for t in TARGETS.values():
        assert engine_space("conv1x1", "float16", t) == config_space("conv1x1", torch.float16, target=t.name)
    big = Config(128, 128, 64, 8, 3)  # needs 98,304 B of LDS with the head's variant: over MI300's 64 KB
    assert big in engine_space("conv1x1", "fp16", SM80) and big not in engine_space("conv1x1", "fp16", GFX942)
    assert big not in {t.config for t in tasks(kernels=["conv1x1"], dtypes=["float16"], target=GFX942)}


def test_other_targets_compile_each_config_at_its_heaviest_variants():
    from fastres.gate.run import tasks

    for k in ("conv", "conv_stem", "conv1x1", "splitk_reduce"):
        # sm_90's rows of the configs sm_80's space keeps (fused splits are Hopper's only)
        full = [t for t in tasks(kernels=[k], target=SM90)
                if has_engine_space(k, t.dtype, SM80) and t.config in engine_space(k, t.dtype, SM80)
                and not dict(t.variant.meta).get("FUSED")]
        every = tasks(kernels=[k], target=SM80, all_variants=True)
        few = tasks(kernels=[k], target=SM80)
        assert [(t.config, t.dtype, t.variant) for t in every] == [(t.config, t.dtype, t.variant) for t in full]
        assert {(t.config, t.dtype) for t in few} == {(t.config, t.dtype) for t in full}  # every config
        assert len(few) < len(full)
    # the bottleneck conv3 with the fused residual (most registers) and the head's GEMM on
    # float32 pooled features (most shared memory), each split and unsplit; a batch of 1
    # (M the constant 1) is lighter than 32
    tile = Config(64, 64, 64, 4, 4)
    opts = [v for v in variants("conv1x1", "float16") if dispatchable("conv1x1", tile, v, "float16")]
    names = [v.name for v in heaviest("float16", opts)]
    assert names == ["1x1/s1/relu/res/ieee [conv3]", "1x1/s1/relu/splitk/ieee [layer4 conv1]",
                     "fc/N32/splitk/ieee [head]", "fc/N1024/y:fp32/ieee [head]"], names
    # float32: the head is a group of its own (its input is no wider than the dtype there)
    names = [v.name for v in heaviest("float32", variants("conv1x1", "float32")) if v.precision == "tf32"]
    assert names == ["1x1/s1/relu/res/tf32 [conv3]", "1x1/s1/relu/splitk/tf32 [layer4 conv1]",
                     "fc/N32/splitk/tf32 [head]", "fc/N1024/y:fp32/tf32 [head]"], names
    # float32: per precision; a 16-bit user input is lighter than the float32 one; uint8 pixels
    # (normalized in the loads) are a group of their own
    names = [v.name for v in heaviest("float32", variants("conv_stem", "float32"))]
    assert names == ["7x7/s2/relu/ieee [stem]", "7x7/s2/relu/x:nchw-u8/ieee [stem pixels]",
                     "7x7/s2/relu/tf32 [stem]", "7x7/s2/relu/x:nchw-u8/tf32 [stem pixels]"], names
    # a 16-bit stem: the float32 input (shared memory) and the cast from the other 16-bit type
    names = [v.name for v in heaviest("bfloat16", variants("conv_stem", "bfloat16"))]
    assert names == ["7x7/s2/relu/x:fp32/ieee [stem]", "7x7/s2/relu/x:fp16/ieee [stem]",
                     "7x7/s2/relu/x:nchw-u8/ieee [stem pixels]"], names
    names = [v.name for v in heaviest("float16", variants("splitk_reduce", "float16"))]
    assert names == ["sum/relu/res [layer4 b1]", "sum/y:fp32 [head N32]"], names  # a conv's and the head's


# -- the gate compiles what the launchers launch ---------------------------------------------

def _recorded_launches(monkeypatch, call) -> list[tuple]:
    """(kernel, {argument: value}) of every launch `call` makes, with the GPU heuristic's
    configs; nothing runs."""
    import fastres.kernels.config as config_mod
    from fastres.kernels import conv, conv_bordered, conv_tma, gemm1x1, gemm_tma, head, splitk

    monkeypatch.setattr(config_mod, "interpreting", lambda: False)
    # The launches are recorded, never run, so CPU tensors stand in for device ones on every
    # machine: the launchers' device check accepts them only under the interpreter, and on a
    # GPU machine it is off. The configs stay those planned for 132 SMs, the gate's target,
    # whatever GPU this is.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    seen = []

    def record(kernel, grid, *args, **kwargs):
        names = arg_names(kernel)
        # (an argument the launcher leaves out has its default: a float GEMM's 8-bit ones, None)
        seen.append((kernel, {**arg_defaults(kernel), **dict(zip(names, args)), **kwargs}))

    for module in (conv, conv_bordered, conv_tma, gemm1x1, gemm_tma, head, splitk):
        monkeypatch.setattr(module, "launch", record)
    call()
    return seen


def _jit_class(v):
    """What the JIT specializes an argument on: a pointer's dtype, an int's == 1 and % 16."""
    if isinstance(v, torch.Tensor):
        return ("ptr", {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.int32: "i32",
                        torch.int8: "i8", torch.float8_e4m3fn: "fp8e4nv", torch.uint8: "u8"}[v.dtype])
    if isinstance(v, float):
        return ("fp32",)
    if isinstance(v, bool) or not isinstance(v, int):
        return ("const", v)
    return ("int", v == 1, v % 16 == 0)


def _gate_class(kernel_name: str, variant_name: str, config, fn, family: str = "ptr", dtype: str = "float16") -> dict:
    v = next(v for v in variants(kernel_name, dtype, family) if v.name == variant_name)
    signature, constexprs, attrs, _ = specialize(fn, config, dtype, v)
    names = arg_names(fn)
    out = {}
    for i, name in enumerate(names):
        ty = signature[name]
        if ty.startswith("*"):
            out[name] = ("ptr", ty[1:])
        elif ty == "fp32":
            out[name] = ("fp32",)
        elif ty == "constexpr":
            value = constexprs[(i,)]
            out[name] = ("int", True, False) if value == 1 and not isinstance(value, bool) else ("const", value)
        else:
            out[name] = ("int", False, (i,) in attrs)
    return out


@pytest.mark.parametrize("case", ["3x3 split", "3x3 residual split", "1x1 split", "head", "3x3 fused", "1x1 fused",
                                  "3x3 tma", "3x3 tma split", "3x3/s2 tma_w", "1x1 tma", "1x1 tma_ws", "head tma split",
                                  "head tma_ws", "3x3 tma_b", "3x3 tma_b split", "3x3 tma_b_ws", "3x3 tma_b_p"])
def test_gate_variants_are_the_launches(case, monkeypatch):
    """The gate's variant rows specialize exactly as the launchers' own launches at those
    layers do (pointer types, which ints are 1 and which divisible by 16, constexprs), for
    every kernel variant family."""
    import dataclasses

    from fastres import kernels as K
    from fastres.kernels.config import select_config

    def planned(kernel, variant, **gemm):  # the heuristic's tile for an H100, as another variant
        return dataclasses.replace(select_config(kernel, torch.float16, sms=132, target="sm_90", interpreter=False,
                                                 **gemm), variant=variant)

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
    elif case == "head":
        out = torch.zeros(1, 1000, dtype=torch.float16)
        call = lambda: K.avgpool_fc(nhwc(1, 2048, 7, 7), torch.zeros(1000, 2048, dtype=torch.float16), b1000,  # noqa: E731
                                    out=out)
        expect = [("avgpool", "7x7 [head pool]"), ("conv1x1", "fc/N1/splitk/ieee [head]"),
                  ("splitk_reduce", "sum/y:fp16 [head N1]")]
    elif case == "3x3 fused":
        cfg = planned("conv", "fused_k", M=49, N=512, K=512, taps=9)
        call = lambda: K.conv_bn_relu(nhwc(1, 512, 7, 7), nhwc(512, 512, 3, 3), b512, padding=1, config=cfg)  # noqa: E731
        expect = [("conv", "3x3/s1/relu/splitk-fused/ieee [layer4]")]
    elif case == "1x1 fused":
        cfg = planned("conv1x1", "fused_k", M=49, N=512, K=2048)
        call = lambda: K.conv1x1(nhwc(1, 2048, 7, 7), nhwc(512, 2048, 1, 1), b512, config=cfg)  # noqa: E731
        expect = [("conv1x1", "1x1/s1/relu/splitk-fused/ieee [layer4 conv1]")]
    elif case == "3x3 tma":
        cfg = Config(64, 64, 64, 4, 4, variant="tma")
        call = lambda: K.conv_bn_relu(nhwc(32, 64, 56, 56), nhwc(64, 64, 3, 3), torch.zeros(64), padding=1,  # noqa: E731
                                      residual=nhwc(32, 64, 56, 56), config=cfg)
        expect = [("conv", "3x3/s1/relu/res/x:tma [layer1]", "tma")]
    elif case == "3x3 tma split":
        cfg = planned("conv", "tma", M=49, N=512, K=512, taps=9)
        call = lambda: K.conv_bn_relu(nhwc(1, 512, 7, 7), nhwc(512, 512, 3, 3), b512, padding=1, config=cfg)  # noqa: E731
        expect = [("conv", "3x3/s1/relu/x:tma/splitk-fused [layer4]", "tma")]
    elif case == "3x3/s2 tma_w":
        cfg = Config(64, 64, 64, 4, 4, variant="tma_w")
        call = lambda: K.conv_bn_relu(nhwc(32, 128, 56, 56), nhwc(128, 128, 3, 3), torch.zeros(128), stride=2,  # noqa: E731
                                      padding=1, config=cfg)
        expect = [("conv", "3x3/s2/relu [layer2.0]", "tma_w")]
    elif case in ("1x1 tma", "1x1 tma_ws"):
        variant = case.split()[1]
        cfg = Config(64, 64, 64, 4, 4, variant=variant)
        call = lambda: K.conv1x1(nhwc(32, 64, 56, 56), nhwc(256, 64, 1, 1), torch.zeros(256),  # noqa: E731
                                 residual=nhwc(32, 256, 56, 56), config=cfg)
        expect = [("conv1x1", "1x1/s1/relu/res" + ("/ws" if variant == "tma_ws" else "") + " [conv3]", variant)]
    elif case == "head tma split":
        cfg = planned("conv1x1", "tma", M=1, N=1000, K=2048)
        call = lambda: K.avgpool_fc(nhwc(1, 2048, 7, 7), torch.zeros(1000, 2048, dtype=torch.float16), b1000,  # noqa: E731
                                    out=torch.zeros(1, 1000, dtype=torch.float16), config=cfg)
        expect = [("avgpool", "7x7 [head pool]"), ("conv1x1", "fc/N1/splitk-fused [head]", "tma")]
    elif case in ("3x3 tma_b", "3x3 tma_b_ws", "3x3 tma_b_p"):
        variant = case.split()[1]
        cfg = Config(64, 64, 64, 4, 4, variant=variant)
        call = lambda: K.conv_bn_relu(K.zero_bordered(nhwc(32, 64, 56, 56), 1), nhwc(64, 64, 3, 3),  # noqa: E731
                                      torch.zeros(64), padding=1, residual=nhwc(32, 64, 56, 56), config=cfg)
        tag = {"tma_b": "", "tma_b_ws": "/ws", "tma_b_p": "/persistent"}[variant]
        expect = [("conv", f"3x3/s1/relu/res/x:bordered{tag} [resnet18 layer1]", variant)]
    elif case == "3x3 tma_b split":
        cfg = planned("conv", "tma_b", M=49, N=512, K=512, taps=9)
        call = lambda: K.conv_bn_relu(K.zero_bordered(nhwc(1, 512, 7, 7), 1), nhwc(512, 512, 3, 3), b512,  # noqa: E731
                                      padding=1, config=cfg)
        expect = [("conv", "3x3/s1/relu/x:bordered/splitk-fused [layer4]", "tma_b")]
    else:
        cfg = Config(64, 64, 64, 4, 4, variant="tma_ws")
        call = lambda: K.avgpool_fc(nhwc(1024, 2048, 7, 7), torch.zeros(1000, 2048, dtype=torch.float16),  # noqa: E731
                                    b1000, out=torch.zeros(1024, 1000, dtype=torch.float16), config=cfg)
        expect = [("avgpool", "7x7 [head pool]"), ("conv1x1", "fc/N1024/y:fp16/ws [head]", "tma_ws")]
    _assert_launches_are_rows(_recorded_launches(monkeypatch, call), expect)


def _assert_launches_are_rows(launches, expect, dtype: str = "float16") -> None:
    """Each recorded launch specializes as the gate's row (kernel, variant name[, family]) at `dtype`."""
    assert len(launches) == len(expect)
    for (fn, args), (kernel_name, variant_name, *family) in zip(launches, expect):
        meta = {k: args.pop(k) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M") if k in args}
        config = Config(meta["BLOCK_M"], meta.get("BLOCK_N", 1), meta.get("BLOCK_K", 1), args.pop("num_warps"),
                        args.pop("num_stages"), meta.get("GROUP_M", 8))
        gate = _gate_class(kernel_name, variant_name, config, fn, *(family or ["ptr"]), dtype=dtype)
        # Constexpr arguments (per the kernel) compare by value, the others by JIT class.
        plain = unspecialized(fn)  # do_not_specialize: a plain int whatever its value
        no_align = unaligned(fn)  # do_not_specialize_on_alignment: 1 or a plain int
        got = {name: ("const", v) if gate.get(name, ("",))[0] == "const" else
               ("int", False, False) if name in plain else
               ("int", v == 1, False) if name in no_align else _jit_class(v) for name, v in args.items()}
        for name in CONFIG_META:
            gate.pop(name, None)
        mismatched = {n: (got.get(n), gate.get(n)) for n in set(got) | set(gate) if got.get(n) != gate.get(n)}
        assert not mismatched, f"{kernel_name} {variant_name}: launch vs gate {mismatched}"


@pytest.mark.parametrize("case", ["3x3 residual", "3x3 float neighbours", "3x3 residual split", "1x1", "stem",
                                  "stem pixels", "1x1 tma", "1x1 tma_ws float neighbours", "3x3 tma float neighbours",
                                  "3x3 tma_w residual", "3x3 tma_b_ws residual", "3x3 tma_b_p residual"])
@pytest.mark.parametrize("dtype", ["int8", "float8_e4m3fn"])
def test_8bit_gate_variants_are_the_launches(case, dtype, monkeypatch):
    """The gate's 8-bit rows specialize exactly as the 8-bit launches at those layers do: the
    scale pointer, the scalars (fp32 arguments), an int8 split's int32 partials."""
    from fastres import kernels as K

    q8 = DTYPES[dtype]

    def nhwc(*shape, dtype=q8):
        return torch.zeros(*shape).to(dtype).contiguous(memory_format=torch.channels_last)

    def s(n):
        return torch.ones(n)

    if case == "3x3 residual":
        call = lambda: K.conv_bn_relu(nhwc(32, 64, 56, 56), nhwc(64, 64, 3, 3), s(64), padding=1, scale=s(64),  # noqa: E731
                                      residual=nhwc(32, 64, 56, 56), residual_scale=0.1, out_inv=2.0)
        expect = [("conv", "3x3/s1/relu/res/ieee [layer1]")]
    elif case == "3x3 float neighbours":
        half = torch.float16
        call = lambda: K.conv_bn_relu(nhwc(32, 64, 56, 56, dtype=half), nhwc(64, 64, 3, 3), s(64), padding=1,  # noqa: E731
                                      scale=s(64), in_inv=3.0, residual=nhwc(32, 64, 56, 56, dtype=half),
                                      out=nhwc(32, 64, 56, 56, dtype=half))
        expect = [("conv", "3x3/s1/relu/res/x:fp16/ieee/r:fp16/y:fp16 [layer1]")]
    elif case == "3x3 residual split":
        call = lambda: K.conv_bn_relu(nhwc(1, 512, 7, 7), nhwc(512, 512, 3, 3), s(512), padding=1,  # noqa: E731
                                      scale=s(512), residual=nhwc(1, 512, 7, 7), residual_scale=0.1, out_inv=2.0)
        expect = [("conv", "3x3/s1/relu/res/splitk/ieee [resnet18 layer4]"),
                  ("splitk_reduce", "sum/relu/res [layer4 b1]")]
    elif case == "1x1":
        call = lambda: K.conv1x1(nhwc(32, 64, 56, 56), nhwc(256, 64, 1, 1), s(256), scale=s(256),  # noqa: E731
                                 residual=nhwc(32, 256, 56, 56), residual_scale=0.1, out_inv=2.0)
        expect = [("conv1x1", "1x1/s1/relu/res/ieee [conv3]")]
    elif case == "1x1 tma":
        call = lambda: K.conv1x1(nhwc(32, 64, 56, 56), nhwc(256, 64, 1, 1), s(256), scale=s(256),  # noqa: E731
                                 residual=nhwc(32, 256, 56, 56), residual_scale=0.1, out_inv=2.0,
                                 config=Config(64, 64, 64, 4, 4, variant="tma"))
        expect = [("conv1x1", "1x1/s1/relu/res [conv3]", "tma")]
    elif case == "1x1 tma_ws float neighbours":
        half = torch.float16
        call = lambda: K.conv1x1(nhwc(32, 64, 56, 56, dtype=half), nhwc(256, 64, 1, 1), s(256), scale=s(256),  # noqa: E731
                                 in_inv=3.0, residual=nhwc(32, 256, 56, 56, dtype=half),
                                 out=nhwc(32, 256, 56, 56, dtype=half),
                                 config=Config(64, 64, 64, 4, 4, variant="tma_ws"))
        expect = [("conv1x1", "1x1/s1/relu/res/x:fp16/ws/r:fp16/y:fp16 [conv3]", "tma_ws")]
    elif case == "3x3 tma float neighbours":
        half = torch.float16
        call = lambda: K.conv_bn_relu(nhwc(32, 64, 56, 56, dtype=half), nhwc(64, 64, 3, 3), s(64), padding=1,  # noqa: E731
                                      scale=s(64), in_inv=3.0, residual=nhwc(32, 64, 56, 56, dtype=half),
                                      out=nhwc(32, 64, 56, 56, dtype=half),
                                      config=Config(64, 64, 64, 4, 4, variant="tma"))
        expect = [("conv", "3x3/s1/relu/res/x:tma/x:fp16/r:fp16/y:fp16 [layer1]", "tma")]
    elif case == "3x3 tma_w residual":
        call = lambda: K.conv_bn_relu(nhwc(32, 64, 56, 56), nhwc(64, 64, 3, 3), s(64), padding=1, scale=s(64),  # noqa: E731
                                      residual=nhwc(32, 64, 56, 56), residual_scale=0.1, out_inv=2.0,
                                      config=Config(64, 64, 64, 4, 4, variant="tma_w"))
        expect = [("conv", "3x3/s1/relu/res [layer1]", "tma_w")]
    elif case in ("3x3 tma_b_ws residual", "3x3 tma_b_p residual"):
        variant = case.split()[1]
        call = lambda: K.conv_bn_relu(K.zero_bordered(nhwc(32, 64, 56, 56), 1), nhwc(64, 64, 3, 3), s(64),  # noqa: E731
                                      padding=1, scale=s(64), residual=nhwc(32, 64, 56, 56), residual_scale=0.1,
                                      out_inv=2.0, config=Config(64, 64, 64, 4, 4, variant=variant))
        tag = {"tma_b_ws": "/ws", "tma_b_p": "/persistent"}[variant]
        expect = [("conv", f"3x3/s1/relu/res/x:bordered{tag} [resnet18 layer1]", variant)]
    else:
        pixels = case == "stem pixels"
        x = torch.zeros(32, 3, 224, 224, dtype=torch.uint8 if pixels else torch.float32)
        norm = K.pixel_norm((0.5,) * 3, (0.25,) * 3) if pixels else None
        call = lambda: K.stem_conv(x, nhwc(64, 3, 7, 7), s(64), scale=s(64), in_inv=3.0, out_inv=2.0,  # noqa: E731
                                   normalize=norm)
        expect = [("conv_stem", "7x7/s2/relu/x:nchw-" + ("u8/ieee [stem pixels]" if pixels else "fp32/ieee [stem]"))]
    _assert_launches_are_rows(_recorded_launches(monkeypatch, call), expect, dtype)


def test_tma_families_have_their_own_kernels_and_launches():
    from fastres.gate.compile import kernel_fn, row_family
    from fastres.gate.variants import config_family

    assert kernel_fn("conv", "tma").fn.__name__ == "_conv_tma_kernel"
    assert kernel_fn("conv1x1", "tma_ws").fn.__name__ == "_gemm_tma_kernel"
    assert kernel_fn("conv1x1", "fused_k").fn.__name__ == "_gemm1x1_kernel"
    assert config_family(Config(64, 64, 64, variant="fused_k")) == "ptr"
    ws = variants("conv1x1", "float16", "tma_ws")
    assert ws and all(dict(v.meta)["WARP_SPECIALIZE"] and not dict(v.meta)["SPLIT"] for v in ws)
    tma = variants("conv", "float16", "tma")
    assert all(dict(v.meta)["A_TMA"] and dict(v.values)["SH"] == 1 for v in tma)
    assert kernel_fn("conv", "tma_b").fn.__name__ == kernel_fn("conv", "tma_b_ws").fn.__name__ == "_conv_bordered_kernel"
    assert all(v.jit == ("conv_bordered", "_conv_bordered_persistent_kernel")
               for v in variants("conv", "float16", "tma_b_p"))
    assert not any(dict(v.meta)["SPLIT"] for v in variants("conv", "float16", "tma_b_ws"))
    assert any(dict(v.meta)["SPLIT"] for v in tma)
    # fused splits: Hopper, float16, tiles of up to 64 rows
    fused = next(v for v in variants("conv", "float16") if dict(v.meta).get("FUSED"))
    assert row_family(Config(64, 64, 64, 4, 4), fused) == "fused_k"
    assert dispatchable("conv", Config(64, 64, 64, 4, 4), fused, "float16", SM90)
    assert not dispatchable("conv", Config(64, 64, 64, 4, 4), fused, "float16", SM80)
    assert not dispatchable("conv", Config(128, 64, 64, 4, 4), fused, "float16", SM90)
    fused32 = next(v for v in variants("conv", "float32") if dict(v.meta).get("FUSED"))
    assert not dispatchable("conv", Config(64, 64, 32, 4, 3), fused32, "float32", SM90)
