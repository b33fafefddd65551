"""``fastres bench``: the options, their defaults and checks, and the order of a run (the
per-layer part, then end to end, then the report). ``--smoke`` runs the same code through
triton's CPU interpreter on tiny shapes, in a child interpreter where triton was already
loaded without it: its numbers are labelled as not performance figures."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from ..errors import UserError
from .e2e import checked_forward, run_e2e
from .environment import bench_date, environment
from .layers import run_layers
from .pipeline import PREDICT_SYSTEMS, run_predict
from .preprocess import (PHOTOS, PHOTO_SIZES, PREPROCESS_SYSTEMS, SMOKE_PHOTO_SIZES, cpu_name, host_note,
                         markdown_preprocess_table, run_preprocess)
from .names import (ALL_E2E_SYSTEMS, CLASSIFIER_MODELS, E2E_MODELS, E2E_SYSTEMS, EIGHT_BIT, LAYER_SYSTEMS,
                    MAX_AUTOTUNE_SYSTEM, SMOKE_LABEL)
from .report import render_markdown, summary_text, write_report
from .results import load_results, open_results, results_path, save_results, validate_results
from .run import Run, budget_note
from .systems import FASTRES_OPTIONS
from .timing import SMOKE_TIMING, Budget, TimingOptions
from .variants import FAMILIES as VARIANT_FAMILIES

ACTIONS = ("all", "e2e", "layers", "predict", "preprocess", "report", "summary", "forward")

E2E_BATCHES = (1, 8, 32, 64, 128, 256)
LAYER_MODELS = ("resnet50", "resnet18")
LAYER_BATCHES = (1, 32, 256)
PREDICT_MODELS = ("resnet50",)
PREDICT_BATCHES = (64, 256)
PREDICT_IMAGES = 1024
FLOAT_GPU_DTYPES = ("float16", "bfloat16")
# e2e and layers: the float dtypes, then fastres' 8-bit kernels (cuDNN's rows of these are its
# float16 ones: fastres.benchmark.quantized); predict and forward take the float dtypes only.
GPU_DTYPES = FLOAT_GPU_DTYPES + EIGHT_BIT

# The smoke run: the interpreter needs ~6 s for one resnet18 forward at 32x32 on a CI core, so
# the end-to-end part is one point (batch 2, float16: the check call, then one timed call) and
# the per-layer part four varied convs at batch 1 in float32 and float16, and one of them (with
# a residual) in int8.
SMOKE = dict(models=("resnet18",), e2e_batches=(2,), e2e_dtypes=("float16",), layer_batches=(1,),
             layer_dtypes=("float32", "float16", "int8"), size=32, max_layers=4, eight_bit_layers=1,
             predict_images=4)

_DTYPE_ALIASES = {
    "fp16": "float16", "half": "float16", "f16": "float16", "float16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float": "float32", "f32": "float32", "float32": "float32",
    "int8": "int8", "i8": "int8",
    "fp8": "float8_e4m3fn", "e4m3": "float8_e4m3fn", "float8_e4m3fn": "float8_e4m3fn",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """The actions and options of `fastres bench`."""
    parser.description = (
        "Benchmark fastres against cuDNN: 'e2e' (whole networks), 'layers' (every distinct conv), "
        "'all' (both, the default), 'predict' (the image pipeline of fastres predict on generated JPEGs: "
        "images/s and the share of decode, preprocess and model), "
        "'preprocess' (decode + resize + crop alone, per CPU core, on generated photos of 500x375, 1920x1080 "
        "and 4032x3024: fastres.preprocess exact and fast, torchvision's preset, the PIL pipeline, and nvjpeg "
        "where there is a GPU; needs no GPU), "
        "'report RESULTS.json' (markdown + plot from a results file), "
        "'summary RESULTS.json' (a short text overview), "
        "'forward' (one checked forward without CUDA graphs, e.g. under compute-sanitizer); "
        "'fastres bench mlperf --help': MLPerf's LoadGen around the engine (its own options). "
        "--smoke runs the harness through triton's CPU interpreter on tiny shapes (not a performance figure)."
    )
    parser.add_argument("action", nargs="?", default="all", choices=ACTIONS, help="what to run (default: all)")
    parser.add_argument("results", nargs="?", default=None, help="for 'report' and 'summary': the results JSON file")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes through the interpreter on the CPU; labelled, never a performance figure")
    parser.add_argument("--out", default=None, help="folder for the results file, its .md and .png (default bench/results; smoke: a temporary folder)")
    parser.add_argument("--models", default=None, help=f"comma list (e2e default {','.join(E2E_MODELS)}; layers default {','.join(LAYER_MODELS)})")
    parser.add_argument("--batches", default=None, help=f"comma list (e2e default {','.join(map(str, E2E_BATCHES))}; layers default {','.join(map(str, LAYER_BATCHES))})")
    parser.add_argument("--dtypes", default=None,
                        help="comma list of float16, bfloat16, float32, int8, float8_e4m3fn (fp8) (default: "
                             f"{','.join(GPU_DTYPES)}; predict: {','.join(FLOAT_GPU_DTYPES)}); in 8 bits fastres "
                             "runs its quantized kernels (per layer) and fastres.quantize's engine (e2e), beside "
                             "the float16 records of cuDNN, which has no 8-bit conv in torch")
    parser.add_argument("--size", type=int, default=None, help="input height = width (default 224)")
    parser.add_argument("--systems", default=None, help=f"e2e systems, comma list of {','.join(ALL_E2E_SYSTEMS)} (default: the first four); "
                        f"predict: of {','.join(PREDICT_SYSTEMS)} (default: all); preprocess: of "
                             f"{','.join(PREPROCESS_SYSTEMS)} (default: all)")
    parser.add_argument("--images", type=int, default=None,
                        help=f"predict: images per timed run (default {PREDICT_IMAGES}; generated JPEGs of ImageNet size); "
                             f"preprocess: photos per size (default {PHOTOS})")
    parser.add_argument("--layer-systems", default=None, help=f"per-layer systems, comma list of {','.join(LAYER_SYSTEMS)} (default: all)")
    parser.add_argument("--tune", action="store_true",
                        help="fastres measures every conv's tile configs on its first forward (cached on disk)")
    parser.add_argument("--max-autotune", action="store_true", help="also time torch.compile(mode='max-autotune') (compiles for minutes)")
    parser.add_argument("--variants", nargs="?", const="all", default=None, metavar="FAMILIES",
                        help="layers: time each conv under the kernel variants the tuner could pick beside fastres' "
                             f"default: all of them, or a comma list of {','.join(VARIANT_FAMILIES)}")
    parser.add_argument("--variants-only", action="store_true",
                        help="layers: time only the --variants families, against the fastres records already in the "
                             "results file (a separate process after the baselines: a faulting kernel loses only this)")
    parser.add_argument("--max-layers", type=int, default=None, help="per model, at most this many distinct convs (the most varied first)")
    parser.add_argument("--warmup-ms", type=float, default=None, help="warm-up per measurement (default 25)")
    parser.add_argument("--rep-ms", type=float, default=None, help="timed repetitions fill this long (default 100)")
    parser.add_argument("--min-reps", type=int, default=None, help="at least this many timed repetitions (default 10; preprocess: passes, default 5)")
    parser.add_argument("--max-reps", type=int, default=None, help="at most this many timed repetitions (default 1000)")
    parser.add_argument("--budget-s", type=float, default=None, help="stop starting measurements after this many seconds (the file says so)")
    parser.add_argument("--no-plot", action="store_true", help="skip the matplotlib plot")
    parser.add_argument("--date", default=None,
                        help="YYYY-MM-DD naming the results file (default: today, UTC); one date for every "
                             "step of a run that may cross midnight")


def _csv(value: str | None, default: Sequence, what: str, convert=str) -> list:
    if value is None:
        return list(default)
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UserError(f"--{what} is empty")
    try:
        return [convert(v) for v in items]
    except ValueError as exc:
        raise UserError(f"--{what}: {exc}") from None


def _dtype_name(v: str) -> str:
    name = _DTYPE_ALIASES.get(v.lower())
    if name is None:
        raise ValueError(f"unknown dtype {v!r} (choose from float16, bfloat16, float32, int8, float8_e4m3fn)")
    return name


def _positive_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError(f"{v} is not a positive integer")
    return n


def _choice(choices: Sequence[str]):
    def check(v: str) -> str:
        if v not in choices:
            raise ValueError(f"unknown name {v!r} (choose from {', '.join(choices)})")
        return v
    return check


def _interpreter_child(args: argparse.Namespace) -> int:
    """Run the smoke in a fresh interpreter with TRITON_INTERPRET=1 set before triton loads."""
    payload = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None))) and not k.startswith("_")}
    env = dict(os.environ, TRITON_INTERPRET="1", FASTRES_BENCH_ARGS=json.dumps(payload))
    code = "import sys; from fastres.benchmark.cli import _child_main; sys.exit(_child_main())"
    return subprocess.run([sys.executable, "-c", code], env=env).returncode


def _child_main() -> int:
    args = argparse.Namespace(**json.loads(os.environ["FASTRES_BENCH_ARGS"]))
    try:
        return main(args)
    except UserError as exc:
        print(f"fastres bench: error: {exc}", file=sys.stderr)
        return 2



def check_date(date: str | None) -> None:
    """--date, when given, as the results' file names need it (a UserError otherwise)."""
    if date is not None:
        try:
            bench_date(date)
        except ValueError as exc:
            raise UserError(f"--date: {exc}") from None

def main(args: argparse.Namespace) -> int:
    """Run `fastres bench` with parsed `args`; returns the exit code."""
    from ..kernels import interpreting

    action = args.action
    if action in ("report", "summary"):
        if not args.results:
            raise UserError(f"'fastres bench {action}' needs the results JSON file: fastres bench {action} bench/results/CARD-DATE.json")
        path = Path(args.results)
        try:
            results = load_results(path)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc)) from None
        if action == "summary":
            print(summary_text(results), end="")
            return 0
        md, png = write_report(path, results, plot=not args.no_plot)
        print(render_markdown(results))
        print(f"wrote {md}" + (f" and {png}" if png else ""))
        return 0
    if args.results:
        raise UserError(f"unexpected argument {args.results!r} (only 'report' and 'summary' take a results file)")

    smoke = bool(args.smoke)
    if action == "preprocess":
        return _preprocess_main(args, smoke)
    e2e_models = _csv(args.models, SMOKE["models"] if smoke else E2E_MODELS, "models", _choice(E2E_MODELS))
    layer_models = _csv(args.models, SMOKE["models"] if smoke else LAYER_MODELS, "models", _choice(CLASSIFIER_MODELS))
    e2e_batches = _csv(args.batches, SMOKE["e2e_batches"] if smoke else E2E_BATCHES, "batches", _positive_int)
    layer_batches = _csv(args.batches, SMOKE["layer_batches"] if smoke else LAYER_BATCHES, "batches", _positive_int)
    floats_only = action in ("predict", "forward")
    e2e_dtypes = _csv(args.dtypes, SMOKE["e2e_dtypes"] if smoke else FLOAT_GPU_DTYPES if floats_only else GPU_DTYPES,
                      "dtypes", _dtype_name)
    if floats_only and set(e2e_dtypes) & set(EIGHT_BIT):
        raise UserError(f"'fastres bench {action}' runs float engines: for 8 bits, time 'fastres bench e2e --dtypes "
                        "int8,float8_e4m3fn'")
    layer_dtypes = _csv(args.dtypes, SMOKE["layer_dtypes"] if smoke else GPU_DTYPES, "dtypes", _dtype_name)
    if smoke and "bfloat16" in e2e_dtypes + layer_dtypes:
        raise UserError("bfloat16 is GPU only: triton's CPU interpreter computes bf16 dot products wrongly (triton issue 11584)")
    size = args.size or (SMOKE["size"] if smoke else 224)
    if size < 32:
        raise UserError(f"--size must be >= 32 (ResNets downsample by 32), got {size}")
    if action == "predict":
        predict_models = _csv(args.models, SMOKE["models"] if smoke else PREDICT_MODELS, "models", _choice(CLASSIFIER_MODELS))
        predict_batches = _csv(args.batches, SMOKE["e2e_batches"] if smoke else PREDICT_BATCHES, "batches", _positive_int)
        predict_systems = _csv(args.systems, PREDICT_SYSTEMS, "systems", _choice(PREDICT_SYSTEMS))
        images = args.images if args.images is not None else (SMOKE["predict_images"] if smoke else PREDICT_IMAGES)
        if images < 1:
            raise UserError(f"--images must be >= 1, got {images}")
    systems = _csv(args.systems if action != "predict" else None, E2E_SYSTEMS, "systems", _choice(ALL_E2E_SYSTEMS))
    if args.max_autotune and MAX_AUTOTUNE_SYSTEM not in systems:
        systems.append(MAX_AUTOTUNE_SYSTEM)
    layer_systems = _csv(args.layer_systems, LAYER_SYSTEMS, "layer-systems", _choice(LAYER_SYSTEMS))
    families = () if args.variants is None else tuple(
        VARIANT_FAMILIES if args.variants == "all" else _csv(args.variants, VARIANT_FAMILIES, "variants",
                                                             _choice(VARIANT_FAMILIES)))
    if args.variants_only and (not families or action != "layers"):
        raise UserError("--variants-only goes with 'fastres bench layers --variants [FAMILIES]'")
    max_layers = args.max_layers if args.max_layers is not None else (SMOKE["max_layers"] if smoke else None)
    base = SMOKE_TIMING if smoke else TimingOptions()
    timing = TimingOptions(
        warmup_ms=args.warmup_ms if args.warmup_ms is not None else base.warmup_ms,
        rep_ms=args.rep_ms if args.rep_ms is not None else base.rep_ms,
        min_warmup=base.min_warmup,
        min_reps=args.min_reps if args.min_reps is not None else base.min_reps,
        max_reps=args.max_reps if args.max_reps is not None else base.max_reps,
    )
    if timing.min_reps < 1 or timing.max_reps < timing.min_reps:
        raise UserError(f"need 1 <= --min-reps <= --max-reps, got {timing.min_reps} and {timing.max_reps}")
    check_date(args.date)

    # the options are valid: now the device (the smoke runs in a child with the interpreter on)
    if smoke and not interpreting():
        return _interpreter_child(args)
    if smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        raise UserError("no CUDA device: 'fastres bench' times GPUs; 'fastres bench --smoke' exercises the harness on the CPU")
    if interpreting() and not smoke:
        raise UserError("TRITON_INTERPRET is set: unset it to time real kernels, or pass --smoke")

    if action == "forward":  # no results file: a correctness probe (e.g. under compute-sanitizer)
        if smoke:
            print(SMOKE_LABEL, flush=True)
        ok = True
        for model_name in e2e_models:
            for dtype_name in e2e_dtypes:
                for batch in e2e_batches:
                    ok &= checked_forward(model_name, size, batch, dtype_name, device, log=lambda m: print(m, flush=True))
        return 0 if ok else 1

    if args.out:
        out_dir = Path(args.out)
    elif smoke:
        out_dir = Path(tempfile.mkdtemp(prefix="fastres-smoke-"))
    else:
        out_dir = Path("bench") / "results"
    FASTRES_OPTIONS["tune"] = bool(args.tune)
    env = environment(device, smoke=smoke, date=args.date)
    env["fastres_tuned"] = bool(args.tune) and device.type == "cuda"
    path = results_path(out_dir, env)
    results = open_results(path, env)
    results["timing"] = (
        f"median of >= {timing.min_reps} repetitions (each its own CUDA event pair) after >= {timing.warmup_ms:g} ms of warm-up; "
        f"inputs rotated over sets totalling > 2x L2 (else L2 flushed per repetition)" if device.type == "cuda"
        else f"host clock, {timing.min_reps} repetition(s) per point, CPU interpreter"
    )
    # a part run again replaces its note of an earlier run merged into this file
    if not isinstance(results.get("incomplete"), dict):
        results.pop("incomplete", None)
    parts = ("variants",) if args.variants_only else ("layers", "e2e") if action == "all" else (action,)
    for part in parts:
        (results.get("incomplete") or {}).pop(part, None)
    run = Run(device, smoke, path, results, timing, Budget(args.budget_s), log=lambda s: print(s, flush=True),
              variants=families, variants_only=args.variants_only)
    banner = f"{SMOKE_LABEL}\n" if smoke else ""
    print(f"{banner}fastres bench {action} on {env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; "
          f"results: {path}", flush=True)

    if action == "predict":
        run_predict(run, predict_models, predict_batches, e2e_dtypes, size, images, predict_systems)
    if action in ("all", "layers"):
        run_layers(run, layer_models, layer_batches, layer_dtypes, layer_systems, size, max_layers,
                   SMOKE["eight_bit_layers"] if smoke else None)
    if action in ("all", "e2e") and not run.budget.spent():
        run_e2e(run, e2e_models, e2e_batches, e2e_dtypes, systems, size)
    elif action in ("all", "e2e"):
        budget_note(run, "e2e", "the per-layer benchmark")
    run.save()
    problems = validate_results(results)
    if problems:
        print("results schema problems: " + "; ".join(problems[:5]), file=sys.stderr)
    md, png = write_report(path, results, plot=not args.no_plot)
    print()
    print(render_markdown(results))
    bad = [r for r in results["records"] if (r["system"] == "fastres" or r.get("kind") == "predict")
           and r.get("status") in ("wrong", "error")]
    print(f"wrote {path}, {md.name}" + (f", {png.name}" if png else "") + f" ({run.budget.elapsed():.0f} s)")
    if smoke:
        print(SMOKE_LABEL)
    if bad:
        print(f"fastres failed {len(bad)} check(s): " + "; ".join(
            f"{r['model']} {r.get('layer', '')} b{r['batch']} {r['dtype']}: {r.get('reason')}" for r in bad[:5]))
        return 1
    return 1 if problems else 0


