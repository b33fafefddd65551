"""``fastres bench preprocess``: decode + resize + center crop alone, per CPU core (torch
threads = 1, one image at a time), on generated photos at three sizes: 500x375 (ImageNet),
1920x1080 (a video frame), 4032x3024 (a 12 MP phone photo), JPEG quality 90, with realistic
content (gradients, sensor noise, edges: `photo_like_jpeg`).

Systems:
- ``exact``: ``fastres.preprocess(mode="exact")`` (torchvision's pixels bit for bit);
- ``fast``: ``fastres.preprocess(mode="fast")`` (scaled DCT decode, uint8 resize);
- ``torchvision``: ``decode_image`` + torchvision's preset resize and crop (``F.resize``,
  ``F.center_crop``), the uint8 part of ``weights.transforms()``: what fastres did before;
- ``pil``: the classic pipeline: ``Image.open().convert("RGB")``, ``Resize`` and
  ``CenterCrop`` on the PIL image, ``PILToTensor``;
- ``nvjpeg`` (CUDA only): ``decode_jpeg(device="cuda")`` on a batch of the photos, then the
  same resize and crop on the GPU, in images/s of the GPU (not per core).

The CPU systems' timed passes alternate (system after system, photo after photo), so that
other work on a shared machine weighs on each alike. Each record carries images/s per core
(``images_per_s``, from the median pass;
``best_images_per_s`` from the fastest, the closer to an idle core where the machine is
shared; for nvjpeg, of the GPU), and for exact and fast the decode and resize+crop split
(each its fastest pass). ``fast`` records
also carry its deviation from exact: max and mean absolute pixel difference, and the relative
L2 difference of ResNet-50's logits (random calibrated weights, float32, on the CPU).
"""
from __future__ import annotations

import io
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import torch

from ..errors import first_line
from .pipeline import photo_like_jpeg
from .results import add_record, base_record

PREPROCESS_SYSTEMS = ("exact", "fast", "torchvision", "pil", "nvjpeg")
PHOTO_SIZES = ((500, 375), (1920, 1080), (4032, 3024))
SMOKE_PHOTO_SIZES = ((120, 90), (400, 300))
PHOTOS = 4  # distinct photos per size (each timed `reps` times)


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_note() -> str:
    """What the per-core figures were measured under: the core count and the load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    return (f"{cpu_name()}, {cores} cores usable; load average {load} when the run started "
            f"(other work on the machine slows these per-core figures)")


def _interleaved(fns: dict[str, Callable[[int], object]], n: int, reps: int) -> dict[str, tuple[float, float]]:
    """name -> (median, best) ms per photo over `reps` passes of each fn over photos 0..n-1,
    after one warm-up pass. The passes alternate between the fns, so that load from other work
    on the machine falls on every system alike; the best pass is the closer to an idle core."""
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for i in range(n):
            fn(i)
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            for i in range(n):
                fn(i)
            runs[k].append((time.perf_counter() - t) / n * 1e3)
    return {k: (statistics.median(v), min(v)) for k, v in runs.items()}


def _torchvision_fn(resize: int, crop: int) -> Callable[[bytes], torch.Tensor]:
    import torchvision.transforms.functional as F
    from torchvision.io import ImageReadMode, decode_image

    def run(data: bytes) -> torch.Tensor:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return F.center_crop(F.resize(img, [resize], antialias=True), [crop])
    return run


def _pil_fn(resize: int, crop: int) -> Callable[[bytes], torch.Tensor]:
    from PIL import Image
    from torchvision import transforms as T

    pipeline = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.PILToTensor()])

    def run(data: bytes) -> torch.Tensor:
        with Image.open(io.BytesIO(data)) as im:
            return pipeline(im.convert("RGB"))
    return run


def _deviation(photos: Sequence[bytes], resize: int, crop: int, model: torch.nn.Module | None) -> dict:
    """fast against exact on `photos`: pixel differences, and the logits' relative L2 difference."""
    from ..engine import IMAGENET_MEAN, IMAGENET_STD
    from ..predict.preprocess import preprocess

    exact = torch.stack([preprocess(p, resize=resize, crop=crop) for p in photos])
    fast = torch.stack([preprocess(p, resize=resize, crop=crop, mode="fast") for p in photos])
    diff = (fast.int() - exact.int()).abs().float()
    out = {"max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.mean()),
           "differing_fraction": float((diff > 0).float().mean())}
    if model is not None:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            a = model((exact.float() / 255 - mean) / std)
            b = model((fast.float() / 255 - mean) / std)
        out["logits_rel_diff"] = float((b - a).norm() / a.norm())
    return out


def _nvjpeg(rec: dict, photos: Sequence[bytes], resize: int, crop: int, reps: int) -> None:
    import torchvision.transforms.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    datas = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in photos]

    def run() -> None:
        imgs = decode_jpeg(datas, mode=ImageReadMode.RGB, device="cuda")
        for img in imgs:
            F.center_crop(F.resize(img, [resize], antialias=True), [crop])

    run()
    torch.cuda.synchronize()
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - t) / len(photos) * 1e3)
    ms = statistics.median(runs)
    rec.update(median_ms=ms, images_per_s=1e3 / ms, per="GPU", batch=len(photos),
               timing_note=f"a batch of {len(photos)} decoded by nvjpeg, resized one by one on the GPU; per image")


