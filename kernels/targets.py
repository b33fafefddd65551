"""The GPU targets fastres compiles for, and which one a device is.

A target is a family of cards that share one compiled binary and one set of limits: NVIDIA by
compute capability (sm_80 ... sm_120), AMD by its gfx architecture (gfx942). Each has its own
config space (`kernels.config.config_space(..., target=...)`), cleared by the compile gate
(`fastres check --target T`). A device maps to a target by its capability or `gcnArchName`;
cards older than Ampere are refused (no tensor-core path in triton's kernels there), and a
newer card fastres does not know yet gets the most conservative space, with one warning.
Which 8-bit dtypes a target runs (`quant_dtypes`, `check_quant_dtype`) is decided here too.
"""
from __future__ import annotations

import dataclasses
import functools
import threading
import warnings

import torch


@dataclasses.dataclass(frozen=True)
class TargetInfo:
    """name: "sm_90"; backend/arch/warp_size: triton's GPUTarget; max_shared: bytes of shared
    memory (LDS on AMD) one block may use; cards: examples, for messages and docs/gpus.md."""

    name: str
    backend: str
    arch: int | str
    warp_size: int
    max_shared: int
    cards: str


TARGETS: dict[str, TargetInfo] = {t.name: t for t in (
    TargetInfo("sm_80", "cuda", 80, 32, 166912, "A100, A30"),
    TargetInfo("sm_86", "cuda", 86, 32, 101376, "A10, A40, RTX 30"),
    TargetInfo("sm_89", "cuda", 89, 32, 101376, "L4, L40S, RTX 40"),
    TargetInfo("sm_90", "cuda", 90, 32, 232448, "H100, H200"),
    TargetInfo("sm_100", "cuda", 100, 32, 232448, "B200, GB200"),
    TargetInfo("sm_120", "cuda", 120, 32, 101376, "RTX 50, RTX PRO 6000"),
    TargetInfo("gfx942", "hip", "gfx942", 64, 65536, "MI300X, MI300A, MI325X"),
)}
DEFAULT_TARGET = "sm_90"
# What an unknown newer card gets: the space cleared on the target with the least shared memory.
CONSERVATIVE_TARGET = "sm_86"
MIN_CAPABILITY = (8, 0)


class UnsupportedDeviceError(RuntimeError):
    """A device fastres cannot run on (too old for its tensor-core kernels)."""


# The 8-bit dtypes fastres quantizes to, and the targets whose tl.dot runs e4m3fn x e4m3fn on
# fp8 tensor cores. What triton 3.x makes of such a dot (tests/test_targets.py compiles it on
# every target): sm_80/86 refuse the type outright; sm_89 and sm_120 use mma.sync e4m3, sm_90
# wgmma e4m3, sm_100 tcgen05 kind::f8f6f4 (sm_90/100: from 64-row tiles on; smaller ones fall
# back to an f16 mma.sync). gfx942 compiles it, but upcast to f16 (v_mfma_f32_32x32x8_f16):
# its fp8 MFMA takes the fnuz encoding (float8_e4m3fnuz), not OCP e4m3fn, so fp8 there would
# run no faster than float16 while rounding like fp8; it is refused.
QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)
FP8_TARGETS = ("sm_89", "sm_90", "sm_100", "sm_120")


