"""Per-layer tile selection by measurement, remembered on disk.

For each conv of a plan the engine asks `Tuner.choose`: a cached answer is used as is; otherwise
every candidate of the layer (`kernels.tuning_candidates`: its gate-cleared config space, and
each tile split-K where the heuristic would split it) is run on the layer's own buffers,
checked against the default config's output (a config that computes something else, e.g. a
miscompile, is rejected, never timed), timed from a CUDA graph, and the fastest is stored. The
cache is keyed by device name, triton version, dtype, config space, layer geometry (residual
included) and batch bucket, so a second start with the same cache tunes nothing; processes
tuning at once into one cache file merge their entries into it under a file lock.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from .kernels.config import Config

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

# A config's output must match the default config's this closely (fp32 accumulation in both;
# only the reduction order differs) or it is rejected.
AGREE_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def cache_dir() -> Path:
    root = os.environ.get("FASTRES_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "fastres"


def batch_bucket(n: int) -> int:
    """Batches share a tuning result within a power-of-two bucket (1, 2, 4, ..., 256, ...)."""
    return 1 << max(0, int(n) - 1).bit_length()


def cache_key(device: str, dtype: torch.dtype, space: str, geometry: Sequence[int], batch: int) -> str:
    import triton

    geo = "x".join(str(int(g)) for g in geometry)
    return f"{device}|triton-{triton.__version__}|{str(dtype).removeprefix('torch.')}|{space}|{geo}|b{batch_bucket(batch)}"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if missing) against other processes: flock
    on POSIX, msvcrt.locking on Windows. Where neither exists the body runs unlocked; the
    caller's re-read then only narrows the window in which a concurrent write is lost."""
    with open(lock_path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        elif msvcrt is not None:
            f.seek(0)
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError as exc:  # LK_LOCK gives up after 10 one-second tries: the lock is busy, try again
                    if exc.errno != errno.EDEADLOCK:
                        raise
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            elif msvcrt is not None:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


class TuningCache:
    """A JSON file of key -> {"config": Config fields, "ms": float}; written atomically.

    Several processes may tune into one file: a `put` takes an exclusive lock on the sibling
    ``<name>.lock``, re-reads the file, adds its entry and replaces the file, so no writer
    drops another's entries."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else cache_dir() / "tuning.json"
        self._lock = threading.Lock()
        self._entries: dict[str, dict] | None = None

    @property
    def lock_path(self) -> Path:
        """The file `put` locks while it re-reads and rewrites the cache."""
        return self.path.with_name(self.path.name + ".lock")

    def _read(self, stacklevel: int) -> dict[str, dict]:
        """The entries on disk now (none if the file is missing or unreadable, with a warning
        pointing `stacklevel` frames up)."""
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            warnings.warn(f"ignoring unreadable tuning cache {self.path}: {exc}", stacklevel=stacklevel + 1)
            return {}

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = self._read(stacklevel=3)
        return self._entries

    def get(self, key: str) -> Config | None:
        with self._lock:
            entry = self._load().get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            return None
        try:
            return Config(**entry["config"])
        except TypeError:
            return None

    def put(self, key: str, config: Config, ms: float) -> None:
        """Store `key`'s choice, merged into the file as other processes left it."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _exclusive(self.lock_path):
                # The file, not this cache's first read of it: other processes may have added to it.
                entries = self._read(stacklevel=2)
                entries[key] = {"config": dataclasses.asdict(config), "ms": ms}
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                try:
                    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
                    os.replace(tmp, self.path)
                finally:
                    tmp.unlink(missing_ok=True)
            self._entries = entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._load())


def cuda_timer(fn: Callable[[], object], *, target_ms: float = 5.0, samples: int = 10) -> float:
    """Median milliseconds of one `fn`, replayed from a CUDA graph of back-to-back calls.

    The engine runs its launches from a CUDA graph, so a layer is timed the same way: a
    batch-1 layer takes a few microseconds on the GPU but tens on the host, and timing host
    launches would rank configs by Python overhead (a split-K config's second launch most).
    The graph is captured in thread-local mode on a stream of its own (`fastres.streams`),
    without the collection and cache flush of `torch.cuda.graph`: other threads keep running
    their own shapes meanwhile.
    """
    from .streams import owned_stream

    # A stream of fastres' own: on a pooled one a caller's work could land in this graph.
    with owned_stream(torch.cuda.current_device()) as stream, torch.cuda.stream(stream):
        fn()  # compiled and warm
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(3):
            fn()
        end.record()
        end.synchronize()
        # Calls per replay: about target_ms of them, as far as eager timing (an upper bound of
        # the device time) tells.
        calls = int(min(1000, max(10, target_ms / max(start.elapsed_time(end) / 3, 1e-3))))
        graph = torch.cuda.CUDAGraph()
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            for _ in range(calls):
                fn()
        finally:
            graph.capture_end()
        graph.replay()
        times = []
        for _ in range(samples):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / calls)
    times.sort()
    return float(times[len(times) // 2])


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    o, r = out.double(), ref.double()
    return ((o - r).norm() / r.norm().clamp_min(1e-300)).item()


class Tuner:
    """Chooses a config per layer: from the cache, else by checking and timing every candidate."""

    def __init__(self, cache: TuningCache | None = None, *, timer: Callable[[Callable[[], object]], float] | None = None):
        self.cache = cache if cache is not None else TuningCache()
        self.timer = timer or cuda_timer
        self.tuned = 0  # layers measured (not found in the cache) by this tuner

    def cached(self, key: str, candidates: Sequence[Config]) -> Config | None:
        """The cached choice for `key` as one of `candidates`, or None.

        Batches share an entry within a power-of-two bucket, but a split's count follows the
        exact batch: an entry matches the candidate with its tile and the same split-or-not.
        """
        hit = self.cache.get(key)
        if hit is None:
            return None
        tile = dataclasses.replace(hit, SPLIT_K=1)
        for c in candidates:
            if dataclasses.replace(c, SPLIT_K=1) == tile and (c.SPLIT_K > 1) == (hit.SPLIT_K > 1):
                return c
        return None

    def choose(
        self,
        key: str,
        run: Callable[[Config], torch.Tensor],
        candidates: Sequence[Config],
        default: Config,
        dtype: torch.dtype,
    ) -> Config:
        """`run(config)` launches the layer with `config` and returns its output tensor."""
        hit = self.cached(key, candidates)
        if hit is not None:
            return hit
        ref = run(default).clone()
        best, best_ms = default, float("inf")
        for cfg in candidates:
            out = run(cfg)
            rel = _rel(out, ref)
            if not rel <= AGREE_RTOL[dtype]:
                warnings.warn(f"tuning {key}: config {cfg.name} disagrees with {default.name} (rel {rel:.1e}); rejected",
                              stacklevel=2)
                continue
            ms = self.timer(lambda cfg=cfg: run(cfg))
            if ms < best_ms:
                best, best_ms = cfg, ms
        self.tuned += 1
        self.cache.put(key, best, best_ms)
        return best
