"""Which target a card is, and what the engine may choose on it (mocked device properties:
no GPU needed)."""
from __future__ import annotations

import dataclasses
import json
import re
import types
import warnings

import pytest
import torch

import fastres
from fastres.device import DeviceInfo
from fastres.kernels import targets as T
from fastres.kernels.config import config_space, shared_bound
from fastres.schedule import build_schedule


def props(name, major, minor, sms, shared, arch=""):
    return types.SimpleNamespace(name=name, major=major, minor=minor, multi_processor_count=sms,
                                 shared_memory_per_block_optin=shared, gcnArchName=arch)


# name, capability, SMs, shared memory per block (opt-in), target
CARDS = [
    ("NVIDIA A100-SXM4-80GB", 8, 0, 108, 166912, "sm_80"),
    ("NVIDIA A10", 8, 6, 72, 101376, "sm_86"),
    ("NVIDIA A40", 8, 6, 84, 101376, "sm_86"),
    ("NVIDIA GeForce RTX 3090", 8, 6, 82, 101376, "sm_86"),
    ("NVIDIA L4", 8, 9, 58, 101376, "sm_89"),
    ("NVIDIA L40S", 8, 9, 142, 101376, "sm_89"),
    ("NVIDIA GeForce RTX 4090", 8, 9, 128, 101376, "sm_89"),
    ("NVIDIA H100 80GB HBM3", 9, 0, 132, 232448, "sm_90"),
    ("NVIDIA H100 PCIe", 9, 0, 114, 232448, "sm_90"),
    ("NVIDIA H200", 9, 0, 132, 232448, "sm_90"),
    ("NVIDIA B200", 10, 0, 148, 232448, "sm_100"),
    ("NVIDIA GeForce RTX 5090", 12, 0, 170, 101376, "sm_120"),
]
MI300X = props("AMD Instinct MI300X", 9, 4, 304, 65536, "gfx942:sramecc+:xnack-")


def card_info(p) -> DeviceInfo:
    facts = T.facts_from_properties(p)
    return DeviceInfo(facts.name, facts.sms, False, facts.target, facts.max_shared)


@pytest.mark.parametrize("name, major, minor, sms, shared, target", CARDS)
def test_cards_map_to_their_target(name, major, minor, sms, shared, target):
    facts = T.facts_from_properties(props(name, major, minor, sms, shared))
    assert (facts.target, facts.sms, facts.max_shared, facts.known) == (target, sms, shared, True)
    assert T.TARGETS[target].max_shared == shared


def test_mi300x_is_gfx942(monkeypatch):
    facts = T.facts_from_properties(MI300X)
    assert (facts.target, facts.sms, facts.max_shared) == ("gfx942", 304, 65536)


def test_family_members_use_the_family_target():
    assert T.target_for_capability(8, 7) == ("sm_86", True)   # Jetson Orin
    assert T.target_for_capability(10, 3) == ("sm_100", True)  # B300
    assert T.target_for_capability(12, 1) == ("sm_120", True)


@pytest.mark.parametrize("major, minor", [(7, 5), (7, 0), (6, 1)])
def test_cards_before_ampere_are_refused_by_name(major, minor):
    with pytest.raises(T.UnsupportedDeviceError) as e:
        T.facts_from_properties(props("Tesla T4", major, minor, 40, 65536))
    msg = str(e.value)
    assert "Tesla T4" in msg and f"{major}.{minor}" in msg and "sm_80" in msg


def test_unknown_newer_card_gets_the_conservative_space_and_one_warning():
    newer = props("NVIDIA Future GPU", 13, 0, 200, 232448)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        facts = T.facts_from_properties(newer)
        T.facts_from_properties(newer)
    assert facts.target == T.CONSERVATIVE_TARGET and not facts.known
    assert len([w for w in caught if "NVIDIA Future GPU" in str(w.message)]) == 1
    # The conservative target has the least shared memory of the NVIDIA targets.
    assert T.TARGETS[T.CONSERVATIVE_TARGET].max_shared == min(t.max_shared for t in T.TARGETS.values()
                                                              if t.backend == "cuda")


def test_unknown_amd_arch_is_refused():
    with pytest.raises(T.UnsupportedDeviceError, match="gfx90a"):
        T.facts_from_properties(props("AMD Instinct MI250X", 9, 0, 220, 65536, "gfx90a:sramecc+:xnack-"))


