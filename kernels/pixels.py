"""uint8 pixels normalized inside the stem's loads, as torchvision's convert_image_dtype +
normalize do: the pixel_norm table the stem reads, its checks, and the load-time normalization
(kernels/conv.py's NORMALIZE meta-parameter)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# How the stem turns what it loads into the GEMM operand (the NORMALIZE meta-parameter).
NORM_NONE, NORM_FMA, NORM_IEEE = 0, 1, 2
# Rows of a pixel_norm table ([4, C] float32).
_MEAN, _STD, _SCALE, _SHIFT = range(4)


@triton.jit
def normalize_pixels(a, c, k_ok, a_ok, n_ptr, C, NORMALIZE: tl.constexpr):
    """uint8 pixels -> ((a / 255) - mean[c]) / std[c] in float32; 0 where a_ok is False (the
    zero padding is zero in normalized space). c: the channel of each K column."""
    v = a.to(tl.float32)
    if NORMALIZE == 2:
        mean = tl.load(n_ptr + 0 * C + c, mask=k_ok, other=0.0)
        std = tl.load(n_ptr + 1 * C + c, mask=k_ok, other=1.0)
        v = tl.math.div_rn(tl.math.div_rn(v, 255.0) - mean[None, :], std[None, :])
    else:
        scale = tl.load(n_ptr + 2 * C + c, mask=k_ok, other=0.0)
        shift = tl.load(n_ptr + 3 * C + c, mask=k_ok, other=0.0)
        v = v * scale[None, :] + shift[None, :]
    return tl.where(a_ok, v, 0.0)


def pixel_norm(mean, std, device: torch.device | str | None = None) -> torch.Tensor:
    """The table `stem_conv(..., normalize=)` reads for pixels normalized as torchvision does,
    ((x / 255) - mean) / std per channel: float32 [4, C], rows mean, std (as torchvision casts
    them) and the multiply-add's 1 / (255 std) and -mean / std (computed in float64, rounded once).
    """
    m64 = torch.as_tensor(mean, dtype=torch.float64).flatten()
    s64 = torch.as_tensor(std, dtype=torch.float64).flatten()
    if m64.numel() != s64.numel() or m64.numel() == 0:
        raise ValueError(f"mean and std must have one value per channel, got {m64.numel()} and {s64.numel()}")
    if not bool((s64 > 0).all()) or not bool(torch.isfinite(m64).all() and torch.isfinite(s64).all()):
        raise ValueError(f"std must be positive and mean and std finite, got mean {m64.tolist()}, std {s64.tolist()}")
    rows = (m64.float(), s64.float(), (1.0 / (255.0 * s64)).float(), (-m64 / s64).float())
    return torch.stack(rows).to(device)


def check_norm(x: torch.Tensor, normalize: torch.Tensor | None) -> None:
    if normalize is None:
        if x.dtype == torch.uint8:
            raise TypeError("x is uint8 (pixels): pass normalize=pixel_norm(mean, std) to say how to normalize them")
        return
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize= is for uint8 pixels, but x is {x.dtype} (normalize float inputs beforehand)")
    C = x.shape[1]
    if not isinstance(normalize, torch.Tensor) or normalize.dtype != torch.float32 or tuple(normalize.shape) != (4, C):
        got = f"{normalize.dtype} {tuple(normalize.shape)}" if isinstance(normalize, torch.Tensor) else type(normalize).__name__
        raise ValueError(f"normalize must be pixel_norm(mean, std): float32 of shape (4, {C}), got {got}")
    if not normalize.is_contiguous():
        raise ValueError("normalize must be contiguous (as pixel_norm makes it)")
    if normalize.device != x.device:
        raise ValueError(f"normalize is on {normalize.device} but x is on {x.device}")
    if C >= 16:
        raise ValueError(f"uint8 pixels with {C} channels: the stem normalizes pixels of up to 15 channels (its flat-K path)")
