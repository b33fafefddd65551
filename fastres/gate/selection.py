"""Which rows the gate compiles: the configs the engine can launch on a target
(``engine_space``) and for a variant at all (``dispatchable``), which variants a target other
than sm_90 compiles for each config (``heaviest``), and which rows must use the tensor cores
(``tensor_core_required``). The variants themselves are built in ``fastres.gate.variants``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .target import DEFAULT_TARGET, Target
from .variants import DTYPES, TRITON_TYPE, Variant, dtype_name

if TYPE_CHECKING:
    from ..kernels.config import Config


def tensor_core_required(kernel: str, dtype: str | torch.dtype, precision: str | None,
                         target: Target = DEFAULT_TARGET) -> bool:
    """Whether the row must use the target's tensor-core instruction: GEMM-type kernels, except
    exact float32 products on a target whose tensor cores take no fp32 operands.

    NVIDIA's tensor cores (HMMA, Hopper's wgmma, Blackwell's tcgen05) multiply fp16, bf16,
    tf32 and fp8 operands, not fp32, so float32 with input_precision="ieee" (the exact default,
    DESIGN.md section 4) is always compiled to FMA instructions there. Those rows are reported
    (tensor core "no") but do not fail. MI300 (gfx942) has fp32 MFMA (v_mfma_f32_32x32x2_f32),
    which triton uses for "ieee", and xf32 MFMA for "tf32": every GEMM row needs it there.
    """
    from ..kernels.config import GEMM_KERNELS

    if kernel not in GEMM_KERNELS:
        return False
    return target.fp32_tensor_core or not (dtype_name(dtype) == "float32" and precision == "ieee")


def engine_space(kernel: str, dtype: str | torch.dtype, target: Target = DEFAULT_TARGET, *,
                 residual: bool = False) -> tuple[Config, ...]:
    """The configs the engine may dispatch for `kernel` at `dtype` on `target` (residual=True:
    to a launch with a fused residual): that target's space in ``kernels.config``."""
    from ..kernels.config import config_space

    return config_space(kernel, DTYPES[dtype_name(dtype)], residual=residual, target=target.name)


def has_engine_space(kernel: str, dtype: str | torch.dtype, target: Target = DEFAULT_TARGET) -> bool:
    """Whether the engine dispatches `kernel` at `dtype` on `target` at all (8-bit dtypes: the
    GEMM-type convs and the split-K sum; float8_e4m3fn on the targets with e4m3 tensor cores)."""
    from ..kernels.config import has_space

    return has_space(kernel, DTYPES[dtype_name(dtype)], target.name)


def dispatchable(kernel: str, config: Config, variant: Variant, dtype: str | torch.dtype,
                 target: Target = DEFAULT_TARGET) -> bool:
    """Whether the engine can launch `config` for the layer of `variant` at `dtype` on `target`.

    A GEMM config whose BLOCK_K is wider than the layer's reduction (the K the launcher hands
    ``select_config``) rounded up to a power of two (at least 16, the smallest ``tl.dot`` K)
    is never chosen: ``select_config`` takes the widest BLOCK_K <= that, and a wider K step
    would only multiply zeros. ResNet layers have K >= 64, so today this removes nothing.
    A fused split (a ``fused_k`` config, or a split TMA one) is dispatched on Hopper in
    float16 only, for tiles of at most ``FUSED_MAX_BLOCK_M`` rows. A tile whose fused residual spills
    (``config.residual_unsafe``, or left out of the target's residual space) is never launched
    with a residual in its epilogue either (an unfused split launch adds the residual in the
    reduce instead). Every config of the space is
    compiled for some variant either way.
    """
    from ..kernels.config import FUSED_MAX_BLOCK_M, HOPPER_DTYPES, HOPPER_TARGETS, residual_unsafe

    meta = dict(variant.meta)
    fused = meta.get("FUSED") or (config.tma and meta.get("SPLIT"))
    if fused and (target.name not in HOPPER_TARGETS or config.BLOCK_M > FUSED_MAX_BLOCK_M
                  or DTYPES[dtype_name(dtype)] not in HOPPER_DTYPES):
        return False  # fused splits: on Hopper, float16, tiles of up to 64 rows (kernels.config)
    if meta.get("HAS_RESIDUAL") and not meta.get("SPLIT"):
        if residual_unsafe(kernel, config):
            return False  # kept from residual convs by select_config / tuning_candidates(residual=True)
        if config in engine_space(kernel, dtype, target) and config not in engine_space(
                kernel, dtype, target, residual=True):
            return False
    k = variant.gemm_k
    if k is None:
        return True
    return config.BLOCK_K <= max(16, 1 << max(0, int(k) - 1).bit_length())


