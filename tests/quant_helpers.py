"""A ResNet trained in the tests on real images: scikit-learn's handwritten digits (1,797 8x8
scans, shipped with the package), upsampled to 16x16 RGB. Quantization is judged on it, never on
random weights alone (DESIGN.md section 4): a random network's activations have none of the
outliers and skew that break calibration. NoConvolution: a dispatch mode that fails on any aten
convolution, around a quantized forward."""
from __future__ import annotations

import functools

import pytest
import torch

SIZE = 16
TRAIN = 1400  # images; the other 397 are held out


class NoConvolution(torch.utils._python_dispatch.TorchDispatchMode):
    """Fails on any aten convolution (the quantized forward is fastres' kernels only)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "convolution" in func.__name__ or "conv2d" in func.__name__:
            raise AssertionError(f"{func} ran in the quantized forward")
        return func(*args, **(kwargs or {}))


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images [1797, 3, 16, 16] float32 normalized, labels [1797] int64), in a seeded random order."""
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = ((x - 0.3) / 0.35).repeat(1, 3, 1, 1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order].contiguous(), torch.tensor(d.target)[order]


@functools.lru_cache(maxsize=1)
def trained_resnet() -> torch.nn.Module:
    """torchvision's ResNet with one BasicBlock per stage, trained for three epochs on the
    digits' first 1,400 images (about 95% top-1 on the rest); eval mode, float32, CPU."""
    from torchvision.models.resnet import BasicBlock, ResNet

    x, y = digits()
    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    steps = 3 * -(-TRAIN // 50)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(3):
        order = torch.randperm(TRAIN, generator=g)
        for i in range(0, TRAIN, 50):
            b = order[i:i + 50]
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    return x[TRAIN:], y[TRAIN:]


def calibration(batch: int = 50, count: int = 200) -> list[torch.Tensor]:
    """`count` training images in batches of `batch` (calibration never sees the held-out ones)."""
    x, _ = digits()
    return [x[i:i + batch] for i in range(0, count, batch)]


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.float().argmax(1) == labels).float().mean().item()


def launch_dtypes(plan: str) -> dict[str, str]:
    """{layer: its "dtypes" column} of the launch rows of a printed schedule (`fastres run --plan`,
    `ResNet.schedule`): e.g. "int8(int8->int8)", the compute dtype then input -> output."""
    rows = [line.split() for line in plan.splitlines()]
    return {row[2]: row[-1] for row in rows if len(row) > 3 and row[0].isdigit() and "(" in row[-1]}
