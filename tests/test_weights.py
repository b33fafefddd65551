"""fastres.convert / fastres.load / `fastres convert`: the converted-file round trip for every
architecture, torchvision key names, the metadata, every bad input, a malicious pickle, and the
atomic write. The file format is specified in weights/README.md.

Forwards through the interpreter are slow, so the round trip of every architecture compares the
loaded engine's parameters bit for bit with `from_torchvision`'s (equal parameters, same
kernels: equal logits); only resnet18 fp32 and resnet50 fp16 run actual forwards.
"""
from __future__ import annotations

import errno
import hashlib
import importlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fastres
from fastres import cli
from fastres.build import from_torchvision
from fastres.plan import expected_shapes, infer_arch, param_shapes
from fastres.sources.checkpoints import torchvision_weights_name
from helpers import DEVICE, assert_close, rel_error

# The module behind fastres.convert / fastres.load (its WeightsError, read_metadata, ...).
W = importlib.import_module("fastres.weights")
WeightsError = W.WeightsError

ARCH_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2"]
NUM_CLASSES = 10
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16"}
METADATA_KEYS = {"format", "format_version", "arch", "dtype", "num_classes", "source_sha256", "fastres_version"}
REPO = Path(__file__).resolve().parents[1]


# -- models and checkpoints -----------------------------------------------------------------

def randomize_bn_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Distinct BatchNorm statistics everywhere (the defaults would hide a conv paired with the
    wrong BN), small gamma on the last BN of each residual branch so activations stay tame.
    No forward pass: this is cheap even for wide_resnet101_2."""
    g = torch.Generator().manual_seed(seed)
    last = set()
    for m in model.modules():
        if isinstance(m, torchvision.models.resnet.BasicBlock):
            last.add(id(m.bn2))
        elif isinstance(m, torchvision.models.resnet.Bottleneck):
            last.add(id(m.bn3))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                lo, hi = (0.05, 0.3) if id(m) in last else (0.5, 1.5)
                m.weight.copy_(torch.rand(n, generator=g) * (hi - lo) + lo)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
        model.fc.bias.copy_(torch.randn(model.fc.bias.shape, generator=g) * 0.1)
    return model.eval()


class Zoo:
    """torchvision models and their saved state_dicts, built once per architecture.

    Only a few are kept at a time: wide_resnet101_2 alone is 0.5 GB in float32.
    """

    KEEP = ("resnet18", "resnet50")

    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(self, arch: str) -> tuple[torch.nn.Module, Path]:
        if arch not in self.entries:
            for old in [a for a in self.entries if a not in self.KEEP]:
                self.entries.pop(old)[1].unlink(missing_ok=True)
            torch.manual_seed(ARCH_NAMES.index(arch))
            model = randomize_bn_(getattr(torchvision.models, arch)(num_classes=NUM_CLASSES), seed=ARCH_NAMES.index(arch))
            pth = self.folder / f"{arch}-checkpoint.pth"
            torch.save(model.state_dict(), pth)
            self.entries[arch] = (model, pth)
        return self.entries[arch]

    def model(self, arch: str) -> torch.nn.Module:
        return self.get(arch)[0]

    def pth(self, arch: str) -> Path:
        return self.get(arch)[1]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    z = Zoo(tmp_path_factory.mktemp("checkpoints"))
    yield z
    for _, pth in z.entries.values():
        pth.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def converted(zoo, tmp_path_factory) -> Path:
    """resnet18, float16, converted from a .pth: the base of the bad-file cases for load."""
    return W.convert(zoo.pth("resnet18"), tmp_path_factory.mktemp("converted") / "resnet18-float16.safetensors")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def rewrite(src: Path, dst: Path, *, meta: dict | None = None, tensors: dict | None = None, drop=()) -> Path:
    """A copy of converted file `src` with metadata entries / tensors replaced or dropped."""
    stored = load_file(str(src))
    for k in drop:
        del stored[k]
    stored.update(tensors or {})
    save_file({k: v.contiguous() for k, v in stored.items()}, str(dst), metadata={**metadata(src), **(meta or {})})
    return dst


def torchvision_param_names(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """What a converted file must hold, derived from torchvision's own module names alone:
    "<conv>.weight" [Cout, Cin, KH, KW] and "<conv>.bias" [Cout] per Conv2d, plus fc."""
    want: dict[str, tuple[int, ...]] = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            want[f"{name}.weight"] = (m.out_channels, m.in_channels, *m.kernel_size)
            want[f"{name}.bias"] = (m.out_channels,)
    want["fc.weight"] = (model.fc.out_features, model.fc.in_features)
    want["fc.bias"] = (model.fc.out_features,)
    return want


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)  # the CLI chooses the interpreter by itself where there is no GPU
    return env


def _fastres(*args, cwd, timeout=300):
    env = _env()
    return subprocess.run([sys.executable, "-m", "fastres", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def check_metadata(path: Path, *, arch: str, dtype: torch.dtype, source: Path | None) -> dict[str, str]:
    meta = metadata(path)
    assert set(meta) == METADATA_KEYS, meta
    assert meta["format"] == "fastres"
    assert meta["format_version"] == "1"
    assert meta["arch"] == arch
    assert meta["dtype"] == DTYPE_NAMES[dtype]
    assert meta["num_classes"] == str(NUM_CLASSES)
    assert meta["fastres_version"] == fastres.__version__
    if source is not None:
        assert meta["source_sha256"] == sha256(source)
    assert len(meta["source_sha256"]) == 64 and int(meta["source_sha256"], 16) >= 0
    assert W.read_metadata(path) == meta
    return meta


def assert_same_params(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, f"{k}: {got[k].dtype} != {want[k].dtype}"
        assert tuple(got[k].shape) == tuple(want[k].shape), f"{k}: {tuple(got[k].shape)} != {tuple(want[k].shape)}"
        assert torch.equal(got[k].cpu(), want[k].cpu()), f"{k} differs (max |diff| {(got[k].double() - want[k].double()).abs().max().item():.3e})"


def check_file_layout(path: Path, model: torch.nn.Module, want: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Tensor names are torchvision's; conv weights physically [Cout, KH, KW, Cin]; dtypes."""
    names = torchvision_param_names(model)
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(names)
        for key, (cout, *rest) in names.items():
            t = f.get_tensor(key)
            if len(rest) == 3:  # conv weight: logical [Cout, Cin, KH, KW], stored [Cout, KH, KW, Cin]
                cin, kh, kw = rest
                assert tuple(t.shape) == (cout, kh, kw, cin), f"{key}: stored {tuple(t.shape)}"
                assert torch.equal(t, want[key].permute(0, 2, 3, 1)), key
            else:
                assert tuple(t.shape) == (cout, *rest), key
                assert torch.equal(t, want[key]), key
            assert t.dtype == (torch.float32 if key.endswith(".bias") else dtype), f"{key}: {t.dtype}"


