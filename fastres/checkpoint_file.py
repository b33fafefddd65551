"""Reading a checkpoint file without running its code: what kind of file it is from its first
bytes, a .pth through torch.load(weights_only=True) and a .safetensors through safetensors,
the state_dict inside a training checkpoint; every refusal a WeightsError that says why,
without torch's advice to unpickle the file."""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Mapping

import torch

from .errors import WeightsError


# What a weights file starts with: torch.save's zip archive (or its old pickle format, or the
# oldest tar one), or safetensors' little-endian header length and the header's JSON "{".
_ZIP, _PICKLE_PROTOCOLS, _TAR_MAGIC = b"PK\x03\x04", range(2, 6), b"ustar"
_OTHER_FORMATS = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image",
                  b"%PDF": "a PDF document", b"\x1f\x8b": "a gzip archive", b"BM": "a BMP image"}
_HEAD = 512
_MAX_HEADER = 100_000_000  # safetensors' own limit on its JSON header


def file_kind(path: Path) -> str | None:
    """"zip", "pickle", "tar" or "safetensors" from the file's first bytes; None when they are
    none of these; "short" when the file is too short to tell (truncated)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if len(head) < 9:
        return "short"
    if head.startswith(_ZIP):
        return "zip"
    if head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return "pickle"
    if head[257:262] == _TAR_MAGIC:
        return "tar"
    if head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= _MAX_HEADER:
        return "safetensors"
    return None


def _not_weights(path: Path) -> WeightsError:
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    looks = next((f" (it looks like {what})" for magic, what in _OTHER_FORMATS.items() if head.startswith(magic)), "")
    if not looks and head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        looks = " (it looks like text)"
    return WeightsError(f"{path} is not a weights file{looks}: neither a PyTorch checkpoint (torch.save) nor a "
                        "safetensors file")


def check_kind(path: Path, *kinds: str, hint: str = "") -> None:
    """Raise WeightsError unless the file starts as one of `kinds` (or is too short to tell:
    then the parser says it is truncated); `hint` ends the message for a file of the other
    known kind."""
    kind = file_kind(path)
    if kind is None:
        raise _not_weights(path)
    if kind != "short" and kind not in kinds:
        what = "a safetensors file" if kind == "safetensors" else "a PyTorch checkpoint (torch.save)"
        want = "a safetensors file" if kinds == ("safetensors",) else "a PyTorch checkpoint"
        raise WeightsError(f"{path} is {what}, not {want}{hint}")


# Sentences of torch.load's refusals that are advice, not the reason: to load the file with
# weights_only=False (wrong for a file that is not a checkpoint, and unsafe for one that is:
# unpickling runs whatever code the file holds), or to allow-list the globals it names.
_TORCH_ADVICE = ("weights_only", "weights only load failed", "re-running", "trusted source", "please file an issue",
                 "please use", "allowlist", "safe_globals", "check the documentation", "two options",
                 "alternatively", "arbitrary code")


def _torch_reason(exc: BaseException) -> str:
    """What torch.load(weights_only=True) objected to, in one line, without torch's advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"WeightsUnpickler error:\s*(.*)", text, re.S)
    if found:
        text = found.group(1)
    sentences = (s.strip() for s in re.split(r"(?<=\.)\s+|\n+", text))
    kept = [s for s in sentences if s and not any(a in s.lower() for a in _TORCH_ADVICE)]
    return " ".join(kept) or type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise WeightsError(f"{path} is not a file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        check_kind(path, "safetensors")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is truncated or corrupt: {exc}") from None
    check_kind(path, "zip", "pickle", "tar")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _torch_reason(exc)
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc):
            raise WeightsError(f"{path} is truncated or corrupt: {reason}") from None
        if "global" not in reason.lower():  # an opcode the restricted unpickler lacks: damaged bytes
            raise WeightsError(f"{path} is truncated or corrupt: {reason}") from None
        raise WeightsError(
            f"{path} was refused by torch.load(weights_only=True): it holds objects other than tensors, "
            f"which fastres never unpickles ({reason})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - damaged bytes surface as IndexError, struct.error, UnicodeDecodeError...
        raise WeightsError(f"{path} is truncated or corrupt: {_torch_reason(exc)}") from None
    return unwrap(obj, str(path))


def unwrap(obj, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{where} does not hold a state_dict (a mapping of names to tensors), but a {type(obj).__name__}")
    sd = dict(obj)
    # Saved from a DataParallel/DistributedDataParallel wrapper.
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd
