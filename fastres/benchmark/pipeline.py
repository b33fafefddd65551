"""The predict part of a bench run (``fastres bench predict``): the whole input pipeline,
``fastres.Predictor`` over generated JPEGs of ImageNet size (read, decode, resize, crop,
batch, copy, forward, top-5), in images/s with each stage's share, beside the engine alone on
a batch already on the device (the ceiling the pipeline should reach).

Systems: ``engine-only`` (``forward_pixels`` on a resident uint8 batch, CUDA-graphed),
``predict-cpu`` (the CPU decode pool, one worker per core) and ``predict-nvjpeg`` (JPEGs
decoded by nvjpeg, CUDA only). Each pipeline point is run once over one batch to build and
capture (the engine is shared, so its kernels and graph are), then timed over every image
`reps` times; its record keeps the median run's stage seconds.
"""
from __future__ import annotations

import io
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from ..errors import first_line
from .names import DTYPES
from .results import add_record, base_record, timed_record
from .run import Run, budget_note, free_memory
from .systems import build_model
from .timing import measure, sync

PREDICT_SYSTEMS = ("engine-only", "predict-cpu", "predict-nvjpeg")
# ImageNet validation images are mostly 500x375 or 375x500 (JPEG quality ~90, ~110 KB).
IMAGENET_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500), (640, 480))
SMOKE_SIZES = ((80, 60), (60, 80))


