"""8-bit quantization inside the kernels: int8 and float8 e4m3fn, symmetric (issue 32).

    int8:  q = clamp(rint(v * inv), -128, 127)    (one float32 multiply, round half to even)
    e4m3:  q = e4m3fn(clamp(v * inv, -448, 448))  (the cast rounding to nearest even)

The helpers are @triton.jit functions the conv kernels call where they load a float A operand
for an 8-bit GEMM (`gemm_operand`) and where they store an 8-bit output (`quantize`). Both
roundings are exact in the interpreter and on a GPU:

- rint: 1.5 * 2**23 added to a float32 in [-128, 127] leaves the integer it rounds to (half to
  even, IEEE addition) in the low bits of the sum: no libdevice call, and no float -> int
  conversion (which truncates, and wraps past int8 where the interpreter casts).
- e4m3: on a GPU the hardware conversion (``cvt.rn.satfinite.e4m3x2.f32`` from sm_89 on). The
  interpreter's float -> fp8 cast truncates and mangles subnormals (triton issue 11897), so
  there the bits are built from the float32's: the mantissa rounded to 3 bits half to even,
  the exponent rebiased; below 2**-6, the multiple of 2**-9 that rint(|v| * 512) gives.
`quantize_probe` runs `quantize` on a tensor, so that tests compare it with torch's cast on
every value pattern.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import QUANT_DTYPES, check_device, interpreting

# The e4m3 encoding the interpreter needs (its own cast is wrong); compiled kernels use the
# hardware's. A constexpr global: part of the JIT's cache key.
_EMULATE_E4M3 = tl.constexpr(interpreting())
# 1.5 * 2**23: its float32 has the bit pattern 0x4B400000 and an ulp of 1 (see the module docstring).
_RINT_MAGIC = tl.constexpr(12582912.0)
_RINT_BITS = tl.constexpr(0x4B400000)
E4M3_MAX = 448.0
# Targets whose tensor cores multiply e4m3 (triton's tl.dot takes e4m3 x e4m3 from sm_89 on).
# MI300 (gfx942) multiplies e4m3fnuz, another encoding: float8_e4m3fn is refused there too.
FP8_TARGETS = ("sm_89", "sm_90", "sm_100", "sm_120")
# tl.dot's smallest K step for 8-bit operands.
MIN_BLOCK_K_8BIT = 32


def partials_dtype(w: torch.Tensor) -> torch.dtype:
    """The dtype of a split GEMM's partial sums: int32 for int8 weights (exact), else float32."""
    return torch.int32 if w.dtype == torch.int8 else torch.float32


def check_fp8_target(target: str, what: str = "") -> None:
    """Refuse float8_e4m3fn on a target without e4m3 tensor-core products."""
    if target not in FP8_TARGETS:
        raise ValueError(f"float8_e4m3fn runs on {', '.join(FP8_TARGETS)} (e4m3 tensor-core products), not on "
                         f"{target}{what}: use int8 there")


def check_fp8_device(device: torch.device, *tensors: torch.Tensor | None) -> None:
    """Where any of `tensors` is float8_e4m3fn, `device` must have e4m3 tensor cores (the
    interpreter, on the CPU, emulates them)."""
    if device.type != "cuda" or not any(t is not None and t.dtype == torch.float8_e4m3fn for t in tensors):
        return
    from .targets import device_facts

    facts = device_facts(device)
    check_fp8_target(facts.target, f" ({facts.name})")


def check_block_k(config, w: torch.Tensor) -> None:
    """An 8-bit GEMM's config must step K by at least MIN_BLOCK_K_8BIT."""
    if w.dtype in QUANT_DTYPES and config.BLOCK_K < MIN_BLOCK_K_8BIT:
        raise ValueError(f"config {config.name}: an 8-bit GEMM ({w.dtype}) steps K by at least {MIN_BLOCK_K_8BIT} "
                         f"(tl.dot's smallest K for 8-bit operands), got BLOCK_K={config.BLOCK_K}")


def check_float_weights(config, w: torch.Tensor) -> None:
    """The classifier's TMA GEMM runs float weights only (so far; the convs' TMA kernels take
    8-bit ones)."""
    if w.dtype in QUANT_DTYPES:
        raise ValueError(f"config {config.name}: the {config.variant} kernels run float weights only, got w {w.dtype} "
                         f"of shape {tuple(w.shape)}: use a pointer config (variant 'ptr' or 'fused_k')")


