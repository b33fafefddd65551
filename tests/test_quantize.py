"""fastres.quantize on a network trained on real images (tests/quant_helpers.py): top-1 within a
point of float32 for each dtype and calibration method, the engine's 8-bit forward equal to the
torch reference of its integer math, the classifier's 8 bits chosen by measured agreement, the
report, the kept layers, and the errors."""
from __future__ import annotations

import json

import pytest
import torch

import fastres
from fastres.precision import QUANT_DTYPES, Quantized
from fastres.quant import quantize as Q
from fastres.quant.fileformat import report_from_dict
from fastres.quant.reference import run_schedule

from helpers import DEVICE, ON_GPU, assert_close
from quant_helpers import NoConvolution, calibration, held_out, top1, trained_resnet

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FP8 = pytest.param(torch.float8_e4m3fn, id="e4m3")


def _quantize(dtype, method, **kw):
    return fastres.quantize(trained_resnet(), calibration(), dtype=dtype, method=method, device=DEVICE,
                            progress=False, **kw)


# Each dtype's default method runs the engine itself (through the interpreter on the CPU: ~10 s for
# the 397 held-out images); the others run the torch reference of the same integer math, which
# the engine equals bit for bit where its sums are exact (the next test), in a fraction of that.
@pytest.mark.parametrize("dtype,method,engine", [
    (torch.int8, "entropy", True), (torch.int8, "max", False), (torch.int8, "mse", False),
    (torch.int8, "percentile", False), (torch.float8_e4m3fn, "max", False), (torch.float8_e4m3fn, "mse", True)],
    ids=["int8-entropy", "int8-max", "int8-mse", "int8-percentile", "e4m3-max", "e4m3-mse"])
def test_top1_within_a_point_of_float32(dtype, method, engine):
    x, y = held_out()
    model = trained_resnet()
    with torch.no_grad():
        ref = model(x)
    q = _quantize(dtype, method)
    if engine:
        with NoConvolution():
            out = q(x.to(DEVICE)).cpu()
        assert out.dtype == torch.float32
    else:
        out = run_schedule(q.schedule(x), {k: v.cpu() for k, v in q.params().items()}, x, ranges=q.ranges)
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert top1(out, y) >= top1(ref, y) - 0.01, (top1(out, y), top1(ref, y))
    assert agree >= 0.97, agree


def test_the_engine_equals_the_reference_of_its_integer_math():
    """An 8-bit trunk's returned features are written by an 8-bit conv's float epilogue from
    exact integer sums: equal, bit for bit, to the torch reference."""
    from torchvision.models._utils import IntermediateLayerGetter

    trunk = IntermediateLayerGetter(trained_resnet(), {"layer2": "mid", "layer4": "out"}).eval()
    q = fastres.quantize(trunk, calibration(count=100), dtype=torch.int8, method="max", device=DEVICE, progress=False)
    x = held_out()[0][:6]
    out = q(x.to(DEVICE))
    schedule = q.schedule(x)
    ref = run_schedule(schedule, {k: v.cpu() for k, v in q.params().items()}, x, ranges=q.ranges)
    assert list(out) == ["mid", "out"]
    for name in out:
        if ON_GPU:
            assert_close(out[name].float().cpu(), ref[name], 1e-3, name)
        else:
            assert torch.equal(out[name].float().cpu(), ref[name]), name


def test_the_classifier_in_8_bits_by_measured_agreement():
    """On the digits network the int8 classifier keeps the float classifier's top-1 class on
    every calibration image, so it runs in int8; with every conv in int8 too, layer4's codes are
    pooled exactly and the classifier's sums are exact: the logits equal, bit for bit, the
    reference of the integer math. The report's row for it survives a file's JSON."""
    q = _quantize(torch.int8, "max")
    report = q.quantization_report()
    fc = report.layers[-1]
    assert (fc.layer, fc.input, fc.output, fc.scale_out, fc.why) == ("fc", "pool", "logits", None, "")
    assert fc.agreement >= Q.CLASSIFIER_MIN_AGREEMENT and 0 < fc.error < 0.05, fc
    assert "fc" in q.quantized.layers and q.params()["fc.weight"].dtype == torch.int8
    x = held_out()[0][:6]
    head = q.schedule(x).steps[-1].precision
    assert (head.compute, head.src) == (torch.int8, torch.int8)
    out = q(x.to(DEVICE)).cpu()
    ref = run_schedule(q.schedule(x), {k: v.cpu() for k, v in q.params().items()}, x, ranges=q.ranges)
    if ON_GPU:
        assert_close(out, ref, 1e-3, "logits")
    else:
        assert torch.equal(out, ref)
    assert report_from_dict(json.loads(report.to_json())) == report


def test_report_and_kept_layers(monkeypatch):
    # An agreement no classifier reaches: the classifier stays float, by its measure before max_layer_error.
    monkeypatch.setattr(Q, "CLASSIFIER_MIN_AGREEMENT", 1.01)
    q = _quantize(torch.int8, "max", keep=("conv1",), max_layer_error=1e-9)
    report = q.quantization_report()
    assert report.layers[0].layer == "conv1" and report.layers[0].why == "kept by name"
    assert report.layers[-1].why == "top-1 agreement 100.00% < 101.0%" and report.layers[-1].precision == "f16"
    # Every layer errs above 1e-9: all are kept float, and the engine computes nothing in 8 bits.
    assert set(report.kept) == {r.layer for r in report.layers}
    assert all(r.error > 1e-9 for r in report.layers[1:])
    text = str(report)
    assert "layer4.0.conv2" in text and "kept by name" in text and "0 of" in text
    assert report.to_dict()["dtype"] == "int8"
    monkeypatch.undo()
    q2 = _quantize(torch.int8, "max", max_layer_error=0.5, keep=("fc",))
    r2 = q2.quantization_report()
    assert r2.layers[-1].why == "kept by name" and "fc" not in q2.quantized.layers
    for r in r2.layers[:-1]:
        assert (r.error > 0.5) == bool(r.why), r
        assert 0 <= r.clipped_in <= 1 and r.scale_in > 0 and r.weight_scale[0] <= r.weight_scale[1]
    assert "int8" in str(q2.schedule((2, 3, 16, 16)))


def test_errors():
    model = trained_resnet()
    with pytest.raises(TypeError, match="int8 or torch.float8_e4m3fn"):
        fastres.quantize(model, calibration(), dtype=torch.float16)
    with pytest.raises(ValueError, match="method must be one of"):
        fastres.quantize(model, calibration(), method="minmax")
    with pytest.raises(ValueError, match="not convs of"):
        fastres.quantize(model, calibration(), keep=("layer9.conv1",))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        fastres.quantize(model, [torch.randn(2, 16, 16)], progress=False)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fastres.quantize(model, [torch.full((2, 3, 16, 16), float("nan"))], progress=False)
    with pytest.raises(ValueError, match="no batches"):
        fastres.quantize(model, [], progress=False)
    with pytest.raises(ValueError, match="already quantized"):
        fastres.quantize(_quantize(torch.int8, "max"), calibration())
