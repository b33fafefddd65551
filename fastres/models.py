"""torchvision ResNets for checking fastres: calibrated random weights, and the torchvision
model equivalent to a set of folded parameters (the reference for a converted file)."""
from __future__ import annotations

import torch

from .plan import ARCHS, arch_convs


def _torchvision():
    try:
        import torchvision
    except ImportError as exc:  # torchvision is needed only to build or check against a model
        raise ImportError("this needs torchvision: pip install torchvision") from exc
    return torchvision


def calibrate_(model: torch.nn.Module, *, size=(32, 32), batches: int = 2, batch: int = 4, seed: int = 0) -> torch.nn.Module:
    """Give `model` BatchNorm statistics like a trained ResNet's, then eval() it.

    gamma in [0.5, 1.5] except a small gamma in [0.05, 0.3] on the last BN of each residual
    branch (as trained ResNets have; with gamma ~ 1 everywhere a deep random ResNet is so
    ill-conditioned that even torch's own float16 forward is far off); beta in [-0.2, 0.2];
    running statistics measured on random batches (momentum=None: a true average).
    """
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    last = set()
    for m in model.modules():
        name = type(m).__name__
        if name == "BasicBlock":
            last.add(id(m.bn2))
        elif name == "Bottleneck":
            last.add(id(m.bn3))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                lo, hi = (0.05, 0.3) if id(m) in last else (0.5, 1.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * (hi - lo) + lo)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for _ in range(batches):
            model(torch.randn(batch, 3, *size, generator=g).to(device))
    return model.eval()


def random_resnet(arch: str, num_classes: int = 1000, *, seed: int = 0) -> torch.nn.Module:
    """A torchvision `arch` with seeded random weights and calibrated BatchNorm, in eval mode."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; supported: {', '.join(ARCHS)}")
    torch.manual_seed(seed)
    model = getattr(_torchvision().models, arch)(num_classes=num_classes)
    return calibrate_(model, seed=seed)


def unfolded(arch: str, params: dict[str, torch.Tensor], num_classes: int) -> torch.nn.Module:
    """The torchvision model that computes exactly what folded `params` compute (float32).

    Each conv gets the folded weight and its BatchNorm becomes an exact identity plus the
    folded bias (gamma 1, mean 0, var 1, eps 0), so torchvision's own forward is the reference
    for a converted file that no longer holds the original BatchNorm.
    """
    model = getattr(_torchvision().models, arch)(num_classes=num_classes)
    sd = {}
    for c in arch_convs(arch):
        model.get_submodule(c.bn).eps = 0.0
        sd[f"{c.name}.weight"] = params[f"{c.name}.weight"].float()
        sd[f"{c.bn}.weight"] = torch.ones(c.cout)
        sd[f"{c.bn}.bias"] = params[f"{c.name}.bias"].float()
        sd[f"{c.bn}.running_mean"] = torch.zeros(c.cout)
        sd[f"{c.bn}.running_var"] = torch.ones(c.cout)
        sd[f"{c.bn}.num_batches_tracked"] = torch.tensor(0)
    sd["fc.weight"] = params["fc.weight"].float()
    sd["fc.bias"] = params["fc.bias"].float()
    model.load_state_dict({k: v.cpu() for k, v in sd.items()})
    return model.eval()
