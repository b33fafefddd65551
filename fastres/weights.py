"""Converted weights: `fastres.convert` writes one .safetensors file (BN folded, weights packed
in the kernels' layout and dtype) and `fastres.load` runs it. The format is in weights/README.md.

Nothing here executes code from a file: .pth files are read with torch.load(weights_only=True).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Mapping

import torch

from .checkpoint_file import check_kind as _check_kind, read_state_dict as _read_state_dict, unwrap as _unwrap
from .errors import UserError, WeightsError

FORMAT = "fastres"
FORMAT_VERSION = 1
# Version 2: a trunk (no fc; "returns" and "dilate" instead of "num_classes"); classifiers stay 1.
TRUNK_FORMAT_VERSION = 2
# Version 3: a quantized classifier or trunk (fastres.quant.fileformat).
QUANT_FORMAT_VERSION = 3
QUANT_DTYPES = ("int8", "float8_e4m3fn")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
DEFAULT_DIR = Path("weights")


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise WeightsError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state_dict_sha256(sd: Mapping[str, torch.Tensor]) -> str:
    """For sources that are not files: the sha256 of every name and tensor's bytes, in order."""
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _pack(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Conv weights as stored: their physical [Cout, KH, KW, Cin] layout, contiguous."""
    return {k: (v.permute(0, 2, 3, 1).contiguous() if v.dim() == 4 else v.contiguous()) for k, v in params.items()}


def _unpack(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.permute(0, 3, 1, 2) if v.dim() == 4 else v) for k, v in tensors.items()}


def prepare(src, *, arch: str | None = None, dtype: torch.dtype | str = torch.float16, dilate=None,
            verbose: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """(folded parameters, the file's metadata, the default file name's stem) of a source:
    what `convert` writes, without writing it. Raises WeightsError like `convert`."""
    from .build import check_module
    from .plan import (ARCHS, NO_DILATION, UnsupportedModelError, arch_blocks, arch_label, check_dilate,
                       expected_shapes, fold_params, infer_arch, returns_depth)
    from .sources.checkpoints import (BARE_TRUNK_DILATION, TrunkCheckpoint, check_dilate_agrees, features_trunk,
                                      split_trunk, torchvision_weights_name, trunk_module)
    from .sources.hub import module_checkpoint, read_hub

    dtype = _dtype(dtype)
    if arch is not None and arch not in ARCHS:
        raise WeightsError(f"unknown arch {arch!r}; supported: {', '.join(ARCHS)}")
    if dilate is not None:
        try:
            dilate = check_dilate(dilate)
        except ValueError as exc:
            raise WeightsError(str(exc)) from None
    eps: float | dict[str, float] = 1e-5  # torchvision's BatchNorm2d default; a state_dict does not record it
    path = hub = module_trunk = None
    try:
        if isinstance(src, torch.nn.Module):
            hub = module_checkpoint(src)  # timm's or transformers' (checked as from_timm / from_transformers do)
            module_trunk = None if hub is not None else trunk_module(src)
            if module_trunk is not None:  # its dilation read off its convs, as from_torchvision reads it
                facts, source, sd = module_trunk
                found, eps = facts.arch, facts.eps
            elif hub is None:
                found, _, eps = check_module(src)
                sd = src.state_dict()
            else:
                found, sd, eps = hub.arch, hub.state_dict, hub.eps
            sha, name = _state_dict_sha256(sd), arch_label(found)
        elif isinstance(src, Mapping):
            sd = _unwrap(src, "the state_dict")
            sha, name = _state_dict_sha256(sd), "state_dict"
        else:
            path = Path(src)
            if verbose:
                print(f"reading {path}", file=sys.stderr)
            hub = read_hub(path, _read_state_dict) if path.exists() else None
            if hub is not None:  # timm's or transformers' (their names, their config)
                sd, sha = hub.state_dict, _sha256(hub.weights)
                name = path.name if path.is_dir() else path.parent.resolve().name
            else:
                sd = _read_state_dict(path)
                sha, name = _sha256(path), path.stem
        trunk = None if isinstance(src, torch.nn.Module) or hub is not None else split_trunk(sd)
        if module_trunk is not None:
            trunk = TrunkCheckpoint(sd, facts.returns, facts.dilate, source)
        elif hub is not None and hub.returns is not None:
            trunk = TrunkCheckpoint(sd, hub.returns, NO_DILATION, hub.source)
        elif trunk is None and not isinstance(src, torch.nn.Module):
            trunk = features_trunk(sd)  # no classifier: every stage, numbered as timm's features_only
            if trunk is not None:
                if dilate is None:
                    raise UnsupportedModelError(BARE_TRUNK_DILATION)
                trunk = dataclasses.replace(trunk, dilate=dilate)
        if dilate is not None:
            check_dilate_agrees(dilate, trunk)
        if trunk is not None:  # a detector's or segmenter's checkpoint: its ResNet trunk alone
            sd = trunk.state_dict
        if hub is not None and hub.arch is not None:
            found = hub.arch
            num_classes = None if trunk is not None else int(sd["fc.weight"].shape[0])
            if trunk is not None:
                keep = expected_shapes(found, None, returns_depth(trunk.returns))
                sd = {k: v for k, v in sd.items() if k in keep}
        else:
            found, num_classes = infer_arch(sd, trunk=trunk is not None)
        if arch is not None and arch != found:
            raise WeightsError(f"arch {arch} contradicts the state_dict's keys and shapes, which are "
                               f"{arch_label(found)}'s")
        if verbose:
            what = f"{num_classes} classes" if trunk is None else f"the trunk of a {trunk.source} checkpoint"
            print(f"folding BatchNorm of {arch_label(found)} ({what}) into {_dtype_name(dtype)} weights", file=sys.stderr)
        depth = 4 if trunk is None else returns_depth(trunk.returns)
        if trunk is not None:
            arch_blocks(found, trunk.dilate, depth)  # a dilation torchvision never builds (BasicBlock) is refused
        params = fold_params(sd, found, num_classes, dtype, eps, depth)
    except UnsupportedModelError as exc:
        raise WeightsError(str(exc)) from None

    from . import __version__

    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        **arch_metadata(found),
        "dtype": _dtype_name(dtype),
        "num_classes": str(num_classes),
        "source_sha256": sha,
        "fastres_version": __version__,
    }
    if hub is not None:  # where the weights came from, and the preprocessing their config states
        metadata["source"] = hub.source
        if hub.preprocess is not None:
            metadata["preprocess"] = json.dumps(hub.preprocess)
    if trunk is not None:
        del metadata["num_classes"]
        metadata["format_version"] = str(TRUNK_FORMAT_VERSION)
        metadata["returns"] = json.dumps(dict(trunk.returns))
        metadata["dilate"] = ",".join(str(int(d)) for d in trunk.dilate)
        return params, metadata, name
    origin = (torchvision_weights_name(path, sha, found, num_classes)
              if path is not None and hub is None and isinstance(found, str) else None)
    if origin is not None:
        metadata["torchvision_weights"] = origin
    return params, metadata, name


def convert(
    src,
    out: str | os.PathLike | None = None,
    *,
    arch: str | None = None,
    dtype: torch.dtype | str = torch.float16,
    dilate=None,
    verbose: bool = False,
    calibrate=None,
    calibration_count: int = 500,
    method: str | None = None,
) -> Path:
    """Convert a ResNet checkpoint into a fastres .safetensors file; returns its path.

    src: a .pth/.pt/.bin state_dict (or a dict holding one under "state_dict"/"model"), a
    .safetensors state_dict, a state_dict mapping, a torchvision ResNet module (or a trunk:
    FCN, DeepLabV3, IntermediateLayerGetter over a ResNet), or a timm or
    transformers model folder (fastres.sources.hub: their source and stated preprocessing are
    recorded as `source` and `preprocess`).
    arch: inferred from the keys and shapes; when given, it must agree with them.
    dilate: torchvision's replace_stride_with_dilation (three bools, layer2..layer4) of a bare
    trunk state_dict (a ResNet's without fc.*: timm's features_only model, a saved
    IntermediateLayerGetter or an FCN's / DeepLabV3's backbone), whose weights do not show it:
    required there ([False, False, False]: undilated; [False, True, True]: FCN, DeepLabV3).
    Elsewhere the source states its own (a segmentation checkpoint's, a module's convs) and a
    `dilate` given must agree with it. An FCN or DeepLabV3 module, or an IntermediateLayerGetter
    over a ResNet, converts to a trunk with its own dilation.
    out: default weights/<source name>-<dtype>.safetensors. The write is atomic.
    dtype "int8" or "float8_e4m3fn" (or the torch dtypes): a quantized file (format version 3),
    calibrated by fastres.quantize with `method` on `calibrate`: a folder of images (its first
    `calibration_count` in sorted order, preprocessed as `fastres predict` does) or an iterable
    of normalized float batches; its float layers are float16.
    A source file downloaded from torchvision (its file name or sha256 says which weights
    entry) is recorded as `torchvision_weights`, so that `fastres predict` uses its transforms.
    Raises WeightsError (a ValueError) for anything it cannot convert exactly.
    """
    qdtype = _quant_dtype(dtype)
    if qdtype is not None:
        params, metadata, name = _quantized(src, arch, qdtype, dilate, verbose, calibrate, calibration_count, method)
    elif calibrate is not None:
        raise WeightsError("calibrate is for a quantized file: --dtype int8 or float8_e4m3fn")
    else:
        params, metadata, name = prepare(src, arch=arch, dtype=dtype, dilate=dilate, verbose=verbose)
    suffix = metadata.get("quantized", metadata["dtype"])
    target = Path(out) if out is not None else DEFAULT_DIR / f"{name}-{suffix}.safetensors"
    _atomic_save(_pack(params), metadata, target)
    if verbose:
        print(f"wrote {target}", file=sys.stderr)
    return target


def _quant_dtype(dtype) -> torch.dtype | None:
    from .quant.fileformat import QUANT_DTYPE_NAMES

    if isinstance(dtype, str) and dtype in QUANT_DTYPE_NAMES:
        return QUANT_DTYPE_NAMES[dtype]
    return dtype if dtype in QUANT_DTYPE_NAMES.values() else None


def _quantized(src, arch, qdtype: torch.dtype, dilate, verbose: bool, calibrate, count: int, method: str):
    """(params, metadata, name) of a quantized file: the float32 fold of `src`, calibrated."""
    from .engine import ResNet
    from .quant.fileformat import quant_metadata
    from .quant.images import CalibrationImages
    from .quant.quantize import quantize

    if calibrate is None:
        raise WeightsError(f"quantizing to {_dtype_name(qdtype)} needs calibration images: calibrate= a folder or "
                           "batches (--calibrate DIR)")
    # The images' reader raises UserError (a folder without images, an image it cannot decode):
    # here that is the WeightsError convert promises. The folder is listed before the checkpoint
    # is read, so that a wrong one is refused at once.
    batches, source = calibrate, "batches"
    try:
        if isinstance(calibrate, (str, os.PathLike)):
            batches = CalibrationImages(calibrate, count)
            source = f"{len(batches.files)} images of {Path(calibrate).name}"
    except UserError as exc:
        raise WeightsError(f"calibration images: {exc}") from None
    params, metadata, name = prepare(src, arch=arch, dtype=torch.float32, dilate=dilate, verbose=verbose)
    if isinstance(batches, CalibrationImages) and "preprocess" in metadata:  # the source's stated preprocessing
        pre = json.loads(metadata["preprocess"])
        batches.set_transform(**{k: pre[k] for k in ("resize", "crop", "interpolation", "mean", "std") if k in pre})
    trunk = trunk_spec(metadata)
    returns, dilated = trunk or (None, None)
    engine = ResNet(file_arch(metadata), params, num_classes=None if trunk else int(metadata["num_classes"]),
                    returns=returns, dilate=dilated, dtype=torch.float32, device="cpu", cuda_graph=False)
    try:
        q = quantize(engine, batches, dtype=qdtype, method=method, float_dtype=torch.float16, device="cpu",
                     cuda_graph=False, progress=verbose)
    except UserError as exc:
        raise WeightsError(f"calibration images: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"calibration failed: {exc}") from None
    metadata.update(dtype="float16", **quant_metadata(q, {"method": q.report.method, "source": source,
                                                          "images": q.report.images, "batches": q.report.batches}))
    return q.params(), metadata, name


def _new_file_beside(target: Path) -> tuple[str, int]:
    """(path, mode) of a new empty temporary file in target's folder, created with the
    permissions any file the user creates gets: 0o666 less the umask (read here from the file
    itself: os.umask cannot be read without setting it, which other threads would see)."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            return str(tmp), os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
    raise FileExistsError(f"cannot create a temporary file beside {target}")


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], target: Path) -> None:
    """Write to a temporary file beside `target`, then rename: no partial file ever appears.
    The file gets the user's umask, as any file they create (safetensors and mkstemp would
    leave it 0o600, unreadable to a cluster's workers running as another user)."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _new_file_beside(target)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with __import__("contextlib").suppress(OSError):
            os.unlink(tmp)
        raise


def arch_metadata(arch) -> dict[str, str]:
    """A file's "arch": torchvision's name, or for another ResNet (timm's, transformers') its
    label with the whole shape in "arch_spec" (JSON of fastres.plan.ArchSpec)."""
    if isinstance(arch, str):
        return {"arch": arch}
    return {"arch": arch.label, "arch_spec": arch.to_json()}


def file_arch(meta: Mapping[str, str], path=None):
    """The arch a file's metadata names: a torchvision name or an ArchSpec."""
    from .plan import ARCHS, ArchSpec, UnsupportedModelError

    if "arch_spec" in meta:
        try:
            return ArchSpec.from_json(meta["arch_spec"])
        except (ValueError, TypeError, KeyError, UnsupportedModelError) as exc:
            raise WeightsError(f"{path} has an invalid arch_spec {meta['arch_spec'][:200]!r} ({exc})") from None
    if meta.get("arch") not in ARCHS:
        raise WeightsError(f"{path} names an unknown arch {meta.get('arch')!r}")
    return meta["arch"]


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a converted file, checked: format, version, arch, dtype, num_classes."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise WeightsError(f"{path} is not a file")
    _check_kind(path, "safetensors", hint=": convert it with `fastres convert`")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a fastres weights file (metadata format={meta.get('format')!r}); convert it with `fastres convert`")
    if meta.get("format_version") not in (str(FORMAT_VERSION), str(TRUNK_FORMAT_VERSION), str(QUANT_FORMAT_VERSION)):
        raise WeightsError(f"{path} has format version {meta.get('format_version')!r}; this fastres reads versions "
                           f"{FORMAT_VERSION}, {TRUNK_FORMAT_VERSION} and {QUANT_FORMAT_VERSION}")
    file_arch(meta, path)
    if meta.get("dtype") not in DTYPES:
        raise WeightsError(f"{path} names an unknown dtype {meta.get('dtype')!r}")
    from .quant.fileformat import read_quant

    read_quant(meta, path)
    if trunk_spec(meta, path) is None and (not str(meta.get("num_classes", "")).isdigit()
                                           or int(meta["num_classes"]) < 1):
        raise WeightsError(f"{path} has an invalid num_classes {meta.get('num_classes')!r}")
    return meta


