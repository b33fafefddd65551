"""Per-layer tuning: measured choice over the gate-cleared space, checked before timed,
remembered on disk so that a second start tunes nothing."""
from __future__ import annotations

import dataclasses
import errno
import json

import pytest
import torch

import fastres
from fastres.device import DeviceInfo
from fastres.kernels import Config, tuning_candidates
from fastres.kernels.conv import reduction
from fastres.tuning import Tuner, TuningCache, batch_bucket, cache_key
from helpers import DEVICE, assert_close
from test_build import calibrated, reference


def make_tuner(path, cost=lambda cfg: cfg.BLOCK_M * cfg.BLOCK_N * cfg.BLOCK_K / cfg.SPLIT_K):
    calls = []

    def timer(fn):
        calls.append(fn)
        return float(cost(current[0]))

    current = [None]

    class _Tuner(Tuner):
        def choose(self, key, run, candidates, default, dtype):
            def run_tracked(cfg):
                current[0] = cfg
                return run(cfg)
            return super().choose(key, run_tracked, candidates, default, dtype)

    return _Tuner(TuningCache(path), timer=timer), calls


# Candidates per layer that the interpreter runs quickly (the real spaces' 64-row tiles make
# hundreds of interpreter steps per launch), one of them split; the selection logic is the same.
FAST_SPACE = (Config(256, 128, 128, 4, 1), Config(128, 64, 64, 4, 1), Config(128, 64, 64, 4, 1, SPLIT_K=2))


@pytest.fixture
def fast_space(monkeypatch):
    """What tuning measures per layer: FAST_SPACE under the interpreter, the real candidates on a GPU."""
    import fastres.schedule as schedule

    if DEVICE.type == "cpu":
        monkeypatch.setattr(schedule, "tuning_candidates", lambda space, dtype, **geometry: FAST_SPACE)
        return lambda space, dtype, **geometry: FAST_SPACE
    return tuning_candidates


def layer_candidates(candidates, key: str, batch: int, sms: int) -> tuple[Config, ...]:
    """What `candidates` (tuning_candidates or a stand-in) gives for the float32 conv of cache
    key `key` at `batch`, planned for `sms` SMs."""
    space = key.split("|")[3]
    k, stride, pad, cin, cout, h, w, residual = (int(g) for g in key.split("|")[4].split("x"))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    flat, kk, _ = reduction(cin, k, k)
    return tuple(candidates(space, torch.float32, M=batch * oh * ow, N=cout, K=kk, taps=1 if flat else k * k,
                            residual=bool(residual), sms=sms))


def test_tuning_measures_the_candidates_for_the_devices_sm_count(tmp_path, monkeypatch):
    """On a GPU with fewer SMs than the 132 planned for without one (an H100 PCIe: 114) the
    split candidates differ; the engine measures those for its own device's count."""
    seen = {}

    class Recording(Tuner):
        def choose(self, key, run, candidates, default, dtype):
            seen[key] = tuple(candidates)
            return default  # nothing measured: the layer runs its default config

    real = DeviceInfo.of(DEVICE)
    monkeypatch.setattr(DeviceInfo, "of", classmethod(lambda cls, device: dataclasses.replace(real, sms=114)))
    fast = fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float32, device=DEVICE,
                                    tune=Recording(TuningCache(tmp_path / "t.json")))
    fast(torch.randn(2, 3, 12, 12, device=DEVICE))
    assert fast.device_info().sms == 114 and len(seen) >= 8
    for key, cands in seen.items():
        assert cands == layer_candidates(tuning_candidates, key, 2, 114), key
    # At this input the SM count changes what is measured (layer4's 3x3s: 8 tiles, split 15
    # ways on 114 SMs, 17 on 132).
    assert any(cands != layer_candidates(tuning_candidates, key, 2, 132) for key, cands in seen.items())