def _preprocess_main(args: argparse.Namespace, smoke: bool) -> int:
    """`fastres bench preprocess`: on the CPU (one core), and nvjpeg where there is a GPU; no
    interpreter, no GPU needed. Its records join the day's results file of this machine's
    GPU, or a `cpu-DATE.json` without one."""
    from ..predict.images import resize_for_crop

    systems = _csv(args.systems, PREPROCESS_SYSTEMS, "systems", _choice(PREPROCESS_SYSTEMS))
    crop = args.size or (56 if smoke else 224)
    resize = resize_for_crop(crop)
    photos = args.images if args.images is not None else (1 if smoke else PHOTOS)
    if photos < 1:
        raise UserError(f"--images must be >= 1, got {photos}")
    reps = args.min_reps if args.min_reps is not None else (1 if smoke else 5)
    if reps < 1:
        raise UserError(f"--min-reps must be >= 1, got {reps}")
    check_date(args.date)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    env = environment(device, smoke=smoke, date=args.date)
    if device.type == "cpu":
        env.update(device=f"{cpu_name()} (CPU only)")
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fastres-smoke-")) if smoke else Path("bench") / "results"
    path = results_path(out_dir, env)
    results = open_results(path, env)
    results["preprocess_host"] = host_note()
    print(f"{SMOKE_LABEL + chr(10) if smoke else ''}fastres bench preprocess: {results['preprocess_host']}; torch "
          f"{env['torch']}, 1 thread; results: {path}", flush=True)
    run_preprocess(results, lambda m: print(m, flush=True), lambda: save_results(path, results), resize=resize,
                   crop=crop, systems=systems, sizes=SMOKE_PHOTO_SIZES if smoke else PHOTO_SIZES, photos=photos,
                   reps=reps, logits=not smoke)
    save_results(path, results)
    md, png = write_report(path, results, plot=not args.no_plot)
    print()
    print(markdown_preprocess_table(results))
    print(f"wrote {path}, {md.name}" + (f", {png.name}" if png else ""))
    bad = [r for r in results["records"] if r.get("kind") == "preprocess" and r.get("status") == "error"]
    if bad:
        print(f"{len(bad)} preprocess point(s) failed: " + "; ".join(f"{r['model']} {r['system']}: {r.get('reason')}"
                                                               for r in bad[:5]))
    return 1 if bad else 0