def trunk_spec(meta: Mapping[str, str], path=None) -> tuple[tuple, tuple[bool, bool, bool]] | None:
    """(returns, dilate) of a trunk file's metadata; None for a classifier's."""
    from .plan import UnsupportedModelError, check_dilate, check_returns

    version = meta.get("format_version")
    if version != str(TRUNK_FORMAT_VERSION) and not (version == str(QUANT_FORMAT_VERSION) and "returns" in meta):
        return None
    try:
        returns = check_returns(json.loads(meta.get("returns", "")))
        dilate = check_dilate([int(v) for v in meta.get("dilate", "").split(",")])
    except (ValueError, TypeError, UnsupportedModelError) as exc:
        raise WeightsError(f"{path}: invalid trunk metadata returns={meta.get('returns')!r} dilate="
                           f"{meta.get('dilate')!r} ({exc})") from None
    return returns, dilate


def load(path: str | os.PathLike, device: torch.device | str = "cuda", *, cuda_graph: bool = True, tune=False):
    """A fastres.ResNet from a file written by `convert` (no re-folding: the weights run as stored).

    Every tensor is checked (names, shapes, dtypes) before the engine is built: a bad file
    raises WeightsError and nothing is half-loaded.
    """
    from safetensors.torch import load_file

    from .engine import ResNet
    from .plan import UnsupportedModelError, check_params, returns_depth
    from .quant.fileformat import read_quant

    meta = read_metadata(path)
    quantized, ranges, report = read_quant(meta, path) or (None, None, None)
    trunk = trunk_spec(meta, path)
    arch, dtype = file_arch(meta, path), DTYPES[meta["dtype"]]
    num_classes = None if trunk else int(meta["num_classes"])
    returns, dilate = trunk or (None, None)
    try:
        stored = load_file(str(path))
    except Exception as exc:
        raise WeightsError(f"{path} is truncated or corrupt: {exc}") from None
    params = _unpack(stored)
    try:
        check_params(params, arch, num_classes, dtype, returns_depth(returns), quantized)
    except (UnsupportedModelError, TypeError) as exc:
        raise WeightsError(f"{path}: {exc}") from None
    if quantized is not None:
        _check_quantized(path, arch, dilate, returns_depth(returns), quantized, ranges, num_classes is not None)
    engine = ResNet(arch, params, num_classes=num_classes, returns=returns, dilate=dilate, dtype=dtype, device=device,
                    cuda_graph=cuda_graph, tune=tune, quantized=quantized, ranges=ranges)
    engine.report = report
    return engine