def _weight(v: Variant, dtype: str) -> tuple:
    """How heavy a variant's code is, as a sort key (``heaviest``)."""
    meta, pointers, values = dict(v.meta), dict(v.pointers), dict(v.values)
    x = pointers.get("x_ptr", "x")
    cast = x not in ("x", TRITON_TYPE[dtype])
    fused_residual = bool(meta.get("HAS_RESIDUAL")) and not meta.get("SPLIT")
    return (fused_residual, bool(meta.get("RELU")), values.get("M") != 1, _width(x, dtype), cast,
            meta.get("KH", 1) * meta.get("KW", 1), _width(pointers.get("y_ptr", "x"), dtype), values.get("sxc", 1) == 1)


def _width(ty: str, dtype: str) -> int:
    """Bytes per element of a pointer's type ("x": the engine's dtype)."""
    return {"fp32": 4, "fp16": 2, "bf16": 2, "u8": 1, "i8": 1, "fp8e4nv": 1}[TRITON_TYPE[dtype] if ty == "x" else ty]


def _family(v: Variant, dtype: str) -> tuple:
    """Which of ``heaviest``'s groups a variant is in."""
    meta, pointers, values = dict(v.meta), dict(v.pointers), dict(v.values)
    wide = _width(pointers.get("x_ptr", "x"), dtype) > _width("x", dtype)
    head = values.get("OH") == 1 and values.get("OW") == 1  # the classifier's 1x1 "images"
    # The stem reading uint8 pixels normalizes them in its loads: code of its own.
    pixels = pointers.get("x_ptr") == "u8"
    return (v.precision, bool(meta.get("SPLIT")), wide, head, pixels)


def heaviest(dtype: str | torch.dtype, options: list[Variant]) -> list[Variant]:
    """The variants of `options` (one config's dispatchable ones at `dtype`) that a target
    other than ``DEFAULT_TARGET`` compiles (in the order of `options`): per input precision,
    split-K or not, input operand wider than `dtype` or not, and the head's linear layer or
    a conv, the heaviest one.

    Each of those is different code whose weight ranks differently per target: a split
    launch's epilogue stores float32 partials, an unsplit one applies bias, ReLU and the
    residual (the 128x128x64 conv: the unsplit one spills on sm_80, the split one has 45
    more registers on sm_100); a float32 input to a 16-bit GEMM (the stem reading the
    user's input, the head's pooled features) doubles the operand tiles in shared memory
    (the most shared memory of all variants) while not the most registers (the residual's
    or a cast between 16-bit types beat it by up to 58); the head's linear layer (output
    size 1x1, constant strides) is register-allocated differently from the convs and is the
    one that spills for some tiles on sm_100 and sm_120. Within a group the heaviest has a
    fused residual (one more tile loaded in the epilogue), then ReLU, a batch other than 1
    (M = 1 is a constant to the JIT, which simplifies the code), the widest input (a float32
    GEMM reading a 16-bit input loads half as much), a cast of the input (float16 to
    bfloat16 or back), more taps (a 3x3's index math and bounds masks over a 1x1's), the
    widest output, a contiguous channel axis (wide vector loads). ``fastres check
    --all-variants`` compiles every variant instead.
    """
    dt = dtype_name(dtype)
    groups: dict[tuple, list[Variant]] = {}
    for v in options:
        groups.setdefault(_family(v, dt), []).append(v)
    picked = [max(vs, key=lambda v: _weight(v, dt)) for vs in groups.values()]  # max keeps the first of equals
    return [v for v in options if v in picked]
