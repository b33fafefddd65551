"""Input validation shared by the launchers: every error names the argument and shows
expected vs actual, so a bad call never reaches a kernel and never returns garbage."""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Quantized weights and activations (kernels/quant.py): symmetric int8 and float8 e4m3fn.
QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)


def interpreting() -> bool:
    """True when triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_device(**tensors: torch.Tensor | None) -> torch.device:
    """All tensors on one device; CPU only under the interpreter, CUDA otherwise."""
    named = {k: t for k, t in tensors.items() if t is not None}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    devices = {k: t.device for k, t in named.items()}
    first_name, device = next(iter(devices.items()))
    for name, dev in devices.items():
        if dev != device:
            raise ValueError(
                f"{name} is on {dev} but {first_name} is on {device}: all tensors must be on one device"
            )
    if device.type == "cpu":
        if not interpreting():
            raise ValueError(
                f"{first_name} is a CPU tensor: fastres kernels need a CUDA device; CPU tensors run only "
                "through triton's interpreter (set TRITON_INTERPRET=1 before importing triton)"
            )
        for name, t in named.items():
            if t.dtype == torch.bfloat16:
                raise TypeError(
                    f"{name} is bfloat16 on the CPU: triton's interpreter multiplies bf16 wrongly "
                    "(triton issue 11584), so bf16 runs only on a GPU"
                )
    elif device.type != "cuda":
        raise ValueError(f"{first_name} is on {device}: fastres kernels run on cuda (or cpu under TRITON_INTERPRET=1)")
    return device


def check_tensor(name: str, t: torch.Tensor, *, rank: int, dtypes=FLOAT_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{name} must have rank {rank}, got rank {t.dim()} with shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {t.dtype}")


def check_channels_last(name: str, t: torch.Tensor) -> None:
    """Kernels read NHWC: a contiguous NCHW tensor is refused rather than silently copied."""
    if not t.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(
            f"{name} must be channels_last (physically NHWC), got shape {tuple(t.shape)} with strides "
            f"{tuple(t.stride())}: pass {name}.contiguous(memory_format=torch.channels_last)"
        )


def check_same_dtype(ref_name: str, ref: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}: they must match")


def check_bias(b: torch.Tensor, cout: int) -> None:
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"b must be a torch.Tensor, got {type(b).__name__}")
    if tuple(b.shape) != (cout,):
        raise ValueError(f"b must have shape ({cout},) (one per output channel), got {tuple(b.shape)}")
    if b.dtype != torch.float32:
        raise TypeError(f"b must be float32 (biases stay float32), got {b.dtype}")
    if b.stride(0) != 1:
        raise ValueError("b must be contiguous")


def is_nhwc_window(t: torch.Tensor) -> bool:
    """Whether t [N, C, H, W] is channels_last, or the interior window of a bigger channels_last
    map (a zero-bordered activation's): channels dense, pixels of a row dense, rows and images
    at least as far apart as a window's. The kernels read and write it through its strides."""
    if t.is_contiguous(memory_format=torch.channels_last):
        return True
    n, c, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    return sc == 1 and sw == c and sh >= w * c and (n == 1 or sn >= h * sh)


def check_nhwc(name: str, t: torch.Tensor) -> None:
    """check_channels_last, also taking the interior window of a bigger NHWC map (`is_nhwc_window`)."""
    if not is_nhwc_window(t):
        check_channels_last(name, t)


def check_like(name: str, t: torch.Tensor | None, shape: tuple, dtype: torch.dtype, *, window: bool = False) -> None:
    """`residual` / `out` must have exactly the output's shape, dtype and NHWC layout
    (window: or be the interior window of a bigger NHWC map, `is_nhwc_window`)."""
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (the output's), got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (the output's), got {t.dtype}")
    (check_nhwc if window else check_channels_last)(name, t)


def check_precision(input_precision: str, dtype: torch.dtype) -> str:
    if input_precision not in ("ieee", "tf32"):
        raise ValueError(f"input_precision must be 'ieee' or 'tf32', got {input_precision!r}")
    return input_precision if dtype == torch.float32 else "ieee"


def pair(name: str, v) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")


def out_size(size: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def nhwc_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of a logical [N, C, H, W] tensor in the kernels' (n, h, w, c) argument order."""
    s = t.stride()
    return s[0], s[2], s[3], s[1]


def _byte_range(t: torch.Tensor) -> tuple[int, int]:
    start = t.data_ptr()
    span = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) + 1 if t.numel() else 0
    return start, start + span * t.element_size()


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def check_no_overlap(
    out_name: str, out: torch.Tensor | None, /, *, elementwise: tuple[str, ...] = (), **inputs: torch.Tensor | None
) -> None:
    """`out` must not share memory with an input that other programs still read.

    Inputs named in `elementwise` are read at exactly the element each program then writes
    (a residual, add_relu's operands): being `out` itself is fine there, a shifted view is not.
    """
    if out is None or out.numel() == 0:
        return
    o0, o1 = _byte_range(out)
    for name, t in inputs.items():
        if t is None or t.numel() == 0 or t.device != out.device:
            continue
        if name in elementwise and _same_view(t, out):
            continue
        t0, t1 = _byte_range(t)
        if o0 < t1 and t0 < o1:
            raise ValueError(f"{out_name} overlaps {name} in memory: the kernel would read values it has already overwritten")


class Quant(NamedTuple):
    """The 8-bit side of a conv launch (kernels/quant.py), as `check_quant` accepted it: the
    dequantization scale [Cout] of 8-bit weights, the inverse scale that quantizes a float
    input as it is loaded, the residual's scale, the 8-bit output's inverse scale (each None
    where it does not apply), and the output's dtype."""

    scale: torch.Tensor | None = None
    in_inv: float | None = None
    r_scale: float | None = None
    out_inv: float | None = None
    out_dtype: torch.dtype | None = None

    @property
    def kernel_args(self) -> dict:
        """The conv kernels' keyword arguments for it (none at all for a float launch)."""
        named = {"s_ptr": self.scale, "in_inv": self.in_inv, "r_scale": self.r_scale, "out_inv": self.out_inv}
        return {k: v for k, v in named.items() if v is not None}


def _inverse_scale(name: str, v) -> float | None:
    """A scale argument: a python float (or int), finite and positive; None stays None. Taken
    by value: the kernel gets it as an argument, which a CUDA graph records at capture."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        got = f"a tensor ({v.dtype}, shape {tuple(v.shape)})" if isinstance(v, torch.Tensor) else type(v).__name__
        raise TypeError(f"{name} must be a python float (the kernel takes it by value), got {got}")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and positive, got {v}")
    return float(v)


def check_dequant_scale(scale, w: torch.Tensor, *, product: str = "s_x * s_w[co]",
                        per: str = "output channel") -> None:
    """An 8-bit GEMM's dequantization scale: a contiguous float32 tensor, one per row of w
    (`product`: what it is, for the message; `per`: what a row of w is)."""
    rows = w.shape[0]
    if not isinstance(scale, torch.Tensor):
        raise ValueError(f"w is {w.dtype} (shape {tuple(w.shape)}): pass scale=, the float32 [{rows}] dequantization "
                         f"scale {product}, got {type(scale).__name__}")
    if scale.dtype != torch.float32 or tuple(scale.shape) != (rows,) or scale.stride(0) != 1:
        raise ValueError(f"scale must be a contiguous float32 tensor of shape ({rows},) (one per {per} of w, "
                         f"shape {tuple(w.shape)}), got {scale.dtype} of shape {tuple(scale.shape)}")


def check_quant(x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None, out: torch.Tensor | None, *,
                scale=None, in_inv=None, residual_scale=None, out_inv=None) -> Quant:
    """The dtypes of a conv launch with its quantization arguments (kernels/quant.py).

    Float weights (FLOAT_DTYPES): x, out and residual of w's dtype, or an 8-bit residual
    (QUANT_DTYPES) with its residual_scale; no scale, in_inv, out_inv. 8-bit weights:
    scale (float32 [Cout]); x of w's dtype, or float (or the stem's uint8 pixels), quantized
    as it is loaded with in_inv; output of w's dtype with out_inv, or float16 / bfloat16 /
    float32 (pass out= of that dtype); a residual of any of these dtypes, 8-bit with its
    residual_scale. Shapes and layouts are check_conv_args'.
    """
    if w.dtype == torch.uint8:
        raise TypeError(f"w is uint8 (shape {tuple(w.shape)}): 8-bit weights are symmetric int8 or float8_e4m3fn")
    in_inv, out_inv = _inverse_scale("in_inv", in_inv), _inverse_scale("out_inv", out_inv)
    r_scale = _inverse_scale("residual_scale", residual_scale)
    quantized = w.dtype in QUANT_DTYPES
    # (a float conv's output has w's dtype: check_like says so where out has another)
    out_dtype = out.dtype if out is not None and quantized else w.dtype
    if not quantized:
        for name, v in (("scale", scale), ("in_inv", in_inv), ("out_inv", out_inv)):
            if v is not None:
                raise ValueError(f"{name}= is for 8-bit weights ({', '.join(map(str, QUANT_DTYPES))}), but w is {w.dtype}")
    else:
        check_dequant_scale(scale, w)
        if x.dtype == w.dtype:
            if in_inv is not None:
                raise ValueError(f"in_inv= quantizes a float input, but x is already {x.dtype}")
        elif x.dtype in QUANT_DTYPES:
            raise TypeError(f"x is {x.dtype} but w is {w.dtype}: an 8-bit input must have the weights' dtype")
        elif in_inv is None:
            raise ValueError(f"x is {x.dtype} (shape {tuple(x.shape)}) and w {w.dtype}: pass in_inv= (a python float, "
                             "the inverse activation scale) to quantize x as it is loaded")
        if out_dtype not in (w.dtype,) + FLOAT_DTYPES:
            raise TypeError(f"out has dtype {out_dtype}: the output of a {w.dtype} conv is {w.dtype} or float "
                            f"({', '.join(map(str, FLOAT_DTYPES))})")
        if out_dtype == w.dtype and out_inv is None:
            raise ValueError(f"the output is {w.dtype}: pass out_inv= (a python float, its inverse scale), or out= a "
                             "float tensor for a float output")
        if out_dtype != w.dtype and out_inv is not None:
            raise ValueError(f"out_inv= quantizes an 8-bit output, but out is {out_dtype}")
    if residual is None:
        if r_scale is not None:
            raise ValueError("residual_scale= without a residual")
    else:
        floats = FLOAT_DTYPES if quantized else (w.dtype,)
        if residual.dtype not in floats + QUANT_DTYPES:
            raise TypeError(f"residual must have dtype {' or '.join(map(str, floats))} or 8-bit "
                            f"({', '.join(map(str, QUANT_DTYPES))}, with residual_scale=) for w of dtype {w.dtype}, "
                            f"got {residual.dtype}")
        if residual.dtype in QUANT_DTYPES and r_scale is None:
            raise ValueError(f"residual is {residual.dtype}: pass residual_scale= (a python float, its scale)")
    return Quant(scale if quantized else None, in_inv if x.dtype != w.dtype else None, r_scale, out_inv, out_dtype)
