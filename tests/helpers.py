"""Shared test utilities: assert_close with diagnostics, tolerances, random channels_last data,
the conv geometries of torchvision's ResNets, and calibrated models (DESIGN.md section 4)."""
from __future__ import annotations

import functools

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"

# Per-kernel relative-L2 bounds (DESIGN.md section 4).
KERNEL_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
TF32_RTOL = 1e-3
DTYPES = [
    torch.float32,
    torch.float16,
    # The interpreter's tl.dot multiplies bf16 bit patterns (triton issue 11584).
    __import__("pytest").param(torch.bfloat16, marks=__import__("pytest").mark.skipif(
        not ON_GPU, reason="bf16 tl.dot is wrong in triton's CPU interpreter (triton issue 11584): GPU only")),
]


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_close(out: torch.Tensor, ref: torch.Tensor, rtol: float, what: str = "output") -> float:
    """Fail unless ||out - ref||_2 / ||ref||_2 <= rtol; report rel, max |err| and where it is."""
    assert tuple(out.shape) == tuple(ref.shape), f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    o, r = out.detach().double().cpu(), ref.detach().double().cpu()
    nonfinite = ~torch.isfinite(o) & torch.isfinite(r)
    if nonfinite.any():
        idx = tuple(int(i) for i in nonfinite.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(nonfinite.sum())} non-finite values where the reference is finite, first at {idx}: "
            f"got {o[idx].item()}, expected {r[idx].item()}"
        )
    rel = rel_error(o, r)
    if not rel <= rtol:
        err = (o - r).abs()
        flat = int(err.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))
        raise AssertionError(
            f"{what}: relative L2 error {rel:.3e} > {rtol:.1e}; max |err| {err.max().item():.3e} at {idx} "
            f"(got {o[idx].item():.6g}, expected {r[idx].item():.6g}); shape {tuple(o.shape)}"
        )
    return rel


def nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def rand_nhwc(*shape: int, dtype=torch.float32, device=DEVICE, scale: float = 1.0) -> torch.Tensor:
    return nhwc((torch.randn(*shape) * scale).to(dtype)).to(device)


def calibrate_(model: torch.nn.Module, *, size=(32, 32), batches: int = 2, batch: int = 4, seed: int = 0):
    """Calibrated BatchNorm as trained ResNets have it (DESIGN.md section 4), then eval()."""
    from fastres.models import calibrate_ as calibrate

    return calibrate(model, size=size, batches=batches, batch=batch, seed=seed)


def randomize_bn_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every BatchNorm2d of `model` given random affine parameters and running statistics (so
    that a fold which mixes up mean, var, gamma, beta or eps cannot pass), then eval(). For
    models other than torchvision's (timm's, transformers'), whose blocks calibrate_ does not
    know; gamma stays in [0.3, 1.0] so deep random stacks keep a sane scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.7 + 0.3)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    return model.eval()


RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2")


@functools.lru_cache(maxsize=None)
def resnet_conv_geometries() -> tuple[tuple, ...]:
    """Unique (k, stride, padding, cin, cout, role) over the torchvision ResNets.

    role: "residual" for the last conv of a residual branch (add + ReLU fused), "projection"
    for the downsample conv (no ReLU), "relu" otherwise. Built on the meta device: no weights.
    """
    import torchvision.models as tvm
    from torchvision.models.resnet import BasicBlock, Bottleneck

    found = set()
    for name in RESNETS:
        with torch.device("meta"):
            model = getattr(tvm, name)()
        role = {}
        for m in model.modules():
            if isinstance(m, BasicBlock):
                role[id(m.conv2)] = "residual"
            elif isinstance(m, Bottleneck):
                role[id(m.conv3)] = "residual"
            if isinstance(m, (BasicBlock, Bottleneck)) and m.downsample is not None:
                role[id(m.downsample[0])] = "projection"
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                assert m.kernel_size[0] == m.kernel_size[1] and m.groups == 1 and m.dilation == (1, 1)
                found.add((m.kernel_size[0], m.stride[0], m.padding[0], m.in_channels, m.out_channels,
                           role.get(id(m), "relu")))
    return tuple(sorted(found))