@triton.jit
def _e4m3_bits(v):
    """float32 v in [-448, 448] (or NaN) -> the uint8 bits of e4m3fn(v), rounded to nearest even."""
    u = v.to(tl.uint32, bitcast=True)
    sign = (u >> 24) & 0x80
    a = u & 0x7FFFFFFF
    # Normal (|v| >= 2**-6): round the 23-bit mantissa to 3 bits, half to even (a carry moves
    # into the exponent), then rebias the exponent from 127 to 7.
    normal = ((a + 0x7FFFF + ((a >> 20) & 1)) >> 20) - ((127 - 7) << 3)
    # Subnormal: multiples of 2**-9; 8 (= 2**-6) is the smallest normal's code, as it should be.
    sub = ((a.to(tl.float32, bitcast=True) * 512.0 + _RINT_MAGIC).to(tl.uint32, bitcast=True) - _RINT_BITS)
    mag = tl.where(a < 0x3C800000, sub, normal)
    mag = tl.where(a > 0x7F800000, 0x7F, mag)  # NaN
    return (sign | mag).to(tl.uint8)


@triton.jit
def quantize(v, inv, dtype: tl.constexpr):
    """float32 v -> `dtype` (tl.int8 or tl.float8e4nv) with the inverse scale `inv` (float32)."""
    y = v * inv
    if dtype == tl.int8:
        y = tl.minimum(tl.maximum(y, -128.0), 127.0)
        q = ((y + _RINT_MAGIC).to(tl.int32, bitcast=True) - _RINT_BITS).to(tl.int8)
    else:
        # where(), not minimum/maximum: NaN stays NaN, as torch's clamp and cast keep it.
        y = tl.where(y > 448.0, 448.0, tl.where(y < -448.0, -448.0, y))
        if _EMULATE_E4M3:
            q = _e4m3_bits(y).to(tl.float8e4nv, bitcast=True)
        else:
            q = y.to(tl.float8e4nv)
    return q


@triton.jit
def gemm_operand(a, dtype: tl.constexpr, in_inv):
    """A loaded A tile as tl.dot takes it: cast to the weights' `dtype`; or, for an 8-bit
    GEMM reading a float input (`in_inv` given), quantized with it."""
    if in_inv is not None:
        return quantize(a.to(tl.float32), in_inv, dtype)
    else:
        return a.to(dtype)


@triton.jit
def mma(a, b, acc, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b. For e4m3 operands the product of each K tile is added into the float32
    accumulator as it comes (max_num_imprecise_acc = the tile's K): on sm_90 triton otherwise
    lets Hopper's fp8 tensor cores carry the whole K loop in their narrower internal sum (its
    default there, 2**30), which moves a 4608-long dot's result by more than a code.
    out_dtype is the accumulator's: triton 3.6 asserts it equals acc's (its default, float32,
    refuses an int8 dot's int32 accumulator), where 3.8 takes it from acc."""
    if b.dtype.is_fp8():
        return tl.dot(a, b, acc, input_precision=INPUT_PRECISION, max_num_imprecise_acc=b.shape[0],
                      out_dtype=acc.dtype)
    else:
        return tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def dequantize(acc, rn, n_ok, s_ptr):
    """An 8-bit GEMM's accumulator (int32 or float32) times its per-output-channel scale
    (float32 [Cout] at s_ptr, i.e. s_x * s_w[co]); a float GEMM's (s_ptr None) as it is."""
    if s_ptr is not None:
        acc = acc.to(tl.float32) * tl.load(s_ptr + rn, mask=n_ok, other=0.0)[None, :]
    return acc


@triton.jit
def _quantize_probe_kernel(x_ptr, q_ptr, COUNT, inv, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < COUNT
    v = tl.load(x_ptr + i, mask=ok, other=0.0)
    tl.store(q_ptr + i, quantize(v, inv, q_ptr.dtype.element_ty), mask=ok)


def quantize_probe(x: torch.Tensor, inv: float, dtype: torch.dtype) -> torch.Tensor:
    """`quantize` on every element of x (float32, 1-D): what the kernels store for an 8-bit
    output or feed tl.dot for a float input of an 8-bit GEMM. Exposed for tests."""
    check_device(x=x)
    if x.dtype != torch.float32 or x.dim() != 1:
        raise TypeError(f"x must be a 1-D float32 tensor, got {x.dtype} with shape {tuple(x.shape)}")
    if dtype not in QUANT_DTYPES:
        raise TypeError(f"dtype must be one of {QUANT_DTYPES}, got {dtype}")
    q = torch.empty(x.shape, dtype=dtype, device=x.device)
    BLOCK = 1024
    _quantize_probe_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, q, x.numel(), float(inv), BLOCK=BLOCK)
    return q
