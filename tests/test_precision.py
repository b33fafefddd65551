"""Which launches compute in 8 bits and which activations are stored in 8 bits (fastres.precision),
as a quantized schedule plans them: plain data, no kernel runs."""
from __future__ import annotations

import pytest
import torch

from fastres.device import DeviceInfo
from fastres.engine import ResNet
from fastres.plan import UnsupportedModelError, arch_convs, check_params, param_shapes
from fastres.precision import INPUT, Quantized, Ranges, value_names
from fastres.schedule import build_schedule

PLAN = DeviceInfo("plan", sms=132)


def _schedule(arch="resnet50", keep=(), dtype=torch.int8, **kw):
    layers = {c.name for c in arch_convs(arch)} - set(keep)
    return build_schedule(arch, (2, 3, 64, 64), torch.float16, PLAN, num_classes=10,
                          quantized=Quantized(dtype, layers), **kw)


def _step(schedule, layer):
    return next(s for s in schedule.steps if s.layer == layer)


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn])
def test_every_conv_in_8_bits_keeps_every_activation_in_8_bits(dtype):
    s = _schedule(dtype=dtype)
    assert set(s.slot_dtypes) == {dtype}
    stem = s.steps[0]
    assert (stem.precision.compute, stem.precision.src, stem.precision.dst) == (dtype, None, dtype)
    assert stem.precision.src_scale == INPUT  # the image is quantized as the stem loads it
    pool = _step(s, "maxpool")
    assert pool.precision.src == pool.precision.dst == dtype
    conv3 = _step(s, "layer1.0.conv3")
    assert conv3.precision.residual == dtype and conv3.precision.residual_scale == "layer1.0.downsample.0"
    head = s.steps[-1]
    assert head.precision.src == dtype and head.precision.compute == torch.float16
    # int8 activations take half the bytes of the float16 schedule's.
    f16 = build_schedule("resnet50", (2, 3, 64, 64), torch.float16, PLAN, num_classes=10)
    assert sum(s.slots) * 1 < sum(f16.slots) * 2


def test_a_float_reader_keeps_an_activation_float():
    s = _schedule(keep=("layer1.0.conv1",))
    stem, pool = s.steps[0], _step(s, "maxpool")
    # The max pool's output is read by a float conv: the stem writes float16, the max pool too.
    assert stem.precision.compute == torch.int8 and stem.precision.dst == torch.float16
    assert pool.precision.dst == torch.float16
    # The 8-bit shortcut reads that float16 activation and quantizes it as it loads it, with the
    # range of the stem's output (the max pool keeps its input's scale).
    ds = _step(s, "layer1.0.downsample.0")
    assert (ds.precision.compute, ds.precision.src, ds.precision.src_scale) == (torch.int8, torch.float16, "conv1")
    kept = _step(s, "layer1.0.conv1")
    assert kept.precision.compute == torch.float16 and kept.precision.src_scale is None
    assert kept.precision.dst == torch.float16  # a float conv writes float
    assert "int8(f16->int8)" in str(s) and " f16" in str(s)


def test_float_residuals_keep_every_block_input_float():
    layers = {c.name for c in arch_convs("resnet50")}
    s = build_schedule("resnet50", (2, 3, 64, 64), torch.float16, PLAN, num_classes=10,
                       quantized=Quantized(torch.int8, layers, float_residuals=True))
    conv3 = _step(s, "layer1.1.conv3")
    assert conv3.precision.residual == torch.float16 and conv3.precision.dst == torch.float16
    nxt = _step(s, "layer1.2.conv1")  # reads the block's float16 output, quantized as it loads it
    assert (nxt.precision.compute, nxt.precision.src, nxt.precision.src_scale) == (torch.int8, torch.float16,
                                                                                 "layer1.1.conv3")
    assert _step(s, "layer1.2.conv2").precision.src == torch.int8  # inside a block: 8 bits still


def test_a_trunks_returned_activations_are_float():
    layers = {c.name for c in arch_convs("resnet50", depth=3)}
    s = build_schedule("resnet50", (1, 3, 64, 64), torch.float16, PLAN, returns={"layer1": "a", "layer3": "b"},
                       quantized=Quantized(torch.int8, layers))
    for o in s.outputs:
        assert s.slot_dtype(o.slot) == torch.float16
        writer = s.steps[o.step]
        assert writer.precision.compute == torch.int8 and writer.precision.dst == torch.float16