def run_preprocess(results: dict, log: Callable[[str], None], save: Callable[[], None], *, resize: int, crop: int,
                   systems: Sequence[str], sizes: Sequence[tuple[int, int]], photos: int, reps: int,
                   logits: bool) -> None:
    """Every (photo size, system) record into `results`, saved after each."""
    from ..predict.preprocess import decode_input, preprocess

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = None
        if logits and "fast" in systems:
            from .systems import build_model

            model = build_model("resnet50", torch.device("cpu"), calib_size=64)
        for w, h in sizes:
            datas = [photo_like_jpeg(w, h, seed=100 + i) for i in range(photos)]
            kb = sum(map(len, datas)) / len(datas) / 1024
            name = f"{w}x{h}"
            log(f"preprocess {name}: {photos} generated JPEGs of {kb:.0f} KB on average; resize {resize}, crop {crop}")
            fns: dict[str, Callable[[int], object]] = {}
            for system in systems:
                if system in ("exact", "fast"):
                    decoded = [decode_input(d, resize, system, None) for d in datas]
                    fns[system] = lambda i, m=system: preprocess(datas[i], resize=resize, crop=crop, mode=m)
                    fns[f"{system}:decode"] = lambda i, m=system: decode_input(datas[i], resize, m, None)
                    fns[f"{system}:resize"] = lambda i, m=system, dec=decoded: _resize(dec[i], resize, crop, m)
                elif system in ("torchvision", "pil"):
                    fn = _torchvision_fn(resize, crop) if system == "torchvision" else _pil_fn(resize, crop)
                    fns[system] = lambda i, fn=fn: fn(datas[i])
            try:
                timed, failure = _interleaved(fns, len(datas), reps), None
            except Exception as exc:  # noqa: BLE001 - recorded on each CPU point, the run goes on
                timed, failure = {}, first_line(exc)
            for system in systems:
                rec = base_record("preprocess", name, 1, "uint8", system, crop)
                rec.update(resize=resize, photo_kb=round(kb, 1), per="core")
                add_record(results, rec)
                try:
                    if system == "nvjpeg":
                        if not torch.cuda.is_available():
                            rec.update(status="skipped", reason="nvjpeg needs CUDA")
                        else:
                            _nvjpeg(rec, datas, resize, crop, reps)
                    elif failure is not None:
                        rec.update(status="error", reason=failure)
                    else:
                        ms, best = timed[system]
                        rec.update(median_ms=ms, best_ms=best, images_per_s=1e3 / ms, best_images_per_s=1e3 / best)
                        if system in ("exact", "fast"):
                            rec.update(decode_ms=timed[f"{system}:decode"][1], resize_crop_ms=timed[f"{system}:resize"][1])
                        if system == "fast":
                            rec["deviation"] = _deviation(datas, resize, crop, model)
                except Exception as exc:  # noqa: BLE001 - one failing point must not end the run
                    rec.update(status="error", reason=first_line(exc))
                log(_line(rec))
                save()
    finally:
        torch.set_num_threads(threads)


def _resize(decoded: tuple[torch.Tensor, tuple[int, int]], resize: int, crop: int, mode: str) -> torch.Tensor:
    from ..predict.preprocess import resize_crop

    img, size = decoded
    return resize_crop(img, resize, crop, mode=mode, size=size)


def _line(rec: dict) -> str:
    head = f"preprocess {rec['model']:10s} {rec['system']:12s}"
    if rec.get("status") != "ok":
        return f"{head} {rec.get('status', '?').upper()}: {rec.get('reason')}"
    text = f"{head} {rec['images_per_s']:8.1f} img/s/{rec.get('per', 'core')} ({rec['median_ms']:.2f} ms"
    if "best_ms" in rec:
        text += f", best {rec['best_ms']:.2f}"
    if "decode_ms" in rec:
        text += f": decode {rec['decode_ms']:.2f}, resize+crop {rec['resize_crop_ms']:.2f}"
    text += ")"
    dev = rec.get("deviation")
    if dev:
        text += f"; vs exact: max {dev['max_abs_diff']}, mean {dev['mean_abs_diff']:.3f}"
        if "logits_rel_diff" in dev:
            text += f", logits rel {dev['logits_rel_diff']:.2e}"
    return text


def markdown_preprocess_table(results: dict) -> str:
    """Per photo size and system: images/s per core, ms per image (decode / resize+crop), and
    fast's deviation from exact."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "preprocess"]
    if not recs:
        return ""
    order = {s: i for i, s in enumerate(PREPROCESS_SYSTEMS)}
    out = ["| photo | system | img/s (median) | img/s (best) | ms / image | decode / resize+crop ms (best) "
           "| fast vs exact: max / mean px, logits rel |",
           "|---|---|---:|---:|---:|---|---|"]
    for r in sorted(recs, key=lambda r: (int(r["model"].split("x")[0]), order.get(r["system"], 99))):
        if r.get("status") != "ok":
            out.append(f"| {r['model']} | {r['system']} | {r.get('status')}: {r.get('reason', '')} | | | | |")
            continue
        split = f"{r['decode_ms']:.2f} / {r['resize_crop_ms']:.2f}" if "decode_ms" in r else "-"
        dev = r.get("deviation") or {}
        devs = (f"{dev['max_abs_diff']} / {dev['mean_abs_diff']:.3f}"
                + (f", {dev['logits_rel_diff']:.1e}" if "logits_rel_diff" in dev else "")) if dev else "-"
        per = "/GPU" if r.get("per") == "GPU" else "/core"
        best = f"{r['best_images_per_s']:.1f}{per}" if r.get("best_images_per_s") else "-"
        out.append(f"| {r['model']} | {r['system']} | {r['images_per_s']:.1f}{per} | {best} | {r['median_ms']:.2f} "
                   f"| {split} | {devs} |")
    return "\n".join(out) + "\n"


__all__ = ["PHOTO_SIZES", "PREPROCESS_SYSTEMS", "host_note", "markdown_preprocess_table", "run_preprocess"]