def _check_quantized(path, arch, dilate, depth: int, quantized, ranges: Mapping[str, float],
                     classifier_file: bool) -> None:
    """A version-3 file's 8-bit layers are convs of its arch, and its ranges hold the image's
    and every conv's output (what fastres.quantize records): refused at load, not at the first
    forward that would need a missing one."""
    from .plan import NO_DILATION, arch_convs, arch_label

    from .precision import CLASSIFIER, POOLED

    convs = [c.name for c in arch_convs(arch, dilate or NO_DILATION, depth)]
    classifier = [CLASSIFIER] if classifier_file else []
    unknown = sorted(quantized.layers - set(convs) - set(classifier))
    if unknown:
        raise WeightsError(f"{path}: quantized_layers names {unknown}, which are not convs of {arch_label(arch)}"
                           + (" or its classifier 'fc'" if classifier else ""))
    needed = ("input", *convs, *([POOLED] if CLASSIFIER in quantized.layers else []))
    missing = [name for name in needed if name not in ranges]
    if missing:
        raise WeightsError(f"{path}: ranges lacks {missing[0]!r} (it needs the input's and every conv's range, and the "
                           "pooled features' where the classifier is 8-bit)")


def open_model(path: str | os.PathLike, device: torch.device | str = "cuda", *, dtype=None,
               cuda_graph: bool = True, tune=False):
    """(fastres.ResNet, metadata) of a converted .safetensors file or of a torchvision
    checkpoint (.pth / .pt, folded in memory at `dtype`, default float16). A converted file
    runs in its own dtype: `dtype`, when given, must be it. Raises WeightsError or
    FileNotFoundError."""
    from .engine import ResNet

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors" and _is_converted(path):
        meta = read_metadata(path)
        _refuse_trunk(path, meta)
        held = meta.get("quantized", meta["dtype"])
        wanted = None if dtype is None else _dtype_name(_quant_dtype(dtype) or _dtype(dtype))
        if wanted is not None and wanted != held:
            raise WeightsError(f"{path} holds {held} weights, not {wanted}: convert the checkpoint again with "
                               f"--dtype {wanted}" + (" --calibrate DIR" if wanted in QUANT_DTYPES else ""))
        return load(path, device, cuda_graph=cuda_graph, tune=tune), meta
    params, meta, _ = prepare(path, dtype=torch.float16 if dtype is None else dtype)
    _refuse_trunk(path, meta)
    model = ResNet(file_arch(meta, path), params, num_classes=int(meta["num_classes"]), dtype=DTYPES[meta["dtype"]],
                   device=device, cuda_graph=cuda_graph, tune=tune)
    return model, meta


def _refuse_trunk(path, meta: Mapping[str, str]) -> None:
    if "num_classes" not in meta:
        raise WeightsError(f"{path} holds the ResNet trunk of a detection or segmentation model, not a classifier: "
                           "load it with fastres.load and put it in place of the model's trunk")


def _is_converted(path: Path) -> bool:
    """A .safetensors file written by `convert` (else: a torchvision state_dict to fold)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - damaged: read_metadata / _read_state_dict say how
        return True