def test_an_8bit_classifier():
    """"fc" in the layers: the head computes in 8 bits from the 8-bit features, or from float
    ones (their scale is then not the head's input's: it quantizes the pooled features with
    "pool"); its weights are 8-bit with per-class scales; a trunk has no classifier to quantize."""
    layers = {c.name for c in arch_convs("resnet50")} | {"fc"}
    s = build_schedule("resnet50", (2, 3, 64, 64), torch.float16, PLAN, num_classes=10,
                       quantized=Quantized(torch.int8, layers))
    head = s.steps[-1].precision
    assert (head.compute, head.src, head.src_scale, head.dst) == (torch.int8, torch.int8, "layer4.2.conv3", None)
    s = build_schedule("resnet50", (2, 3, 64, 64), torch.float16, PLAN, num_classes=10,
                       quantized=Quantized(torch.int8, layers - {"layer4.2.conv3"}))
    head = s.steps[-1].precision
    assert (head.compute, head.src, head.src_scale) == (torch.int8, torch.float16, None)
    assert "int8(f16->-)" in str(s)
    q = Quantized(torch.int8, {"conv1", "fc"})
    shapes = param_shapes("resnet18", 10, quantized=q)
    assert shapes["fc.weight_scale"] == (10,) and "fc.weight_scale" not in param_shapes("resnet18", 10)
    params = {k: torch.zeros(v) for k, v in shapes.items()}
    params.update({k: params[k].to(torch.int8) for k in ("conv1.weight", "fc.weight")})
    check_params(params, "resnet18", 10, torch.float32, quantized=q)
    with pytest.raises(TypeError, match="tensor 'fc.weight' has dtype torch.float32, expected torch.int8"):
        check_params({**params, "fc.weight": params["fc.weight"].float()}, "resnet18", 10, torch.float32, quantized=q)
    with pytest.raises(UnsupportedModelError, match=r"layers \['fc'\] are not convs \(a trunk has no classifier\)"):
        ResNet("resnet18", {}, returns={"layer4": "out"}, dtype=torch.float32, device="cpu",
               quantized=Quantized(torch.int8, {"fc"}), ranges={"input": 1.0})


def test_value_names_and_ranges():
    s = _schedule()
    names = value_names([(st.kernel, st.layer) for st in s.steps], s.wiring, len(s.values))
    assert names[:2] == ["conv1", "conv1"]  # the stem's output and the max pool's
    r = Ranges(torch.int8, {"input": 2.54, "conv1": 12.7})
    assert r.scale("conv1") == pytest.approx(0.1) and r.inv("input") == pytest.approx(50.0)
    assert r.dequant("input", torch.tensor([1.0, 0.5])).tolist() == pytest.approx([0.02, 0.01])
    with pytest.raises(KeyError, match="no activation range for 'layer1'"):
        r.scale("layer1")
    with pytest.raises(ValueError, match="positive and finite"):
        Ranges(torch.int8, {"input": 0.0})
    with pytest.raises(TypeError, match="int8 or torch.float8_e4m3fn"):
        Quantized(torch.float16, ())


def test_a_float_input_keeps_an_8bit_conv_off_the_bordered_kernels():
    """A bordered conv reads its input in its weights' dtype: an 8-bit 3x3 reading a float16
    activation (quantized at load) is offered the other Hopper kernels, not the bordered ones;
    one reading an 8-bit activation is offered those too."""
    h100 = DeviceInfo("NVIDIA H100 80GB HBM3", sms=132)
    s = _schedule(keep=("layer1.0.conv1",))
    after_float, after_int8 = _step(s, "layer1.0.conv2"), _step(s, "layer1.1.conv2")
    assert after_float.precision.src == torch.float16 and after_int8.precision.src == torch.int8
    mixed = after_float.candidates(torch.int8, h100)
    assert {"tma", "tma_w"} <= {c.variant for c in mixed} and not any(c.bordered for c in mixed)
    assert any(c.bordered for c in after_int8.candidates(torch.int8, h100))
