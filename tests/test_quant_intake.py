"""fastres.quantize on wrapped ResNets (fastres.quant.intake): timm's and transformers' models,
a torchvision segmentation model and a detector come back as the same wrapper around a
quantized engine, called as the float one. Random weights: these tests check the wrapping (what
is calibrated, what runs in 8 bits, what comes back); the accuracy of the quantization itself is
judged on a trained network (tests/test_quantize.py)."""
from __future__ import annotations

import pytest
import torch

import fastres
from helpers import DEVICE, assert_close, randomize_bn_
from quant_helpers import NoConvolution

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
# Relative L2 error of an int8 output against float. int8 rounds every activation to 1/127 of its
# range: about 1% of error per conv on these random networks (the report's errors), 0.5 to 2% on
# the outputs after their 20 convs (measured). 5% leaves room for other seeds and CPUs, and still
# fails a wrong scale or codes read as values (errors of tens of percent or more).
BOUND = 0.05


def _calibration(size=(32, 32), batches=2, uniform=False):
    make = torch.rand if uniform else torch.randn
    return [make(2, 3, *size, generator=torch.Generator().manual_seed(i)) for i in range(batches)]


def _quantize(model, calibration):
    # int8 by its quickest method: which method chose the ranges makes no difference to the wrapping
    return fastres.quantize(model, calibration, dtype=torch.int8, method="max", device=DEVICE, progress=False)


def test_timm_resnet_forward_and_forward_features_run_quantized():
    """timm's resnet18 (its classifier engine includes the fc): the quantized TimmResNet's
    forward, and forward_features, whose trunk engine keeps the classifier's 8-bit convs."""
    timm = pytest.importorskip("timm")
    from fastres.sources.timm import TimmResNet

    torch.manual_seed(0)
    model = randomize_bn_(timm.create_model("resnet18", pretrained=False, num_classes=7))
    q = _quantize(model, _calibration())
    assert type(q) is TimmResNet and q.engine.num_classes == 7 and q.engine.quantized.dtype == torch.int8
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        ref, ref_feats = model(x), model.forward_features(x)
    with NoConvolution():
        logits = q(x.to(DEVICE))
        feats = q.forward_features(x.to(DEVICE))
    # The trunk runs the classifier's 8-bit convs (its classifier, if 8-bit, is not the trunk's).
    assert q._trunk.quantized.layers == q.engine.quantized.layers - {"fc"} and q._trunk.returns == (("layer4", "layer4"),)
    assert logits.dtype == feats.dtype == torch.float32
    assert_close(logits, ref, BOUND, what="logits")
    assert_close(feats, ref_feats, BOUND, what="forward_features")
    with torch.no_grad():
        assert_close(q.forward_head(feats), ref, BOUND, what="forward_head(forward_features)")
    report = q.quantization_report()
    # 20 convs and the classifier; every one of them 8-bit unless the report says why not.
    assert report is q.engine.report and len(report.layers) == 21
    assert {r.layer for r in report.layers if not r.why} == q.engine.quantized.layers
    with pytest.raises(ValueError, match="not quantized"):
        fastres.from_timm(model, dtype=torch.float32, device=DEVICE).quantization_report()
    with pytest.raises(ValueError, match="already quantized"):
        _quantize(q, _calibration())


def test_transformers_image_classification_and_hidden_states():
    """transformers' ResNetForImageClassification (the configs of tests/test_sources_transformers.py):
    the same output object; logits from the quantized classifier, hidden_states from a trunk of
    its 8-bit convs and ranges; the calibration batches are the pixel_values."""
    transformers = pytest.importorskip("transformers")
    from fastres.sources.transformers import HFResNetForImageClassification

    config = transformers.ResNetConfig(embedding_size=10, hidden_sizes=[10, 20, 30, 40], depths=[1, 1, 2, 1],
                                       layer_type="bottleneck", hidden_act="relu", num_labels=3)
    torch.manual_seed(0)
    model = randomize_bn_(transformers.ResNetForImageClassification(config))
    q = _quantize(model, _calibration())
    assert type(q) is HFResNetForImageClassification
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    with NoConvolution():
        out = q(x.to(DEVICE), output_hidden_states=True)
    assert type(out) is type(ref) and len(out.hidden_states) == len(ref.hidden_states) == 5
    assert_close(out.logits, ref.logits, BOUND, what="logits")
    for i, (o, r) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert_close(o, r, BOUND, what=f"hidden_states[{i}]")
    classifier = q._engines.classifier
    trunk = q._engines.trunk(("maxpool", "layer1", "layer2", "layer3", "layer4"))
    assert trunk.quantized.layers == classifier.quantized.layers - {"fc"}
    assert q.quantization_report() is classifier.report and not classifier.report.kept


def test_segmentation_model():
    """FCN over a ResNet trunk: the same class, its backbone a quantized fastres trunk."""
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    torch.manual_seed(0)
    model = FCN(IntermediateLayerGetter(randomize_bn_(resnet18()), {"layer4": "out"}), FCNHead(512, 3)).eval()
    q = _quantize(model, _calibration())
    assert type(q) is FCN and isinstance(q.backbone, fastres.ResNet) and q.backbone.quantized is not None
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), q(x.to(DEVICE))
    assert list(out) == list(ref) == ["out"]
    assert_close(out["out"], ref["out"], BOUND, what="out")


def test_detector_calibrates_on_its_transformed_images():
    """A Faster R-CNN: its trunk reads what the transform makes of the images (resized,
    normalized, padded), and is calibrated on that: the image's range is the transformed
    batches' max, not the raw [0, 1] pixels'."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    model = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5), num_classes=3,
                       min_size=32, max_size=32).eval()
    calibration = _calibration((24, 24), uniform=True)
    q = _quantize(model, calibration)
    body = q.backbone.body
    assert type(q) is FasterRCNN and isinstance(body, fastres.ResNet) and body.quantized is not None
    with torch.no_grad():
        seen = max(float(model.transform(list(x))[0].tensors.abs().max()) for x in calibration)
    assert seen > 2 and body.ranges.amax["input"] == pytest.approx(seen, rel=1e-6)
    with torch.no_grad():
        out = q([torch.rand(3, 24, 24).to(DEVICE)])
    assert len(out) == 1 and set(out[0]) == {"boxes", "labels", "scores"}


def test_mapped_calibration_is_as_iterable_as_the_given_one():
    """quantize iterates calibration twice, or holds a one-shot iterator: a detector's mapped
    batches must keep that difference. (images, labels) pairs give their images; what is not
    an image batch goes through unchanged, for quantize to refuse with its shape."""
    from fastres.quant.intake import Intake

    taken = Intake(None, torch.device("cpu"), inputs=lambda x: x * 2)
    image, odd = torch.ones(1, 3, 2, 2), torch.ones(3, 2, 2)
    listed = taken.batches([image, (image, torch.tensor([0])), odd])
    assert len(listed) == 3 and iter(listed) is not iter(listed)
    for _ in range(2):
        assert [float(x.sum()) for x in listed] == [24.0, 24.0, 12.0]
    assert list(listed)[2] is odd
    once = taken.batches(iter([image]))
    assert iter(once) is once and [float(x.sum()) for x in once] == [24.0] and list(once) == []