def _unsplit(cfg):
    return dataclasses.replace(cfg, SPLIT_K=1)


@pytest.mark.parametrize("card", [props(*c[:5]) for c in CARDS] + [MI300X], ids=lambda p: p.name)
@pytest.mark.parametrize("batch", [1, 256])
def test_resnet50_schedule_uses_only_what_the_card_allows(card, batch):
    """Every launch of a ResNet-50 forward gets a config of its target's gate-cleared space,
    fitting the card's shared memory, at batch 1 and 256."""
    info = card_info(card)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        s = build_schedule("resnet50", (batch, 3, 224, 224), dtype, info)
        for step in s.steps:
            space = {"stem_conv": step.space, "avgpool_fc": "conv1x1", "max_pool2d": "max_pool2d"}.get(
                step.kernel, step.space)
            allowed = config_space(space, dtype, target=info.target, residual=step.residual is not None)
            assert _unsplit(step.config) in allowed, (card.name, dtype, step.layer, step.config.name)


def test_a_card_below_its_targets_shared_memory_gets_only_configs_that_fit():
    small = DeviceInfo("small sm_90", 132, False, "sm_90", max_shared=80 * 1024)
    s = build_schedule("resnet50", (256, 3, 224, 224), torch.float16, small)
    for step in s.steps:
        space = step.space or ("conv1x1" if step.kernel == "avgpool_fc" else "max_pool2d")
        assert shared_bound(space, step.config, torch.float16) <= 80 * 1024, step.layer
    with pytest.raises(ValueError, match="fits sm_90"):
        config_space("conv", torch.float16, target="sm_90", max_shared=1024)


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="unknown target"):
        config_space("conv", torch.float16, target="sm_75")
    with pytest.raises(ValueError, match="unknown target"):
        DeviceInfo("x", target="sm_75")


def test_engine_refuses_a_card_before_ampere_when_built(monkeypatch):
    model = __import__("test_build").calibrated("resnet18")
    params = fastres.from_torchvision(model, dtype=torch.float32, device="cpu").params()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(T, "_device_facts", lambda index: T.facts_from_properties(props("Tesla T4", 7, 5, 40, 65536)))
    with pytest.raises(T.UnsupportedDeviceError, match="Tesla T4.*sm_80"):
        fastres.ResNet("resnet18", params, num_classes=10, dtype=torch.float16, device="cuda")
    assert fastres.UnsupportedDeviceError is T.UnsupportedDeviceError


def test_tuning_keys_keep_targets_apart(monkeypatch):
    """The tuning cache is keyed by card name and target: results of one never serve another."""
    model = __import__("test_build").calibrated("resnet18")
    fast = fastres.from_torchvision(model, dtype=torch.float16, device="cpu")
    step = next(st for st in fast.schedule((1, 3, 32, 32)).steps if st.space == "conv")
    keys = set()
    for card in (props(*CARDS[0][:5]), props(*CARDS[4][:5]), props(*CARDS[7][:5]), MI300X):
        fast._device_info = card_info(card)
        keys.add(fast._tune_key(step, 1))
    assert len(keys) == 4
    assert any("(sm_89)" in k for k in keys) and any("(gfx942)" in k for k in keys)


# -- the 8-bit dtypes each target runs ---------------------------------------------------------

_CARD_OF = {target: name for name, *_, target in CARDS} | {"gfx942": MI300X.name}


def test_quant_dtypes_per_target():
    fp8 = {"sm_89", "sm_90", "sm_100", "sm_120"}
    for target in T.TARGETS:
        assert T.quant_dtypes(target) == ((torch.int8, torch.float8_e4m3fn) if target in fp8 else (torch.int8,)), target
        T.check_quant_dtype(torch.int8, target)
    with pytest.raises(ValueError, match="unknown target 'sm_75'"):
        T.quant_dtypes("sm_75")


@pytest.mark.parametrize("target", ["sm_80", "sm_86"])
def test_fp8_before_ada_is_refused_naming_the_card(target):
    with pytest.raises(ValueError) as e:
        T.check_quant_dtype(torch.float8_e4m3fn, target)
    assert str(e.value) == (f"torch.float8_e4m3fn needs sm_89 or newer (Ada, Hopper, Blackwell), for fp8 tensor cores; "
                            f"this device is {target} ({T.TARGETS[target].cards}): use torch.int8")
    with pytest.raises(ValueError, match=rf"this device is {_CARD_OF[target]} \({target}\): use torch.int8"):
        T.check_quant_dtype(torch.float8_e4m3fn, target, _CARD_OF[target])