def test_tuned_engine_is_correct_and_remembers(tmp_path, fast_space):
    model = calibrated("resnet18")
    x = torch.randn(2, 3, 12, 12)
    ref = reference(model, x)
    tuner, calls = make_tuner(tmp_path / "tuning.json")
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE, tune=tuner)
    assert_close(fast(x.to(DEVICE)), ref, 1e-4)
    entries = json.loads((tmp_path / "tuning.json").read_text())
    # One entry per distinct conv geometry of resnet18 at this input (repeats hit the cache).
    assert tuner.tuned == len(entries) >= 8
    # The fake timer prefers the smallest tile per split: that is what was stored (on the CPU
    # the split one, so the tuned engine runs split-K layers out of its workspace). The splits
    # among the candidates follow the SM count the engine planned for (114 on an H100 PCIe).
    sms = fast.device_info().sms
    assert sms == DeviceInfo.of(DEVICE).sms
    for key, entry in entries.items():
        cands = layer_candidates(fast_space, key, 2, sms)
        best = min(cands, key=lambda c: c.BLOCK_M * c.BLOCK_N * c.BLOCK_K / c.SPLIT_K)
        assert Config(**entry["config"]) == best, key
    assert calls
    if DEVICE.type == "cpu":
        (arena,) = fast._arenas.values()
        assert arena.workspace is not None

    # A second start with the same cache measures nothing and gives the same logits.
    again, calls2 = make_tuner(tmp_path / "tuning.json")
    fast2 = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE, tune=again)
    torch.testing.assert_close(fast2(x.to(DEVICE)), fast(x.to(DEVICE)), rtol=0, atol=0)
    assert again.tuned == 0 and not calls2

    # Batches share results within a power-of-two bucket (the bucket is part of the key).
    assert batch_bucket(2) == 2 and batch_bucket(3) == batch_bucket(4) == 4 and batch_bucket(5) == 8
    assert all(k.endswith("|b2") for k in entries)


def test_cache_key_names_everything_that_matters():
    import triton

    key = cache_key("NVIDIA H100 80GB HBM3", torch.float16, "conv", (3, 1, 1, 64, 64, 56, 56), 24)
    assert key == f"NVIDIA H100 80GB HBM3|triton-{triton.__version__}|float16|conv|3x1x1x64x64x56x56|b32"


def test_disagreeing_config_is_rejected(tmp_path):
    good, bad = Config(64, 64, 32), Config(64, 64, 16)
    ref = torch.randn(8, 8)

    def run(cfg):
        return ref.clone() if cfg == good else ref + 1.0  # `bad` computes something else

    tuner = Tuner(TuningCache(tmp_path / "t.json"), timer=lambda fn: 1.0 if fn else 0.0)
    with pytest.warns(UserWarning, match="disagrees"):
        chosen = tuner.choose("k", run, [bad, good], good, torch.float32)
    assert chosen == good


def test_unreadable_cache_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "tuning.json"
    path.write_text("{not json")
    cache = TuningCache(path)
    with pytest.warns(UserWarning, match="unreadable tuning cache"):
        assert cache.get("anything") is None
    with pytest.warns(UserWarning, match="unreadable tuning cache"):  # put re-reads it, then replaces it
        cache.put("k", Config(64, 64, 32), 1.5)
    assert TuningCache(path).get("k") == Config(64, 64, 32)


def _put_entries(path: str, worker: int, count: int, barrier) -> None:
    """One writer process of test_concurrent_writers_keep_every_entry: its own cache object,
    started with the others."""
    cache = TuningCache(path)
    barrier.wait()
    for i in range(count):
        cache.put(f"w{worker}-{i}", Config(64, 64, 32, SPLIT_K=worker + 1), float(i))


def test_concurrent_writers_keep_every_entry(tmp_path):
    """Processes putting into one cache file at the same time lose none of each other's entries,
    and leave no temporary file behind."""
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    path, workers, count = tmp_path / "tuning.json", 4, 25
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_put_entries, args=(str(path), w, count, barrier)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * workers
    cache = TuningCache(path)
    assert len(cache) == workers * count
    for w in range(workers):
        for i in range(count):
            assert cache.get(f"w{w}-{i}") == Config(64, 64, 32, SPLIT_K=w + 1), (w, i)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuning.json", "tuning.json.lock"]


class _FakeMsvcrt:
    """msvcrt.locking as on Windows: LK_LOCK fails with EDEADLOCK while the lock stays busy."""

    LK_LOCK, LK_UNLCK = 1, 0

    def __init__(self, busy: int):
        self.busy, self.calls = busy, []

    def locking(self, fd, mode, nbytes):
        self.calls.append(mode)
        if mode == self.LK_LOCK and self.busy:
            self.busy -= 1
            raise OSError(errno.EDEADLOCK, "Resource deadlock avoided")


@pytest.mark.parametrize("lock", ["msvcrt", "none"])
def test_put_merges_what_another_writer_added(tmp_path, monkeypatch, lock):
    """Without fcntl (Windows: msvcrt's lock; elsewhere none) a put still re-reads the file, so
    an entry written by another cache after this one first read the file survives."""
    import fastres.tuning as tuning

    fake = _FakeMsvcrt(busy=2)
    monkeypatch.setattr(tuning, "fcntl", None)
    monkeypatch.setattr(tuning, "msvcrt", fake if lock == "msvcrt" else None)
    mine, theirs = TuningCache(tmp_path / "t.json"), TuningCache(tmp_path / "t.json")
    assert mine.get("theirs") is None  # read the (missing) file before the other writer
    theirs.put("theirs", Config(64, 64, 16), 2.0)
    mine.put("mine", Config(64, 64, 32), 1.0)
    again = TuningCache(tmp_path / "t.json")
    assert again.get("theirs") == Config(64, 64, 16) and again.get("mine") == Config(64, 64, 32)
    assert mine.get("theirs") == Config(64, 64, 16)  # this cache sees the merged file too
    if lock == "msvcrt":  # each put locks (retrying while busy) and unlocks
        assert fake.calls == [fake.LK_LOCK] * 3 + [fake.LK_UNLCK] + [fake.LK_LOCK, fake.LK_UNLCK]


