"""fastres.sources.hub: `fastres convert` of timm and transformers checkpoints (files and model
folders as the Hub has them), loaded without either library, compared with the original."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

import fastres
from fastres.weights import WeightsError, read_metadata
from helpers import DEVICE, assert_close, randomize_bn_

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def _reference(model, x, **kwargs):
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double(), **kwargs)


def _timm_d(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn_(timm.models.resnet.ResNet(block=timm.models.resnet.BasicBlock, layers=(1, 1, 1, 1),
                                                   stem_width=8, stem_type="deep", avg_down=True, num_classes=6))
    folder = tmp_path / "timm-resnet-d"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = {"architecture": "resnet10d", "num_classes": 6, "pretrained_cfg": {
        "input_size": [3, 288, 288], "crop_pct": 0.95, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25]}}
    (folder / "config.json").write_text(json.dumps(cfg))
    return model, folder


def test_timm_folder_and_file(tmp_path):
    model, folder = _timm_d(tmp_path)
    x = torch.randn(1, 3, 24, 24)
    ref = _reference(model, x)
    for src in (folder, folder / "model.safetensors"):
        out = fastres.convert(src, tmp_path / "out.safetensors", dtype="float32")
        meta = read_metadata(out)
        assert meta["source"] == "timm" and "arch_spec" in meta and meta["num_classes"] == "6"
        assert json.loads(meta["preprocess"]) == {"resize": 303, "crop": 288, "mean": [0.5] * 3, "std": [0.25] * 3,
                                                  "interpolation": "bicubic", "source": "timm pretrained_cfg"}
        fast = fastres.load(out, device=DEVICE)
        assert fast.spec.avg_down and fast.spec.stem == (8, 8)
        assert_close(fast(x.to(DEVICE)), ref, 1e-4, what=f"converted {src.name}")


def test_predictor_uses_the_files_preprocessing(tmp_path):
    _, folder = _timm_d(tmp_path)
    out = fastres.convert(folder, tmp_path / "out.safetensors", dtype="float32")
    t = fastres.Predictor(out, device=DEVICE).transform
    assert (t.resize, t.crop, t.interpolation, t.mean) == (303, 288, "bicubic", (0.5, 0.5, 0.5))
    t = fastres.Predictor(out, device=DEVICE, resize=64, crop=56).transform
    assert (t.resize, t.crop, t.interpolation) == (64, 56, "bicubic")


def _hf_config(**kwargs):
    args = dict(num_channels=3, embedding_size=10, hidden_sizes=[10, 20, 30, 40], depths=[1, 1, 2, 1],
                layer_type="bottleneck", num_labels=3, downsample_in_bottleneck=True)
    args.update(kwargs)
    return transformers.ResNetConfig(**args)


def test_transformers_classifier_folder(tmp_path):
    torch.manual_seed(1)
    model = randomize_bn_(transformers.ResNetForImageClassification(_hf_config()), seed=1)
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({
        "crop_pct": 0.875, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
        "size": {"shortest_edge": 224}, "image_processor_type": "ConvNextImageProcessor"}))
    out = fastres.convert(tmp_path / "hf", tmp_path / "hf.safetensors", dtype="float32")
    meta = read_metadata(out)
    assert meta["source"] == "transformers" and meta["num_classes"] == "3"
    pre = json.loads(meta["preprocess"])
    assert (pre["resize"], pre["crop"], pre["interpolation"]) == (256, 224, "bicubic")
    x = torch.randn(2, 3, 32, 32)
    assert_close(fastres.load(out, device=DEVICE)(x.to(DEVICE)), _reference(model, x).logits, 1e-4, what="logits")
    # The weights file alone needs the config beside it: here it is.
    assert read_metadata(fastres.convert(tmp_path / "hf" / "model.safetensors", tmp_path / "f.safetensors"))


def test_transformers_backbone_folder_is_a_trunk(tmp_path):
    torch.manual_seed(2)
    model = randomize_bn_(transformers.ResNetBackbone(_hf_config(layer_type="basic",
                                                                 out_features=["stem", "stage2", "stage3"])), seed=2)
    model.save_pretrained(tmp_path / "bb")
    out = fastres.convert(tmp_path / "bb", tmp_path / "bb.safetensors", dtype="float32")
    meta = read_metadata(out)
    assert meta["format_version"] == "2" and json.loads(meta["returns"]) == {"maxpool": "stem", "layer2": "stage2",
                                                                            "layer3": "stage3"}
    fast = fastres.load(out, device=DEVICE)
    x = torch.randn(1, 3, 32, 32)
    got, ref = fast(x.to(DEVICE)), _reference(model, x).feature_maps
    assert list(got) == ["stem", "stage2", "stage3"]
    for o, r, name in zip(got.values(), ref, got):
        assert_close(o, r, 1e-4, what=name)


def test_transformers_weights_without_config_refused(tmp_path):
    model = transformers.ResNetModel(_hf_config())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="config.json"):
        fastres.convert(tmp_path / "model.safetensors", tmp_path / "x.safetensors")


def test_run_refuses_a_file_torchvision_cannot_build(tmp_path, capsys):
    from fastres import cli

    _, folder = _timm_d(tmp_path)
    out = fastres.convert(folder, tmp_path / "out.safetensors", dtype="float32")
    assert cli.main(["run", "--weights", str(out)]) != 0
    assert "which torchvision does not build" in capsys.readouterr().err


def test_timm_features_only_checkpoint_is_a_trunk(tmp_path):
    """A state_dict without a classifier (timm's features_only model saved) converts, its
    dilation stated (its weights cannot show it), to a trunk returning the stem's activation
    and every stage, numbered as timm numbers them."""
    torch.manual_seed(3)
    model = randomize_bn_(timm.create_model("resnet18", pretrained=False, features_only=True), seed=3)
    torch.save(model.state_dict(), tmp_path / "feats.pth")
    out = fastres.convert(tmp_path / "feats.pth", tmp_path / "feats.safetensors", dtype="float32",
                          dilate=[False, False, False])
    meta = read_metadata(out)
    assert meta["arch"] == "resnet18" and json.loads(meta["returns"]) == {
        "stem": "0", "layer1": "1", "layer2": "2", "layer3": "3", "layer4": "4"}
    x = torch.randn(1, 3, 32, 32)
    got, ref = fastres.load(out, device=DEVICE)(x.to(DEVICE)), _reference(model, x)
    assert len(got) == len(ref) == 5
    for (name, o), r in zip(got.items(), ref):
        assert_close(o, r, 1e-4, what=name)


def test_modules_convert_as_their_checkpoints(tmp_path):
    torch.manual_seed(4)
    tm = randomize_bn_(timm.create_model("resnet18d", pretrained=False, num_classes=4), seed=4)
    meta = read_metadata(fastres.convert(tm, tmp_path / "t.safetensors", dtype="float32"))
    assert meta["arch"] == "resnet18d" and meta["source"] == "timm"
    assert json.loads(meta["preprocess"])["interpolation"] == "bicubic"  # resnet18d's pretrained_cfg
    hf = randomize_bn_(transformers.ResNetModel(_hf_config()), seed=4)
    out = fastres.convert(hf, tmp_path / "h.safetensors", dtype="float32")
    x = torch.randn(1, 3, 32, 32)
    got = fastres.load(out, device=DEVICE)(x.to(DEVICE))["last_hidden_state"]
    assert_close(got, _reference(hf, x).last_hidden_state, 1e-4, what="last_hidden_state")
