"""fastres.from_transformers: transformers' ResNetForImageClassification, ResNetModel and
ResNetBackbone (small configs as transformers' own ResNetModelTester builds them), compared
with transformers' float64 forward; what is refused."""
from __future__ import annotations

import copy
import sys

import pytest
import torch

import fastres
from fastres.plan import UnsupportedModelError
from helpers import DEVICE, assert_close, randomize_bn_

transformers = pytest.importorskip("transformers")


def _config(layer_type="bottleneck", **kwargs):
    args = dict(image_size=32, num_channels=3, embedding_size=10, hidden_sizes=[10, 20, 30, 40], depths=[1, 1, 2, 1],
                layer_type=layer_type, hidden_act="relu", num_labels=3, out_features=["stage2", "stage3", "stage4"])
    args.update(kwargs)
    return transformers.ResNetConfig(**args)


def _build(cls, config, seed=0):
    torch.manual_seed(seed)
    return randomize_bn_(getattr(transformers, cls)(config), seed=seed)


def _reference(model, x, **kwargs):
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double(), **kwargs)


@pytest.mark.parametrize("layer_type, flags", [
    ("basic", {}),
    ("bottleneck", {}),
    ("bottleneck", {"downsample_in_first_stage": True, "downsample_in_bottleneck": True}),
], ids=["basic", "bottleneck", "bottleneck-downsampling"])
def test_image_classification(layer_type, flags):
    model = _build("ResNetForImageClassification", _config(layer_type, **flags))
    fast = fastres.from_transformers(model, dtype=torch.float32, device=DEVICE)
    x = torch.randn(2, 3, 32, 32)
    ref, out = _reference(model, x), fast(x.to(DEVICE))
    assert type(out) is type(ref) and out.loss is None and out.hidden_states is None
    assert_close(out.logits, ref.logits, 1e-4, what="logits")
    tup = fast(x.to(DEVICE), return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 1
    assert_close(tup[0], ref.logits, 1e-4, what="logits (tuple)")


@pytest.mark.parametrize("num_labels, labels", [
    (3, torch.tensor([0, 2])),                         # single-label: cross-entropy
    (3, torch.tensor([[1., 0., 1.], [0., 1., 0.]])),   # float targets: multi-label BCE
    (1, torch.tensor([0.5, -1.0])),                    # one label: regression, MSE
], ids=["single-label", "multi-label", "regression"])
def test_labels_give_transformers_loss(num_labels, labels):
    """Fed as transformers' tests feed it (`model(pixel_values, labels=labels)`): the loss its
    own loss function computes from the logits, first in the tuple with return_dict=False."""
    model = _build("ResNetForImageClassification", _config("basic", num_labels=num_labels))
    fast = fastres.from_transformers(model, dtype=torch.float32, device=DEVICE)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x, labels=labels)
    out = fast(x.to(DEVICE), labels=labels.to(DEVICE))
    assert out.logits.shape == (2, num_labels) and out.loss.shape == ()
    assert_close(out.loss, ref.loss, 1e-5, what="loss")
    loss, logits = fast(x.to(DEVICE), labels=labels.to(DEVICE), return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)


def test_model_pooler_and_hidden_states():
    model = _build("ResNetModel", _config("bottleneck"), seed=1)
    fast = fastres.from_transformers(model, dtype=torch.float32, device=DEVICE)
    x = torch.randn(2, 3, 29, 32)
    ref = _reference(model, x, output_hidden_states=True)
    out = fast(x.to(DEVICE), output_hidden_states=True)
    assert type(out) is type(ref) and out.pooler_output.shape == ref.pooler_output.shape == (2, 40, 1, 1)
    assert_close(out.last_hidden_state, ref.last_hidden_state, 1e-4, what="last_hidden_state")
    assert_close(out.pooler_output, ref.pooler_output, 1e-4, what="pooler_output")
    assert len(out.hidden_states) == len(ref.hidden_states) == 5
    for i, (o, r) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert_close(o, r, 1e-4, what=f"hidden_states[{i}]")
    last, pooled = fast(x.to(DEVICE), return_dict=False)
    assert_close(pooled, ref.pooler_output, 1e-4, what="pooler_output (tuple)")


@pytest.mark.parametrize("out_features", [["stage2", "stage3", "stage4"], ["stem", "stage1"]])
def test_backbone_feature_maps(out_features):
    model = _build("ResNetBackbone", _config("basic", out_features=out_features), seed=2)
    fast = fastres.from_transformers(model, dtype=torch.float32, device=DEVICE)
    x = torch.randn(1, 3, 32, 32)
    ref, out = _reference(model, x), fast(x.to(DEVICE))
    assert type(out) is type(ref) and len(out.feature_maps) == len(ref.feature_maps) == len(out_features)
    for name, o, r in zip(out_features, out.feature_maps, ref.feature_maps):
        assert_close(o, r, 1e-4, what=name)


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden_act": "gelu"}, "relu only"),
    ({"depths": [1, 1, 1], "hidden_sizes": [10, 20, 30], "out_features": ["stage3"]}, "four stages"),
])
def test_refused(kwargs, match):
    with pytest.raises(UnsupportedModelError, match=match):
        fastres.from_transformers(_build("ResNetModel", _config(**kwargs)), dtype=torch.float32, device=DEVICE)


def test_without_transformers_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # an import of transformers now fails as if it were missing
    with pytest.raises(ImportError, match=r"pip install 'fastres\[transformers\]'"):
        fastres.from_transformers(torch.nn.Linear(1, 1))