def test_tune_true_needs_a_gpu():
    if DEVICE.type == "cuda":
        pytest.skip("on a GPU tune=True measures")
    with pytest.raises(ValueError, match="GPU"):
        fastres.from_torchvision(calibrated("resnet18"), dtype=torch.float32, device=DEVICE, tune=True)


def test_cached_choice_follows_the_split_of_this_batch(tmp_path):
    """Batches 3 and 4 share a bucket, but the heuristic splits a layer 6 ways at one and 5
    at the other: the cached tile is matched split-or-not, not by its exact split count."""
    tile = Config(64, 64, 64, 4, 4)
    cache = TuningCache(tmp_path / "t.json")
    cache.put("k", dataclasses.replace(tile, SPLIT_K=6), 0.1)
    tuner = Tuner(cache, timer=lambda fn: pytest.fail("a cached layer is not measured"))
    here = [tile, dataclasses.replace(tile, SPLIT_K=5), Config(128, 64, 64, 4, 4)]
    assert tuner.cached("k", here) == dataclasses.replace(tile, SPLIT_K=5)
    assert tuner.choose("k", lambda cfg: pytest.fail("not run"), here, tile, torch.float16) == here[1]
    assert tuner.cached("k", [tile, Config(128, 64, 64, 4, 4)]) is None  # no split candidate now: re-tune
    cache.put("j", tile, 0.1)
    assert tuner.cached("j", here) == tile
    assert tuner.cached("missing", here) is None


@pytest.mark.skipif(DEVICE.type != "cuda", reason="times CUDA graph replays")
def test_cuda_timer_replays_a_graph():
    from fastres.tuning import cuda_timer

    x = torch.zeros(1 << 16, device=DEVICE)
    ms = cuda_timer(lambda: x.add_(1.0))
    assert 0 < ms < 1
    torch.cuda.synchronize()
    assert x[0].item() >= 4 + 10  # warm-up calls, then at least one call per timed replay


def test_tuning_picks_a_bordered_conv_and_the_arena_is_laid_out_again(tmp_path, monkeypatch):
    """Where the tuner picks the bordered conv for a stride-1 3x3 (measured on a zero-bordered
    stand-in of its input, staged before timing), the arena's slots are laid out again with
    that input bordered; the tuned forward is still right and its borders still zero."""
    import fastres.schedule as schedule

    if DEVICE.type == "cuda" and torch.cuda.get_device_capability(DEVICE)[0] != 9:
        pytest.skip("the bordered conv is Hopper's (TMA)")
    bordered = Config(64, 64, 64, 4, 1, variant="tma_b")
    # (offered to layer1's 3x3s, one geometry: the interpreter measures it once)
    monkeypatch.setattr(schedule, "tuning_candidates", lambda space, dtype, **geometry: FAST_SPACE[:1] + (
        (bordered,) if geometry.get("bordered") is not None and geometry["K"] == 64 else ()))
    tuner, _ = make_tuner(tmp_path / "tuning.json", cost=lambda cfg: 0 if cfg.bordered else 1)
    model = calibrated("resnet18")
    x = torch.randn(2, 3, 12, 12)
    fast = fastres.from_torchvision(model, dtype=torch.float32, device=DEVICE, tune=tuner)
    assert_close(fast(x.to(DEVICE)), reference(model, x), 1e-4)
    (arena,) = fast._arenas.values()
    chosen = [st.layer for st in arena.schedule.steps if st.config.bordered]
    assert chosen == [f"layer1.{b}.conv{c}" for b in (0, 1) for c in (1, 2)]
    chosen = [st for st in arena.schedule.steps if st.config.bordered]
    slots = [i for i, b in enumerate(arena.schedule.borders) if b is not None]
    assert slots and {st.src for st in chosen} <= set(slots)
    for i in slots:
        full = arena.bordered_view(i)
        inner = torch.zeros(full.shape, dtype=torch.bool, device=full.device)
        inner[:, :, 1:-1, 1:-1] = True
        assert not full[~inner].any(), f"slot {i}: a border was written"