def quant_dtypes(target: str) -> tuple[torch.dtype, ...]:
    """The 8-bit dtypes `target` runs: torch.int8 on every target, torch.float8_e4m3fn where
    tl.dot has native e4m3 tensor cores (sm_89 and newer)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    return QUANT_DTYPES if target in FP8_TARGETS else (torch.int8,)


def check_quant_dtype(dtype: torch.dtype, target: str, name: str | None = None) -> None:
    """Refuse, before anything is built, an 8-bit dtype that `target` does not run.

    TypeError: `dtype` is not one fastres quantizes to; ValueError: `target` does not run it
    (the message names the card, `name` if given, and what to use instead)."""
    if dtype not in QUANT_DTYPES:
        raise TypeError(f"{dtype} is not an 8-bit dtype fastres quantizes to: use torch.int8 or torch.float8_e4m3fn")
    if dtype in quant_dtypes(target):
        return
    info = TARGETS[target]
    device = f"{name} ({target})" if name else f"{target} ({info.cards})"
    if info.backend == "hip":
        raise ValueError(
            f"torch.float8_e4m3fn is not supported on {target}: its fp8 tensor cores take the fnuz encoding "
            f"(float8_e4m3fnuz), and triton runs an e4m3fn dot there upcast to float16, no faster than float16; "
            f"this device is {device}: use torch.int8")
    raise ValueError(
        f"torch.float8_e4m3fn needs sm_89 or newer (Ada, Hopper, Blackwell), for fp8 tensor cores; this device is "
        f"{device}: use torch.int8")


def target_for_capability(major: int, minor: int, name: str = "this card") -> tuple[str, bool]:
    """(target, known) for an NVIDIA compute capability; known False: a newer card than any
    target, given the conservative one. Refuses anything older than sm_80."""
    if (major, minor) < MIN_CAPABILITY:
        raise UnsupportedDeviceError(
            f"{name} has compute capability {major}.{minor} (sm_{major}{minor}); fastres needs sm_80 (Ampere) or "
            f"newer: its kernels need tensor-core MMA and bf16, which triton gives only from sm_80 on")
    exact = f"sm_{major}{minor}"
    if exact in TARGETS:
        return exact, True
    # Same-family capabilities run the family's binary (8.7: Jetson Orin; 10.3: B300; 12.1: GB10).
    family = {8: "sm_86" if minor >= 6 else "sm_80", 9: "sm_90", 10: "sm_100", 12: "sm_120"}.get(major)
    if family is not None:
        return family, True
    return CONSERVATIVE_TARGET, False


def target_for_arch_name(arch: str, name: str = "this card") -> tuple[str, bool]:
    """(target, known) for an AMD `gcnArchName` such as "gfx942:sramecc+:xnack-"."""
    base = arch.split(":")[0]
    if base in TARGETS:
        return base, True
    if base.startswith("gfx9") and base >= "gfx950":
        return "gfx942", False
    raise UnsupportedDeviceError(f"{name} ({base}) is not a GPU fastres supports; on AMD it runs on gfx942 (MI300)")


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    """What config selection needs of a device: its target, SM (CU) count and shared-memory limit."""

    name: str
    target: str
    sms: int
    max_shared: int
    known: bool = True


_warned: set[str] = set()
_lock = threading.Lock()


def facts_from_properties(props) -> DeviceFacts:
    """DeviceFacts from `torch.cuda.get_device_properties` (or anything with its attributes)."""
    arch = getattr(props, "gcnArchName", "") or ""
    if torch.version.hip or arch.startswith("gfx"):
        target, known = target_for_arch_name(arch, props.name)
    else:
        target, known = target_for_capability(props.major, props.minor, props.name)
    shared = int(getattr(props, "shared_memory_per_block_optin", 0) or TARGETS[target].max_shared)
    facts = DeviceFacts(props.name, target, int(props.multi_processor_count), min(shared, TARGETS[target].max_shared),
                        known)
    if not known:
        with _lock:
            if props.name not in _warned:
                _warned.add(props.name)
                warnings.warn(f"fastres: {props.name} is newer than every target fastres knows; using the "
                              f"{target} config space, the most conservative one", stacklevel=3)
    return facts


@functools.lru_cache(maxsize=None)
def _device_facts(index: int) -> DeviceFacts:
    return facts_from_properties(torch.cuda.get_device_properties(index))


def device_facts(device: torch.device) -> DeviceFacts:
    """The facts of a CUDA (or ROCm) device, read once per device."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_facts(index)
