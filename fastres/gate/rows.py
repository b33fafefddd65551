"""Every variant of a kernel the gate compiles, in any dtype: the float ones
(`fastres.gate.variants`) and the 8-bit ones (`fastres.gate.variants_8bit`, built from them)."""
from __future__ import annotations

import torch

from .variants import Variant, dtype_name, float_variants
from .variants_8bit import QUANT_DTYPES, quant_variants


def variants(kernel: str, dtype: str | torch.dtype, family: str = "ptr") -> list[Variant]:
    """The variants of `kernel` at `dtype` in `family` ("ptr": the pointer kernels, or a Hopper
    variant family): see `fastres.gate.variants.float_variants` and
    `fastres.gate.variants_8bit.quant_variants`."""
    dt = dtype_name(dtype)
    if dt in QUANT_DTYPES:
        return quant_variants(kernel, dt, family)
    return float_variants(kernel, dt, family)