def test_fp8_on_gfx942_is_refused_for_its_fnuz_tensor_cores():
    with pytest.raises(ValueError, match=r"float8_e4m3fn is not supported on gfx942: .*float8_e4m3fnuz.*"
                                         r"this device is AMD Instinct MI300X \(gfx942\): use torch.int8"):
        T.check_quant_dtype(torch.float8_e4m3fn, "gfx942", "AMD Instinct MI300X")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float8_e5m2, torch.float8_e4m3fnuz])
def test_check_quant_dtype_refuses_what_is_not_8bit_quantization(dtype):
    with pytest.raises(TypeError, match=rf"{dtype} is not an 8-bit dtype fastres quantizes to: use torch.int8 or "
                                        r"torch.float8_e4m3fn"):
        T.check_quant_dtype(dtype, "sm_90")


@pytest.mark.parametrize("card", [props(*c[:5]) for c in CARDS] + [MI300X], ids=lambda p: p.name)
def test_device_info_checks_dtypes_for_its_card(card):
    info = card_info(card)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.int8):
        info.check_dtype(dtype)
    if torch.float8_e4m3fn in T.quant_dtypes(info.target):
        info.check_dtype(torch.float8_e4m3fn)
    else:
        with pytest.raises(ValueError, match=rf"this device is {card.name} \({info.target}\): use torch.int8"):
            info.check_dtype(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"fastres runs torch.float16, .*torch.float8_e4m3fn, got torch.int32"):
        info.check_dtype(torch.int32)


def test_the_interpreter_runs_both_8bit_dtypes():
    info = DeviceInfo("cpu-interpreter", interpreter=True, target="sm_80")
    info.check_dtype(torch.int8)
    info.check_dtype(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="got torch.uint8"):
        info.check_dtype(torch.uint8)


# What triton makes of an e4m3fn x e4m3fn tl.dot on each target, compiled in a
# child without the interpreter (from a file: triton reads a kernel's source): the tensor-core
# instructions, or the compile error.
_DOT_PROBE = r"""
import json, re
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from fastres.kernels.targets import TARGETS

@triton.jit
def dot(a_ptr, b_ptr, c_ptr):
    r = tl.arange(0, 64)
    k = tl.arange(0, 32)
    a = tl.load(a_ptr + r[:, None] * 32 + k[None, :])
    b = tl.load(b_ptr + k[:, None] * 64 + r[None, :])
    tl.store(c_ptr + r[:, None] * 64 + r[None, :], tl.dot(a, b))

found = {}
for t in TARGETS.values():
    sig = {"a_ptr": "*fp8e4nv", "b_ptr": "*fp8e4nv", "c_ptr": "*fp32"}
    try:
        k = triton.compile(triton.compiler.ASTSource(fn=dot, signature=sig, constexprs={}),
                           target=GPUTarget(t.backend, t.arch, t.warp_size))
    except Exception as e:
        found[t.name] = "error: " + str(e)
        continue
    asm = k.asm.get("ptx") or k.asm["amdgcn"]
    found[t.name] = " ".join(sorted(set(re.findall(
        r"mma\.sync[\w.]*|wgmma\.mma_async[\w.]*|tcgen05\.mma[\w.:]*|v_mfma\w*", asm))))
print(json.dumps(found))
"""


def test_fp8_targets_are_those_with_native_e4m3_dots(tmp_path):
    """The table above, against the installed triton: an e4m3fn dot compiles to an fp8 tensor-core
    instruction exactly on the targets that run float8_e4m3fn (sm_80/86 refuse the type; gfx942
    upcasts it to a float16 MFMA)."""
    from gate_helpers import run_python

    probe = tmp_path / "dot_probe.py"
    probe.write_text(_DOT_PROBE)
    r = run_python([str(probe)], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    native = re.compile(r"\.e4m3\.e4m3|kind::f8f6f4|v_mfma\w*_fp8_fp8")
    for target in T.TARGETS:
        assert bool(native.search(found[target])) == (torch.float8_e4m3fn in T.quant_dtypes(target)), (target, found)
    assert "fp8e4nv not supported in this architecture" in found["sm_80"]
    assert "v_mfma_f32_32x32x8_f16" in found["gfx942"], found["gfx942"]
