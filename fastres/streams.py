"""Streams fastres owns outright, for graph capture and timing.

`torch.cuda.Stream()` hands out one of PyTorch's pooled streams (32 per device and priority, in
turn), and a caller on another thread may be running on the very same one. Capture state belongs
to the stream, not the thread: a capture on a pooled stream can record a caller's input copy,
replay and output clone into fastres' graph instead of running them (the caller then reads
uninitialised logits, and the graph later replays its work). So every capture and every tuning
measurement runs on a stream created for it alone (`cuStreamCreate` / `hipStreamCreateWithFlags`),
wrapped as a `torch.cuda.ExternalStream`, and destroyed after the work on it has finished.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading
import warnings
from typing import Iterator

import torch

_NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING == hipStreamNonBlocking: no implicit sync with stream 0
_lib_lock = threading.Lock()
_lib: tuple | None = None


class StreamError(RuntimeError):
    """A stream of fastres' own could not be created."""


def _api() -> tuple:
    """(library, create(handle*, flags) -> status, destroy(handle) -> status) of this torch build."""
    global _lib
    with _lib_lock:
        if _lib is None:
            if torch.version.hip:
                lib = ctypes.CDLL("libamdhip64.so")
                _lib = (lib, lib.hipStreamCreateWithFlags, lib.hipStreamDestroy, "hip")
            else:
                lib = ctypes.CDLL("libcuda.so.1")
                _lib = (lib, lib.cuStreamCreate, lib.cuStreamDestroy_v2, "cu")
        return _lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise StreamError(f"{what} failed with status {status}")


def create_stream(device: torch.device) -> torch.cuda.ExternalStream:
    """A new non-blocking stream on `device` that no one else holds; free it with `destroy_stream`."""
    device = torch.device(device)
    try:
        lib, create, _, prefix = _api()
    except OSError as exc:
        raise StreamError(f"no CUDA/HIP driver library to create a stream with: {exc}") from exc
    with torch.cuda.device(device):
        # A runtime call first makes the device's primary context (torch's) current on this
        # thread: the driver API creates the stream in whichever context is current.
        torch.cuda.synchronize(device)
        if prefix == "cu":
            ordinal = ctypes.c_int(-1)
            _check(lib.cuCtxGetDevice(ctypes.byref(ordinal)), "cuCtxGetDevice")
            if ordinal.value != device.index:
                raise StreamError(f"the current CUDA context is on device {ordinal.value}, not {device}")
        handle = ctypes.c_void_p()
        _check(create(ctypes.byref(handle), ctypes.c_uint(_NON_BLOCKING)), f"{prefix}StreamCreate")
        return torch.cuda.ExternalStream(handle.value, device=device)


def destroy_stream(stream: torch.cuda.ExternalStream) -> None:
    """Wait for the work on `stream`, then free it."""
    stream.synchronize()
    _, _, destroy, prefix = _api()
    _check(destroy(ctypes.c_void_p(stream.cuda_stream)), f"{prefix}StreamDestroy")


_warned = False


def acquire_stream(device: torch.device | int) -> tuple[torch.cuda.Stream, bool]:
    """(a stream of fastres' own on `device`, True); where the driver refuses one (no
    libcuda.so.1 to open, say), (a pooled `torch.cuda.Stream`, False), with one warning per
    process: a caller on another thread may then share it. Give it back with `release_stream`."""
    global _warned
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    try:
        return create_stream(device), True
    except StreamError as exc:
        if not _warned:
            _warned = True
            warnings.warn(f"fastres: {exc}; using pooled CUDA streams instead, which another thread's work "
                          "may share", stacklevel=3)
        return torch.cuda.Stream(device), False


def release_stream(stream: torch.cuda.Stream, owned: bool) -> None:
    """Wait for the work on `stream`; free it only if fastres created it (`acquire_stream`'s
    flag): a pooled stream belongs to PyTorch."""
    if owned:
        destroy_stream(stream)
    else:
        stream.synchronize()


@contextlib.contextmanager
def owned_stream(device: torch.device | int) -> Iterator[torch.cuda.Stream]:
    """A stream of fastres' own for the block (`acquire_stream`: or a pooled one where the
    driver refuses), ordered after the current stream's work so far; the current stream waits
    for the block's work at the end, and the stream is then freed."""
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    stream, owned = acquire_stream(device)
    try:
        current = torch.cuda.current_stream(device)
        stream.wait_stream(current)
        yield stream
        current.wait_stream(stream)
    finally:
        if owned:
            destroy_stream(stream)