# -- key names ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_key_names_match_torchvision(arch):
    """fastres' idea of each architecture is torchvision's own state_dict, key for key."""
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
    sd = model.state_dict()
    assert expected_shapes(arch, NUM_CLASSES) == {k: tuple(v.shape) for k, v in sd.items()}
    assert param_shapes(arch, NUM_CLASSES) == torchvision_param_names(model)
    assert infer_arch(sd) == (arch, NUM_CLASSES)


# -- the round trip -------------------------------------------------------------------------

ROUND_TRIPS = [(a, d) for a in ARCH_NAMES for d in (torch.float32, torch.float16)]


@pytest.mark.parametrize("arch,dtype", ROUND_TRIPS, ids=[f"{a}-{DTYPE_NAMES[d]}" for a, d in ROUND_TRIPS])
def test_round_trip(zoo, tmp_path, capsys, arch, dtype):
    """torchvision -> torch.save(state_dict) -> `fastres convert` (arch inferred) -> load:
    bit-identical to from_torchvision's parameters, names and layout as specified."""
    model, pth = zoo.get(arch)
    out = tmp_path / "converted.safetensors"
    assert cli.main(["convert", str(pth), "--dtype", DTYPE_NAMES[dtype], "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert str(out) in stdout and arch in stdout
    check_metadata(out, arch=arch, dtype=dtype, source=pth)
    fast = W.load(out, device="cpu")
    assert (fast.arch, fast.num_classes, fast.dtype) == (arch, NUM_CLASSES, dtype)
    want = from_torchvision(model, dtype=dtype, device="cpu").params()
    assert_same_params(fast.params(), want)
    check_file_layout(out, model, want, dtype)
    out.unlink()


def _network_bound(model, x, dtype, ref) -> float:
    if dtype == torch.float32:
        return 1e-4
    import copy

    theirs = copy.deepcopy(model).to(dtype)(x.to(dtype))
    return min(max(5e-3, 2 * rel_error(theirs, ref)), 2e-2)


@pytest.mark.parametrize("arch,dtype", [("resnet18", torch.float32), ("resnet50", torch.float16)], ids=["resnet18-float32", "resnet50-float16"])
def test_round_trip_logits(zoo, tmp_path, arch, dtype):
    """The loaded engine's logits are bitwise those of from_torchvision (and right)."""
    import copy

    model, pth = zoo.get(arch)
    out = W.convert(pth, tmp_path / "f.safetensors", dtype=dtype)
    x = torch.randn(1, 3, 16, 20)
    loaded = W.load(out, device=DEVICE)(x.to(DEVICE, dtype))
    direct = from_torchvision(model, dtype=dtype, device=DEVICE)(x.to(DEVICE, dtype))
    assert loaded.dtype == dtype and tuple(loaded.shape) == (1, NUM_CLASSES)
    assert torch.isfinite(loaded).all()
    assert torch.equal(loaded, direct), f"max |diff| {(loaded.double() - direct.double()).abs().max().item():.3e}"
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double())
        bound = _network_bound(model, x, dtype, ref)
    assert_close(loaded, ref, bound, what=f"{arch} {dtype} logits of the converted file")


def test_folding_formula(zoo, converted):
    """What weights/README.md promises, recomputed from the raw state_dict: for a state_dict,
    eps is 1e-5; w' = w * g / sqrt(var + eps), b' = beta - mean * g / sqrt(var + eps), in
    float64, then cast (weights to the file dtype, biases to float32)."""
    sd = torch.load(zoo.pth("resnet18"), weights_only=True)
    stored = load_file(str(converted))
    for conv, bn in [("conv1", "bn1"), ("layer1.0.conv2", "layer1.0.bn2"), ("layer3.0.downsample.0", "layer3.0.downsample.1")]:
        g, beta = sd[f"{bn}.weight"].double(), sd[f"{bn}.bias"].double()
        mean, var = sd[f"{bn}.running_mean"].double(), sd[f"{bn}.running_var"].double()
        scale = g / torch.sqrt(var + 1e-5)
        w = (sd[f"{conv}.weight"].double() * scale[:, None, None, None]).to(torch.float16).permute(0, 2, 3, 1)
        b = (beta - mean * scale).float()
        assert torch.equal(stored[f"{conv}.weight"], w), conv
        assert torch.equal(stored[f"{conv}.bias"], b), conv
    assert torch.equal(stored["fc.weight"], sd["fc.weight"].to(torch.float16))
    assert torch.equal(stored["fc.bias"], sd["fc.bias"])
    assert stored["conv1.weight"].is_contiguous() and tuple(stored["conv1.weight"].shape) == (64, 7, 7, 3)


# -- input forms ----------------------------------------------------------------------------

def test_input_forms(zoo, tmp_path, capsys):
    """A checkpoint dict holding the state_dict under "state_dict" or "model", a DataParallel
    ("module."-prefixed) state_dict, a .safetensors state_dict and an in-memory mapping all
    convert to the same file as the plain state_dict."""
    sd = zoo.model("resnet18").state_dict()
    reference = load_file(str(W.convert(zoo.pth("resnet18"), tmp_path / "reference.safetensors")))
    sources = {
        "wrapped-state_dict.pth": lambda p: torch.save({"state_dict": sd, "epoch": 90, "best_acc1": 0.7}, p),
        "wrapped-model.pth": lambda p: torch.save({"model": sd, "optimizer": {"lr": 0.1}}, p),
        "dataparallel.pth": lambda p: torch.save({f"module.{k}": v for k, v in sd.items()}, p),
        "plain.safetensors": lambda p: save_file({k: v.contiguous() for k, v in sd.items()}, str(p)),
    }
    for name, write in sources.items():
        src = tmp_path / name
        write(src)
        out = tmp_path / f"{name}.out.safetensors"
        assert cli.main(["convert", str(src), "--out", str(out)]) == 0, capsys.readouterr().err
        check_metadata(out, arch="resnet18", dtype=torch.float16, source=src)
        got = load_file(str(out))
        assert sorted(got) == sorted(reference), name
        for k in reference:
            assert torch.equal(got[k], reference[k]), f"{name}: {k}"
    # In memory, and with an --arch that agrees with the keys.
    out = W.convert(sd, tmp_path / "mapping.safetensors", arch="resnet18", dtype="float16")
    got = load_file(str(out))
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    check_metadata(out, arch="resnet18", dtype=torch.float16, source=None)


def test_default_output_folder(zoo, tmp_path, monkeypatch, capsys):
    """Without --out: weights/<source name>-<dtype>.safetensors, relative to the working folder."""
    pth = zoo.pth("resnet18")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["convert", str(pth)]) == 0
    out = tmp_path / "weights" / f"{pth.stem}-float16.safetensors"
    assert out.is_file(), sorted(p.name for p in tmp_path.rglob("*"))
    assert f"{pth.stem}-float16.safetensors" in capsys.readouterr().out
    check_metadata(out, arch="resnet18", dtype=torch.float16, source=pth)
    path = W.convert(pth, dtype=torch.float32)
    assert path == Path("weights") / f"{pth.stem}-float32.safetensors"
    assert (tmp_path / path).is_file()
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == sorted(
        [f"{pth.stem}-float16.safetensors", f"{pth.stem}-float32.safetensors"])


def test_convert_module(zoo, tmp_path, monkeypatch):
    """fastres.convert(module): the module's own BN eps (not 1e-5), default name <arch>-<dtype>."""
    import copy

    model = copy.deepcopy(zoo.model("resnet18"))
    model.layer2[0].bn1.eps = 1e-3
    monkeypatch.chdir(tmp_path)
    path = W.convert(model)
    assert path == Path("weights") / "resnet18-float16.safetensors"
    meta = check_metadata(tmp_path / path, arch="resnet18", dtype=torch.float16, source=None)
    fast = W.load(tmp_path / path, device="cpu")
    assert_same_params(fast.params(), from_torchvision(model, dtype=torch.float16, device="cpu").params())
    # The same weights as a state_dict are folded with eps 1e-5: layer2.0.conv1 differs.
    from_sd = load_file(str(W.convert(model.state_dict(), tmp_path / "sd.safetensors")))
    assert not torch.equal(from_sd["layer2.0.conv1.bias"], fast.params()["layer2.0.conv1.bias"])
    # The digest names the weights: the same model converts to the same source_sha256.
    assert metadata(W.convert(model, tmp_path / "again.safetensors"))["source_sha256"] == meta["source_sha256"]


# -- bad inputs to convert ------------------------------------------------------------------

class _Payload:
    """Pickles as a call of fn(*args): what a malicious checkpoint does on an unsafe load."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _state_dict_with(sd, **changes):
    sd = dict(sd)
    for k, v in changes.items():
        k = k.replace("__", ".")
        if v is None:
            del sd[k]
        else:
            sd[k] = v
    return sd


def _bad_sources(zoo, folder: Path):
    """name -> (write(path), file suffix, extra CLI arguments, exception, message fragments)."""
    sd = zoo.model("resnet18").state_dict()

    def cut(fraction, suffix):
        def write(p):
            good = folder / f"good{suffix}"
            if not good.exists():
                if suffix == ".pth":
                    torch.save(sd, good)
                else:
                    save_file({k: v.contiguous() for k, v in sd.items()}, str(good))
            data = good.read_bytes()
            p.write_bytes(data[: int(len(data) * fraction)])
        return write

    def saved(obj):
        return lambda p: torch.save(obj() if callable(obj) else obj, p)

    return {
        "missing file": (None, ".pth", [], FileNotFoundError, ["no such file"]),
        "a folder": (lambda p: p.mkdir(), ".pth", [], WeightsError, ["not a file"]),
        "empty .pth": (lambda p: p.write_bytes(b""), ".pth", [], WeightsError, ["truncated or corrupt"]),
        "truncated .pth": (cut(0.5, ".pth"), ".pth", [], WeightsError, ["truncated or corrupt"]),
        "random bytes .pth": (lambda p: p.write_bytes(random.Random(11).randbytes(4096)), ".pth", [], WeightsError, []),
        "truncated .safetensors": (cut(0.5, ".safetensors"), ".safetensors", [], WeightsError, ["truncated or corrupt"]),
        "truncated early .safetensors": (cut(0.0005, ".safetensors"), ".safetensors", [], WeightsError, ["truncated or corrupt"]),
        "random bytes .safetensors": (lambda p: p.write_bytes(random.Random(12).randbytes(4096)), ".safetensors", [], WeightsError, ["not a weights file"]),
        "5x5 stem": (saved(lambda: {**torchvision.models.resnet18(num_classes=NUM_CLASSES).state_dict(),
                                    "conv1.weight": torch.randn(64, 3, 5, 5)}), ".pth", [],
                     WeightsError, ["stem conv", "(64, 3, 5, 5)"]),
        "alexnet": (saved(lambda: torchvision.models.alexnet(num_classes=NUM_CLASSES).state_dict()), ".pth", [],
                    WeightsError, ["not a torchvision ResNet"]),
        "a random dict": (saved({"encoder.weight": torch.randn(4, 4), "step": 3}), ".pth", [], WeightsError, ["not a torchvision ResNet"]),
        "a bare tensor": (saved(torch.randn(3)), ".pth", [], WeightsError, ["does not hold a state_dict"]),
        "missing key": (saved(_state_dict_with(sd, layer2__1__bn1__running_mean=None)), ".pth", [],
                        WeightsError, ["missing", "'layer2.1.bn1.running_mean'"]),
        "unexpected key": (saved(_state_dict_with(sd, layer2__1__extra__weight=torch.zeros(3))), ".pth", [],
                           WeightsError, ["unexpected", "'layer2.1.extra.weight'"]),
        "misshaped bn": (saved(_state_dict_with(sd, layer3__0__bn2__running_var=torch.ones(255))), ".pth", [],
                         WeightsError, ["'layer3.0.bn2.running_var'", "(255,)", "(256,)"]),
        "misshaped conv": (saved(_state_dict_with(sd, layer1__1__conv2__weight=torch.randn(64, 64, 1, 1))), ".pth", [],
                           WeightsError, ["'layer1.1.conv2.weight'", "(64, 64, 1, 1)", "(64, 64, 3, 3)"]),
        "misshaped fc": (saved(_state_dict_with(sd, fc__bias=torch.zeros(11))), ".pth", [],
                         WeightsError, ["'fc.bias'", "(11,)", "(10,)"]),
        "integer tensor": (saved(_state_dict_with(sd, layer1__0__bn1__weight=torch.ones(64, dtype=torch.int64))), ".pth", [],
                           WeightsError, ["'layer1.0.bn1.weight'", "int64"]),
        "not a tensor": (saved(_state_dict_with(sd, fc__bias=3)), ".pth", [], WeightsError, ["'fc.bias'", "int"]),
        "--arch contradicts": (saved(sd), ".pth", ["--arch", "resnet34"], WeightsError, ["resnet34", "resnet18"]),
        "--dtype float8": (saved(sd), ".pth", ["--dtype", "float8"], WeightsError, ["float8", "float16"]),
        "code in the pickle": (None, ".pth", [], WeightsError, ["weights_only"]),  # written by the test
    }


BAD_CASES = [
    "missing file", "a folder", "empty .pth", "truncated .pth", "random bytes .pth", "truncated .safetensors",
    "truncated early .safetensors", "random bytes .safetensors", "5x5 stem", "alexnet", "a random dict",
    "a bare tensor", "missing key", "unexpected key", "misshaped bn", "misshaped conv", "misshaped fc",
    "integer tensor", "not a tensor", "--arch contradicts", "--dtype float8", "code in the pickle",
]


def _api_kwargs(extra: list[str]) -> dict:
    kw = {}
    for flag, value in zip(extra[::2], extra[1::2]):
        kw[flag.lstrip("-")] = value
    return kw


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input(zoo, tmp_path, capsys, case):
    """A specific exception from the API; one error line and exit 2 from the CLI; no file."""
    write, suffix, extra, exc_type, fragments = _bad_sources(zoo, tmp_path)[case]
    src = tmp_path / f"input{suffix}"
    marker = tmp_path / "code-ran"
    if case == "code in the pickle":
        torch.save({"conv1.weight": _Payload(os.system, (f"touch {marker}",))}, src)
    elif write is not None:
        write(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "converted.safetensors"

    with pytest.raises(exc_type) as info:
        W.convert(src, out, **_api_kwargs(extra))
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    assert "\n" not in msg.strip(), msg

    assert cli.main(["convert", str(src), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fastres convert: error: "), err
    for fragment in fragments:
        assert fragment in errors[0], err
    # Nothing half-written, nothing executed.
    assert list(out_dir.iterdir()) == []
    assert not marker.exists()


@pytest.mark.parametrize("case", ["missing file", "missing key"])
def test_cli_error_is_the_only_stderr_line(zoo, tmp_path, capsys, case):
    src = tmp_path / "input.pth"
    if case == "missing key":
        torch.save(_state_dict_with(zoo.model("resnet18").state_dict(), layer2__1__bn1__running_mean=None), src)
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_arch_and_dtype_arguments(zoo, tmp_path, capsys):
    pth = zoo.pth("resnet18")
    with pytest.raises(WeightsError, match="resnext50_32x4d contradicts"):
        W.convert(pth, tmp_path / "x.safetensors", arch="resnext50_32x4d")
    with pytest.raises(WeightsError, match="int8"):
        W.convert(pth, tmp_path / "x.safetensors", dtype=torch.int8)
    with pytest.raises(SystemExit) as info:  # argparse's own one-line error for a bad choice
        cli.main(["convert", str(pth), "--arch", "resnext51", "--out", str(tmp_path / "x.safetensors")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "invalid choice" in err
    assert list(tmp_path.iterdir()) == []


def test_malicious_pickle(tmp_path):
    """`fastres convert` on a pickle whose unpickling would create a file: refused, nothing runs."""
    marker, probe = tmp_path / "marker", tmp_path / "probe"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(open, (str(marker), "w")), "fc.weight": torch.zeros(10, 512)}, evil)
    # The payload is live: an unsafe load does run it.
    torch.save(_Payload(open, (str(probe), "w")), tmp_path / "probe.pth")
    torch.load(tmp_path / "probe.pth", weights_only=False).close()
    assert probe.exists()

    out = tmp_path / "out.safetensors"
    r = _fastres("convert", str(evil), "--out", str(out), cwd=tmp_path)
    assert not marker.exists(), "the pickle's code ran"
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fastres convert: error: ") and "evil.pth" in errors[0], r.stderr
    assert not out.exists()


# torch's advice on a refused load, which fastres must never pass on
TORCH_ADVICE = ("weights_only=False", "weights_only` set to `False", "Re-running", "add_safe_globals", "safe_globals(")


def _jpeg(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 30, 30)).save(path, format="JPEG")
    return path


NOT_WEIGHTS = {
    "a JPEG": (lambda p: _jpeg(p), "it looks like a JPEG image"),
    "random bytes": (lambda p: p.write_bytes(random.Random(5).randbytes(4096)), ""),
    "text": (lambda p: p.write_text("conv1.weight = 3\n" * 40), "it looks like text"),
}


@pytest.mark.parametrize("suffix", [".pth", ".jpg", ".safetensors"])
@pytest.mark.parametrize("case", list(NOT_WEIGHTS))
def test_not_a_weights_file(tmp_path, capsys, case, suffix):
    """A file that is neither a zip, a pickle nor a safetensors file is "not a weights file",
    whichever way it is given, and no message repeats torch's advice to unpickle it."""
    write, looks = NOT_WEIGHTS[case]
    src = tmp_path / f"input{suffix}"
    write(src)
    for load in (lambda: W.convert(src, tmp_path / "out.safetensors"), lambda: W.load(src, device="cpu"),
                 lambda: W.open_model(src, device="cpu")):
        with pytest.raises(WeightsError) as info:
            load()
        msg = str(info.value)
        assert "not a weights file" in msg and looks in msg and "\n" not in msg, msg
        assert not any(a in msg for a in TORCH_ADVICE), msg
    for argv in (["convert", str(src)], ["run", "--weights", str(src)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith(f"fastres {argv[0]}: error: "), err
        assert "not a weights file" in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "weights").exists()


def test_torch_advice_is_never_repeated(tmp_path):
    """torch.load(weights_only=True) refusing a pickle advises weights_only=False (unsafe) and
    allow-listing globals: the WeightsError keeps torch's reason and drops the advice."""
    src = tmp_path / "objects.pth"
    torch.save({"conv1.weight": _Payload(print, ("hello",))}, src)
    try:
        torch.load(src, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - what torch says, to compare with
        torch_message = str(exc)
    assert any(a in torch_message for a in TORCH_ADVICE), "torch no longer gives the advice this test strips"
    with pytest.raises(WeightsError, match=r"refused by torch.load\(weights_only=True\).*Unsupported global") as info:
        W.convert(src, tmp_path / "out.safetensors")
    assert not any(a in str(info.value) for a in TORCH_ADVICE), str(info.value)
    # a pickle the restricted unpickler cannot parse (damaged): corrupt, and no advice either
    (tmp_path / "damaged.pth").write_bytes(b"\x80\x02" + bytes(range(256)) * 4)
    with pytest.raises(WeightsError, match="truncated or corrupt") as info:
        W.convert(tmp_path / "damaged.pth", tmp_path / "out.safetensors")
    assert not any(a in str(info.value) for a in TORCH_ADVICE), str(info.value)


def test_a_checkpoint_given_where_a_converted_file_is_needed(zoo, tmp_path):
    with pytest.raises(WeightsError, match=r"is a PyTorch checkpoint \(torch.save\), not a safetensors file: convert it"):
        W.load(zoo.pth("resnet18"), device="cpu")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_converted_files_follow_the_umask(zoo, tmp_path, umask):
    """Converted files get the permissions of any file the user creates (0o666 less the umask),
    not mkstemp's 0o600: a worker running as another user can read them where the umask allows."""
    old = os.umask(umask)
    try:
        out = W.convert(zoo.pth("resnet18"), tmp_path / "r18.safetensors")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["r18.safetensors"]


# -- bad files given to load ----------------------------------------------------------------

def _truncated(fraction):
    def make(good: Path, p: Path) -> Path:
        data = good.read_bytes()
        p.write_bytes(data[: int(len(data) * fraction)] if fraction else data[:-10])
        return p
    return make


LOAD_CASES = {
    "truncated (last bytes)": (_truncated(0), ["truncated or corrupt"]),
    "truncated (half)": (_truncated(0.5), ["truncated or corrupt"]),
    "truncated early": (_truncated(0.0005), ["truncated or corrupt"]),
    "format version 4": (lambda g, p: rewrite(g, p, meta={"format_version": "4"}), ["format version '4'",
                                                                                       "versions 1, 2 and 3"]),
    "version 3 without its quantization": (lambda g, p: rewrite(g, p, meta={"format_version": "3"}),
                                           ["quantized=None", "int8, float8_e4m3fn"]),
    "version 2 without returns": (lambda g, p: rewrite(g, p, meta={"format_version": "2"}), ["invalid trunk metadata"]),
    "version 2 returning fc": (lambda g, p: rewrite(g, p, meta={"format_version": "2", "returns": '{"fc": "x"}',
                                                                  "dilate": "0,0,0"}), ["invalid trunk metadata", "fc"]),
    "not a fastres file": (lambda g, p: save_file({"fc.weight": torch.zeros(2, 2)}, str(p), metadata={"format": "pt"}) or p,
                           ["not a fastres weights file", "fastres convert"]),
    "unknown arch": (lambda g, p: rewrite(g, p, meta={"arch": "resnet99"}), ["resnet99"]),
    "unknown dtype": (lambda g, p: rewrite(g, p, meta={"dtype": "float8"}), ["float8"]),
    "bad num_classes": (lambda g, p: rewrite(g, p, meta={"num_classes": "ten"}), ["num_classes", "ten"]),
    "num_classes contradicts fc": (lambda g, p: rewrite(g, p, meta={"num_classes": "1000"}),
                                   ["'fc.weight'", "(10, 512)", "(1000, 512)"]),
    "missing tensor": (lambda g, p: rewrite(g, p, drop=["layer4.1.conv2.bias"]), ["missing", "'layer4.1.conv2.bias'"]),
    "unexpected tensor": (lambda g, p: rewrite(g, p, tensors={"layer4.1.conv9.weight": torch.zeros(2)}),
                          ["unexpected", "'layer4.1.conv9.weight'"]),
    "misshaped tensor": (lambda g, p: rewrite(g, p, tensors={"layer2.0.conv1.bias": torch.zeros(127)}),
                         ["'layer2.0.conv1.bias'", "(127,)", "(128,)"]),
    "conv weight stored NCHW": (lambda g, p: rewrite(g, p, tensors={"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3, dtype=torch.float16)}),
                                ["'layer1.0.conv1.weight'", "(64, 64, 3, 3)"]),
    "wrong dtype": (lambda g, p: rewrite(g, p, tensors={"fc.weight": torch.zeros(10, 512)}), ["'fc.weight'", "float32", "float16"]),
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_load_bad_file(converted, tmp_path, case):
    make, fragments = LOAD_CASES[case]
    path = make(converted, tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError) as info:
        W.load(path, device="cpu")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert W.load(converted, device="cpu").arch == "resnet18"  # the good file still loads


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        W.load(tmp_path / "nothing.safetensors", device="cpu")
    with pytest.raises(FileNotFoundError):
        W.read_metadata(tmp_path / "nothing.safetensors")


# -- atomic write ---------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupted"])
def test_atomic_write(zoo, tmp_path, monkeypatch, failure):
    """A write that dies half way leaves neither a partial file nor a stray temporary, and an
    existing file at the destination untouched."""
    import safetensors.torch

    pth = zoo.pth("resnet18")
    real_save = safetensors.torch.save_file

    def dies_half_way(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise failure

    folder = tmp_path / "weights"
    folder.mkdir()
    out = folder / "resnet18.safetensors"
    monkeypatch.setattr(safetensors.torch, "save_file", dies_half_way)
    with pytest.raises(type(failure)):
        W.convert(pth, out)
    assert list(folder.iterdir()) == []

    out.write_bytes(b"an earlier conversion")
    with pytest.raises(type(failure)):
        W.convert(pth, out)
    assert list(folder.iterdir()) == [out]
    assert out.read_bytes() == b"an earlier conversion"

    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert W.convert(pth, out) == out
    assert list(folder.iterdir()) == [out]
    assert W.load(out, device="cpu").arch == "resnet18"


@pytest.mark.parametrize("problem", ["out below a file", "disk full"])
def test_cli_write_errors_are_one_line(zoo, tmp_path, monkeypatch, capsys, problem):
    import safetensors.torch

    pth = zoo.pth("resnet18")
    out = tmp_path / "out.safetensors"
    if problem == "out below a file":
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        out = blocker / "out.safetensors"
    else:
        def full(tensors, filename, metadata=None):
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert cli.main(["convert", str(pth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("fastres convert: error: "), err


# -- the command line, end to end -----------------------------------------------------------

def test_cli_convert_then_run(zoo, tmp_path):
    """`fastres convert CKPT` then `fastres run --weights FILE` in fresh processes."""
    pth = zoo.pth("resnet18")
    r = _fastres("convert", str(pth), "--dtype", "float32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "weights" / f"{pth.stem}-float32.safetensors"
    assert out.is_file(), r.stdout + r.stderr
    check_metadata(out, arch="resnet18", dtype=torch.float32, source=pth)
    r = _fastres("run", "--weights", str(out), "--size", "32", "--batch", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resnet18" in r.stdout and "parity vs torchvision" in r.stdout, r.stdout


def test_public_convert_is_the_function(tmp_path):
    scripts = [
        "import fastres, sys; fastres.load; sys.exit(0 if callable(fastres.convert) else 3)",
        "import fastres, sys; fastres.convert; from fastres.cli import main; "
        "sys.exit(main(['run', '--weights', 'missing.safetensors']))",
    ]
    env = _env()
    procs = [subprocess.Popen([sys.executable, "-c", s], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in scripts]
    (out1, err1), (out2, err2) = (p.communicate(timeout=300) for p in procs)
    assert procs[0].returncode == 0, err1
    assert procs[1].returncode == 2 and "Traceback" not in err2 and "no such file" in err2, err2


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_any_damaged_bytes_are_a_weights_error(tmp_path, suffix):
    """Random bytes are not a weights file, or, where they start as one, reach torch.load's and
    safetensors' parsers at every depth; whatever they raise (IndexError, struct.error,
    UnicodeDecodeError, ...) becomes a one-line WeightsError (for a pickle, torch may report it
    as a refused weights-only load: also never unpickled)."""
    src = tmp_path / f"input{suffix}"
    gen = random.Random(0)
    for i in range(64):
        src.write_bytes(gen.randbytes(gen.choice((16, 256, 4096))))
        with pytest.raises(WeightsError, match="truncated or corrupt|refused by torch.load|not a weights file") as info:
            W.convert(src, tmp_path / "out.safetensors", arch="resnet18")
        assert "\n" not in str(info.value).strip()
        assert not (tmp_path / "out.safetensors").exists()


# -- provenance: which torchvision weights a checkpoint came from -----------------------------

def _resnet18_1000(tmp_path: Path, name: str) -> Path:
    """A random 1000-class resnet18 checkpoint saved under `name` (no forward: cheap)."""
    torch.manual_seed(3)
    pth = tmp_path / name
    torch.save(randomize_bn_(torchvision.models.resnet18(), 3).state_dict(), pth)
    return pth


def test_torchvision_file_name_is_recorded(tmp_path, capsys):
    """A checkpoint under the name torchvision downloads it as records its weights entry;
    the key is optional (format version 1 unchanged) and names an entry torchvision resolves."""
    url_name = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    pth = _resnet18_1000(tmp_path, url_name)
    out = tmp_path / "r18.safetensors"
    assert cli.main(["convert", str(pth), "--out", str(out)]) == 0
    assert "ResNet18_Weights.IMAGENET1K_V1" in capsys.readouterr().out
    meta = W.read_metadata(out)
    assert meta["torchvision_weights"] == "ResNet18_Weights.IMAGENET1K_V1" and meta["format_version"] == "1"
    assert set(meta) == METADATA_KEYS | {"torchvision_weights"}
    assert torchvision.models.get_weight(meta["torchvision_weights"]).transforms().resize_size == [256]
    assert W.load(out, device="cpu").num_classes == 1000


def test_torchvision_sha_prefix_is_recorded(tmp_path):
    """A renamed download is recognized by its sha256's first 8 hex digits."""
    pth = _resnet18_1000(tmp_path, "mine.pth")
    entry = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert torchvision_weights_name(pth, sha256(pth), "resnet18", 1000) is None
    digits = entry.url.rsplit("-", 1)[-1].split(".")[0]
    assert torchvision_weights_name(pth, digits + "0" * 56, "resnet18", 1000) == "ResNet18_Weights.IMAGENET1K_V1"
    # the entry must fit: another arch's entries are not searched, a class count must match
    assert torchvision_weights_name(pth, digits + "0" * 56, "resnet34", 1000) is None
    assert torchvision_weights_name(tmp_path / entry.url.rsplit("/", 1)[-1], "0" * 64, "resnet18", 10) is None


def test_other_sources_record_no_torchvision_weights(zoo, tmp_path):
    model, pth = zoo.get("resnet18")
    for src in (pth, model, model.state_dict()):
        assert "torchvision_weights" not in W.read_metadata(W.convert(src, tmp_path / "x.safetensors"))


def test_open_model_takes_converted_files_and_checkpoints(zoo, tmp_path):
    model, pth = zoo.get("resnet18")
    out = W.convert(pth, tmp_path / "f.safetensors", dtype=torch.float32)
    fast, meta = W.open_model(out, device="cpu")
    assert (fast.dtype, meta["arch"]) == (torch.float32, "resnet18")
    with pytest.raises(WeightsError, match=r"holds float32 weights, not float16: convert the checkpoint again"):
        W.open_model(out, device="cpu", dtype=torch.float16)
    folded, meta = W.open_model(pth, device="cpu", dtype="float32")
    assert meta["num_classes"] == str(NUM_CLASSES) and meta["source_sha256"] == sha256(pth)
    assert_same_params(folded.params(), fast.params())
    with pytest.raises(FileNotFoundError, match="no such file"):
        W.open_model(tmp_path / "missing.pth", device="cpu")


def test_convert_resnext_infers_the_arch_and_keeps_grouped_weights(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnext50_32x4d(num_classes=NUM_CLASSES).eval()
    src = tmp_path / "rx.pth"
    torch.save(model.state_dict(), src)
    out = W.convert(src, tmp_path / "rx.safetensors", dtype=torch.float32)
    meta = W.read_metadata(out)
    assert meta["arch"] == "resnext50_32x4d" and meta["num_classes"] == str(NUM_CLASSES)
    from safetensors.torch import load_file

    params = load_file(out)
    # Grouped: [Cout, Cin/groups, 3, 3] stored as the file stores every conv, [Cout, KH, KW, Cin/groups].
    w = params["layer1.0.conv2.weight"]
    assert tuple(w.shape) == (128, 3, 3, 4)
    w = w.permute(0, 3, 1, 2)
    bn = model.layer1[0].bn2
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    torch.testing.assert_close(w, model.layer1[0].conv2.weight * scale[:, None, None, None])


@pytest.mark.parametrize("builder, returns, dilate", [
    ("detection.retinanet_resnet50_fpn", {"layer2": "0", "layer3": "1", "layer4": "2"}, (False, False, False)),
    ("segmentation.fcn_resnet50", {"layer3": "aux", "layer4": "out"}, (False, True, True)),
])
def test_convert_the_trunk_of_a_detection_or_segmentation_checkpoint(tmp_path, builder, returns, dilate):
    kind, name = builder.split(".")
    torch.manual_seed(0)
    kwargs = dict(aux_loss=True) if kind == "segmentation" else {}
    model = getattr(getattr(torchvision.models, kind), name)(weights=None, weights_backbone=None, num_classes=3,
                                                             **kwargs).eval()
    src = tmp_path / "ckpt.pth"
    torch.save(model.state_dict(), src)
    out = W.convert(src, tmp_path / "trunk.safetensors", dtype=torch.float32)
    meta = W.read_metadata(out)
    assert meta["format_version"] == "2" and meta["arch"] == "resnet50" and "num_classes" not in meta
    trunk = W.load(out, device="cpu")
    assert dict(trunk.returns) == returns and trunk.dilate == dilate and trunk.num_classes is None
    # The same folded weights as the module's own trunk gives.
    body = model.backbone.body if kind == "detection" else model.backbone
    direct = from_torchvision(body, dtype=torch.float32, device="cpu")
    assert dict(direct.returns) == returns and direct.dilate == dilate
    for k, v in direct.params().items():
        torch.testing.assert_close(trunk.params()[k], v, rtol=0, atol=0)
    # Classifier paths say what the file is instead of failing later.
    with pytest.raises(WeightsError, match="trunk"):
        W.open_model(out, device="cpu")
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "again.safetensors")]) == 0


def _dilated_getter(return_layers):
    """An IntermediateLayerGetter over a resnet50 dilated as FCN and DeepLabV3 dilate theirs."""
    from torchvision.models._utils import IntermediateLayerGetter

    torch.manual_seed(0)
    trunk = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    return IntermediateLayerGetter(trunk, return_layers).eval()


def test_a_bare_trunk_state_dict_needs_its_dilation_stated(tmp_path, capsys):
    # A dilated trunk's weights are shaped as an undilated one's: converted without a stated
    # dilation it would run at stride 32 instead of 8. Refused, saying what to pass.
    getter = _dilated_getter({"layer4": "out"})
    src = tmp_path / "backbone.pth"
    torch.save(getter.state_dict(), src)
    with pytest.raises(WeightsError, match=r"without fc\.\* is a bare trunk.*dilate=\[False, True, True\]"):
        W.convert(src, tmp_path / "silent.safetensors", dtype=torch.float32)
    assert not (tmp_path / "silent.safetensors").exists()
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "silent.safetensors")]) != 0
    assert "--dilate 0,1,1" in capsys.readouterr().err
    # Stated, it is the trunk it was: every stage (as timm's features_only numbers them), dilated.
    out = W.convert(src, tmp_path / "dilated.safetensors", dtype=torch.float32, dilate=[False, True, True])
    assert W.read_metadata(out)["dilate"] == "0,1,1"
    loaded = W.load(out, device="cpu")
    assert loaded.dilate == (False, True, True)
    direct = from_torchvision(getter, dtype=torch.float32, device="cpu")
    for k, v in direct.params().items():
        torch.testing.assert_close(loaded.params()[k], v, rtol=0, atol=0)
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "cli.safetensors"), "--dilate", "[False, True, True]"]) == 0
    assert W.read_metadata(tmp_path / "cli.safetensors")["dilate"] == "0,1,1"
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "none.safetensors"), "--dilate", "none"]) == 0
    assert W.read_metadata(tmp_path / "none.safetensors")["dilate"] == "0,0,0"
    assert cli.main(["convert", str(src), "--out", str(tmp_path / "bad.safetensors"), "--dilate", "2,4"]) != 0
    assert "--dilate takes 'none' or three of 0/1" in capsys.readouterr().err


def test_dilated_trunk_modules_convert_with_their_own_dilation(tmp_path):
    getter = _dilated_getter({"layer3": "aux", "layer4": "out"})
    meta = W.read_metadata(W.convert(getter, tmp_path / "getter.safetensors", dtype=torch.float32))
    assert (meta["dilate"], meta["returns"]) == ("0,1,1", '{"layer3": "aux", "layer4": "out"}')
    torch.manual_seed(0)
    fcn = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3).eval()
    out = W.convert(fcn, tmp_path / "fcn.safetensors", dtype=torch.float32)
    assert W.read_metadata(out)["dilate"] == "0,1,1"
    direct = from_torchvision(fcn.backbone, dtype=torch.float32, device="cpu")
    for k, v in direct.params().items():
        torch.testing.assert_close(W.load(out, device="cpu").params()[k], v, rtol=0, atol=0)
    # A stated dilation must be the source's own.
    with pytest.raises(WeightsError, match=r"dilate=\[False, False, False\] contradicts .* segmentation trunk"):
        W.convert(fcn, tmp_path / "x.safetensors", dilate=[False, False, False])
    classifier = torchvision.models.resnet18(num_classes=3).eval()
    with pytest.raises(WeightsError, match=r"contradicts the source, which is a classifier"):
        W.convert(classifier.state_dict(), tmp_path / "y.safetensors", dilate=[False, True, True])
