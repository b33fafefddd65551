"""Folding an inference-mode BatchNorm into the convolution before it."""
from __future__ import annotations

import torch


def fold_bn(
    conv_weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    *,
    conv_bias: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """w' = w * g / sqrt(var + eps), b' = beta + (conv_bias - mean) * g / sqrt(var + eps).

    conv_weight: [Cout, Cin, KH, KW]; the BN tensors: [Cout]. Computed in float64, then cast:
    returns w' channels_last in `dtype` (default conv_weight's dtype) and b' float32 [Cout].
    """
    if not isinstance(conv_weight, torch.Tensor) or conv_weight.dim() != 4:
        shape = tuple(conv_weight.shape) if isinstance(conv_weight, torch.Tensor) else type(conv_weight).__name__
        raise ValueError(f"conv_weight must be a [Cout, Cin, KH, KW] tensor, got {shape}")
    cout = conv_weight.shape[0]
    named = {"bn_weight": bn_weight, "bn_bias": bn_bias, "running_mean": running_mean, "running_var": running_var}
    if conv_bias is not None:
        named["conv_bias"] = conv_bias
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (cout,):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape ({cout},) to match conv_weight {tuple(conv_weight.shape)}, got {shape}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    dtype = dtype or conv_weight.dtype
    scale = bn_weight.double() / torch.sqrt(running_var.double() + eps)
    w = conv_weight.double() * scale[:, None, None, None]
    shift = conv_bias.double() - running_mean.double() if conv_bias is not None else -running_mean.double()
    b = bn_bias.double() + shift * scale
    return w.to(dtype).contiguous(memory_format=torch.channels_last), b.float().contiguous()
