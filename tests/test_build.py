"""from_torchvision: parity of every supported architecture against torchvision in float64,
and a refusal for everything fastres cannot run exactly."""
from __future__ import annotations

import pytest
import torch
import torchvision

import fastres
from fastres.plan import UnsupportedModelError
from helpers import DEVICE, ON_GPU, assert_close, calibrate_, rel_error

ARCH_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2"]
# Small, odd, non-square inputs keep the interpreter fast; the GPU tier runs 224x224 too.
SIZE = (33, 45)
_models: dict = {}


def calibrated(arch: str, num_classes: int = 10) -> torch.nn.Module:
    key = (arch, num_classes)
    if key not in _models:
        torch.manual_seed(1)
        _models[key] = calibrate_(getattr(torchvision.models, arch)(num_classes=num_classes), size=(48, 40))
    return _models[key]


def reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's own forward in float64 on the CPU: the numerics policy's reference."""
    import copy

    return copy.deepcopy(model).double()(x.double().cpu())


def torch_error(model, x, dtype, ref) -> float:
    """torch's own error at `dtype` on the same input (the float16 bound is relative to it)."""
    import copy

    m = copy.deepcopy(model).to(DEVICE, dtype)
    with torch.inference_mode():
        return rel_error(m(x.to(DEVICE, dtype)), ref)


def network_bound(dtype, model, x, ref) -> float:
    if dtype == torch.float32:
        return 1e-4
    if dtype == torch.float16:
        return min(max(5e-3, 2 * torch_error(model, x, dtype, ref)), 2e-2)
    return min(max(2e-2, 2 * torch_error(model, x, dtype, ref)), 5e-2)


DTYPES = [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not ON_GPU, reason="bf16 tl.dot is wrong in triton's CPU interpreter (triton issue 11584): GPU only"))]


# Batch 2 runs the same code at a second batch size: every architecture on a GPU; through the
# interpreter resnet18 and resnet50, one of each block type (the others at batch 2 cost minutes
# of CI and add no code path batch 1 of them and batch 2 of these two do not run).
# Likewise the deep and wide ones in float16: float32 checks every architecture exactly, and
# their float16 kernels are resnet50's (the same convs, more blocks or twice the channels),
# which float16 checks here.
_BATCH2 = ARCH_NAMES if ON_GPU else ["resnet18", "resnet50"]
PARITY_CASES = [(arch, batch) for arch in ARCH_NAMES for batch in (1, 2) if batch == 1 or arch in _BATCH2]
_FP16_GPU_ONLY = ("resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2")
_BIG_FP16 = pytest.mark.skipif(not ON_GPU, reason="a deep or wide ResNet in float16 through the interpreter costs a "
                                                  "minute of CI and adds no kernel resnet50's float16 run lacks: "
                                                  "GPU only")


def _parity_params():
    out = []
    for dtype in DTYPES:
        dt = dtype.values[0] if hasattr(dtype, "values") else dtype
        marks = list(getattr(dtype, "marks", ()))
        for arch, batch in PARITY_CASES:
            extra = [_BIG_FP16] if dt == torch.float16 and arch in _FP16_GPU_ONLY else []
            if arch in _FP16_GPU_ONLY:  # the minutes-long interpreter runs: out of `-m "not slow"`
                extra.append(pytest.mark.slow)
            out.append(pytest.param(arch, dt, batch, marks=marks + extra, id=f"{arch}-{dt}-{batch}"))
    return out


@pytest.mark.parametrize("arch,dtype,batch", _parity_params())
def test_parity(arch, dtype, batch, parity_report):
    model = calibrated(arch)
    x = torch.randn(batch, 3, *SIZE)
    ref = reference(model, x)
    fast = fastres.from_torchvision(model, dtype=dtype, device=DEVICE)
    y = fast(x.to(DEVICE, dtype))
    assert y.dtype == dtype and tuple(y.shape) == (batch, 10)
    bound = network_bound(dtype, model, x, ref)
    rel = assert_close(y, ref, bound, what=f"{arch} {dtype} logits")
    top1 = (y.float().cpu().argmax(1) == ref.argmax(1)).float().mean().item()
    parity_report.append(f"{arch:18s} {str(dtype):15s} batch {batch} {SIZE[0]}x{SIZE[1]}: rel {rel:.2e} (bound {bound:.1e}), top-1 agreement {top1:.0%}")