def photo_like_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A JPEG that compresses and decodes like a photo: smooth gradients, shapes, sensor noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([
        127 + 100 * np.sin(xx / r.uniform(20, 80) + r.uniform(0, 6)),
        127 + 100 * np.cos(yy / r.uniform(20, 80) + r.uniform(0, 6)),
        127 + 100 * np.sin((xx + yy) / r.uniform(30, 90)),
    ], -1)
    img = Image.fromarray(np.clip(base + r.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(r.integers(0, width)), int(r.integers(0, height))
        box = (x0, y0, x0 + int(r.integers(10, width // 2)), y0 + int(r.integers(10, height // 2)))
        draw.ellipse(box, fill=tuple(int(v) for v in r.integers(0, 256, 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def generate_jpegs(folder: Path, count: int, sizes: Sequence[tuple[int, int]] = IMAGENET_SIZES,
                   distinct: int = 256) -> list[Path]:
    """`count` image paths over at most `distinct` generated files (repeats read the same file)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = min(count, distinct)

    def write(i: int) -> Path:
        w, h = sizes[i % len(sizes)]
        path = folder / f"img{i:04d}.jpg"
        path.write_bytes(photo_like_jpeg(w, h, seed=i))
        return path

    with ThreadPoolExecutor() as pool:
        files = list(pool.map(write, range(n)))
    return [files[i % n] for i in range(count)]


def run_predict(run: Run, models: Sequence[str], batches: Sequence[int], dtypes: Sequence[str], size: int,
                count: int, systems: Sequence[str] = PREDICT_SYSTEMS, reps: int = 3) -> None:
    """Pipeline images/s at every (model, dtype, batch): the engine alone, then each pipeline."""
    import fastres
    from ..predict.images import resize_for_crop

    device = run.device
    resize = resize_for_crop(size)
    with tempfile.TemporaryDirectory(prefix="fastres-predict-bench-") as tmp:
        t = time.perf_counter()
        files = generate_jpegs(Path(tmp), count, SMOKE_SIZES if run.smoke else IMAGENET_SIZES)
        kb = sum(p.stat().st_size for p in set(files)) / len(set(files)) / 1024
        run.log(f"predict: {len(files)} JPEGs ({len(set(files))} distinct, {kb:.0f} KB each on average) "
                f"generated in {time.perf_counter() - t:.1f} s; resize {resize}, crop {size}")
        for model_name in models:
            if run.budget.spent():
                return budget_note(run, "predict", f"predict {model_name}")
            model32 = build_model(model_name, device, calib_size=min(size, 64))
            for dtype_name in dtypes:
                engine = fastres.from_torchvision(model32, dtype=DTYPES[dtype_name], cuda_graph=device.type == "cuda")
                for batch in batches:
                    if run.budget.spent():
                        return budget_note(run, "predict", f"predict {model_name} {dtype_name} batch {batch}")
                    point = dict(model=model_name, dtype=dtype_name, batch=batch, size=size)
                    for system in systems:
                        rec = base_record("predict", model_name, batch, dtype_name, system, size)
                        add_record(run.results, rec)
                        try:
                            if system == "engine-only":
                                _engine_only(run, rec, engine, batch, size)
                            elif system == "predict-nvjpeg" and device.type != "cuda":
                                rec.update(status="skipped", reason="nvjpeg needs CUDA" + (" (smoke runs on the CPU)"
                                                                                             if run.smoke else ""))
                            else:
                                _pipeline(run, rec, engine, files, batch, resize, size, system, reps)
                        except Exception as exc:  # one failing point must not end the run
                            rec.update(status="error", reason=first_line(exc))
                        run.log(_line(point, system, rec))
                        run.save()
                    _ceiling_share(run.results, point)
                del engine
                free_memory(device)
            del model32
            free_memory(device)


def _engine_only(run: Run, rec: dict, engine, batch: int, size: int) -> None:
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=run.device)
    with torch.inference_mode():
        stats = measure(lambda i: engine.forward_pixels(x), 1, device=run.device, options=run.timing)
    timed_record(rec, stats, batch)


def _pipeline(run: Run, rec: dict, engine, files: list[Path], batch: int, resize: int, size: int, system: str,
              reps: int) -> None:
    import fastres

    decode = "cuda" if system == "predict-nvjpeg" else "cpu"
    pred = fastres.Predictor(engine, batch_size=batch, resize=resize, crop=size, decode=decode, topk=5)
    t = time.perf_counter()
    if not run.smoke:  # (the smoke's engine-only point built the shape already)
        list(pred.predict_paths(files[:batch]))  # builds and captures this batch shape
    first_s = time.perf_counter() - t
    runs = []
    for _ in range(1 if run.smoke else reps):
        sync(run.device)
        t = time.perf_counter()
        results = list(pred.predict_paths(files))
        wall = time.perf_counter() - t
        failed = [r for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(results)} images failed, e.g. {failed[0].path}: {failed[0].error}")
        runs.append((wall, pred.stats))
    wall, st = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    n_batches = -(-len(files) // batch)
    busy = st.decode + st.preprocess + st.model
    rec.update(
        images=len(files), workers=st.workers, gpu_decoded=st.gpu_decoded, first_call_s=round(first_s, 3),
        wall_s=wall, median_ms=wall / n_batches * 1e3, images_per_s=len(files) / wall,
        runs_images_per_s=[len(files) / w for w, _ in runs],
        stage_s={"decode": st.decode, "preprocess": st.preprocess, "model": st.model, "waited": st.waited},
        stage_share={k: (v / busy if busy > 0 else None) for k, v in
                     (("decode", st.decode), ("preprocess", st.preprocess), ("model", st.model))},
        timing_note="median_ms: the run's wall time per batch (median of the runs by wall time)",
    )


def _ceiling_share(results: dict, point: dict) -> None:
    """Each pipeline record of a point gets the fraction of the engine-only images/s it reaches."""
    recs = [r for r in results["records"] if r.get("kind") == "predict"
            and all(r.get(k) == v for k, v in point.items())]
    ceiling = next((r for r in recs if r["system"] == "engine-only" and r.get("status") == "ok"), None)
    for r in recs:
        if ceiling and r["system"] != "engine-only" and r.get("status") == "ok" and ceiling.get("images_per_s"):
            r["of_engine_only"] = r["images_per_s"] / ceiling["images_per_s"]


def _line(point: dict, system: str, rec: dict) -> str:
    head = f"predict {point['model']:9s} {point['dtype']:8s} b{point['batch']:<4d} {system:15s}"
    if rec.get("status") != "ok":
        return f"{head} {rec.get('status', '?').upper()}: {rec.get('reason')}"
    text = f"{head} {rec['images_per_s']:10.1f} img/s"
    share = rec.get("stage_share")
    if share:
        text += " (" + ", ".join(f"{k} {100 * v:.0f}%" for k, v in share.items() if v is not None) + ")"
    return text