@pytest.mark.slow
def test_resnet50_224(parity_report):
    model = calibrated("resnet50", 1000)
    x = torch.randn(1, 3, 224, 224)
    ref = reference(model, x)
    fast = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE)
    y = fast(x.to(DEVICE, torch.float16))
    bound = network_bound(torch.float16, model, x, ref)
    rel = assert_close(y, ref, bound, what="resnet50 224x224 fp16 logits")
    top5 = set(y.float().cpu().topk(5).indices[0].tolist()) & set(ref.topk(5).indices[0].tolist())
    parity_report.append(f"resnet50 torch.float16 batch 1 224x224: rel {rel:.2e} (bound {bound:.1e}), top-5 overlap {len(top5)}/5")
    assert y.float().cpu().argmax(1).item() == ref.argmax(1).item()


def test_num_classes_and_layouts():
    model = calibrated("resnet18", 7)
    x = torch.randn(2, 3, 20, 17)
    ref = reference(model, x)
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    nchw = fast(x.to(DEVICE))
    nhwc = fast(x.to(DEVICE).contiguous(memory_format=torch.channels_last))
    assert tuple(nchw.shape) == (2, 7)
    assert_close(nchw, ref, 1e-4)
    torch.testing.assert_close(nchw, nhwc, rtol=0, atol=0)
    # An fp16 engine takes fp32 input (cast inside the stem) and answers in fp32.
    half = fastres.from_torchvision(model, dtype=torch.float16, device=DEVICE)
    y = half(x.to(DEVICE))
    assert y.dtype == torch.float32
    assert_close(y, ref, network_bound(torch.float16, model, x, ref))


# -- refusals -------------------------------------------------------------------------

def _refuses(model, *words):
    with pytest.raises(UnsupportedModelError) as info:
        fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_refuses_training_mode():
    _refuses(torchvision.models.resnet18().train(), "training mode", "eval()")
    m = torchvision.models.resnet18().eval()
    m.layer2[0].bn1.train()  # a submodule left training would silently use batch statistics
    _refuses(m, "layer2.0.bn1", "training mode")


def test_refuses_forward_hooks():
    m = torchvision.models.resnet18().eval()
    m.layer1[0].conv1.register_forward_hook(lambda mod, inp, out: out * 2)
    _refuses(m, "layer1.0.conv1", "hooks")
    m = torchvision.models.resnet18().eval()
    m.register_forward_pre_hook(lambda mod, inp: inp)
    _refuses(m, "the model", "hooks")


def test_refuses_non_resnet():
    _refuses(torchvision.models.alexnet().eval(), "torchvision ResNet", "AlexNet")
    _refuses(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).eval(), "torchvision ResNet")
    with pytest.raises(UnsupportedModelError):
        fastres.from_torchvision("resnet50")


def test_refuses_dilation_torchvision_does_not_build():
    # torchvision dilates Bottleneck stages only, and always with padding = dilation.
    m = torchvision.models.resnet18().eval()
    m.layer2[1].conv1.dilation = (2, 2)
    _refuses(m, "layer2.1.conv1", "dilation")
    m = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    m.layer4[1].conv2.padding = (1, 1)
    _refuses(m, "layer4.1.conv2", "padding")


def test_refuses_modified_blocks():
    m = torchvision.models.resnet18().eval()
    m.layer2[1].relu = torch.nn.GELU()
    _refuses(m, "layer2.1.relu", "GELU")
    m = torchvision.models.resnet18().eval()
    m.layer1[0].conv2.stride = (2, 2)
    _refuses(m, "layer1.0.conv2", "stride")
    m = torchvision.models.resnet18().eval()
    m.layer3[0].extra = torch.nn.Identity()
    _refuses(m, "layer3.0", "extra")
    m = torchvision.models.resnet18().eval()
    m.fc = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(512, 10))
    _refuses(m, "fc")
    m = torchvision.models.resnet18().eval()
    m.maxpool = torch.nn.MaxPool2d(2)
    _refuses(m, "maxpool")


def test_refuses_bad_dtype():
    with pytest.raises(TypeError, match="dtype"):
        fastres.from_torchvision(calibrated("resnet18"), dtype=torch.int8, device=DEVICE)
