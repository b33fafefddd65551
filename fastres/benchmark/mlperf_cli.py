"""``fastres bench mlperf``: the engine measured by MLPerf's own harness, LoadGen, in one of its
four scenarios (Offline, Server, SingleStream, MultiStream), in performance or accuracy mode.
One test per process (only a process's first config load reads LoadGen's built-in rules);
``--find-peak`` runs its short tests in child processes. The run's record joins the day's
results file (``bench/results``); LoadGen's own files stay unchanged in ``--log-dir``."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from ..batch_shapes import MAX_BATCH_LIMIT
from ..errors import UserError, first_line
from .environment import environment
from .mlperf import (MODES, MULTISTREAM_SAMPLES, PERFORMANCE_SAMPLES, SCENARIOS, Engine, NullEngine, Overrides,
                     SampleLibrary, SystemUnderTest, loadgen, read_val_map, run_loadgen, test_settings, warm_engine)
from .mlperf_peak import MAX_PROBES, PEAK_DURATION_S, main as find_peak
from .mlperf_results import accuracy_line, accuracy_top1, markdown_mlperf_table, mlperf_record, read_summary, summary_fields
from .names import SMOKE_LABEL
from .results import add_record, open_results, results_path, save_results

ENGINES = ("fastres", "null")
DTYPES = ("float16", "bfloat16", "float32")
GPU_BATCH, CPU_BATCH = 256, 8


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of `fastres bench mlperf`."""
    parser.description = (
        "Run MLPerf Inference's LoadGen (needs fastres[mlperf]) around the engine: ResNet-50's rules built into "
        "LoadGen, then --user-conf, then the short-run overrides. Samples are MLPerf's ImageNet validation layout "
        "(--data: the JPEGs and val_map.txt), preprocessed once before timing (resize 256 bilinear, centre crop 224) "
        "and held as uint8 crops; normalization happens in the stem. Responses are the top-1 index as float32, as "
        "MLPerf's reference writes them. Without a GPU the engine runs through triton's interpreter (not a "
        "performance figure); --engine null measures the harness alone.")
    parser.add_argument("--scenario", choices=SCENARIOS, default=None, help="LoadGen scenario (default Offline)")
    parser.add_argument("--mode", choices=MODES, default="performance",
                        help="performance (LoadGen's timing and validity) or accuracy (every sample once; top-1 "
                             "against MLPerf's 75.695%% floor)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="MLPerf's ImageNet validation layout: JPEGs and val_map.txt ('FILE LABEL' lines); "
                             "without it: generated images, performance mode only")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--weights", metavar="FILE", default=None,
                       help="a file written by `fastres convert`, or a torchvision checkpoint (.pth)")
    model.add_argument("--arch", default=None,
                       help="a torchvision ResNet name with seeded random weights (default resnet50 without --weights)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="engine dtype (default: a converted file's own, else float16 on a GPU, float32 on the CPU)")
    parser.add_argument("--engine", choices=ENGINES, default="fastres",
                        help="fastres, or null: no model (every answer class 0), the harness's own cost")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"largest batch the SUT runs (default {GPU_BATCH} on a GPU and for --engine null, "
                             f"{CPU_BATCH} in the interpreter); "
                             "batches are padded to powers of two, each shape built before the test")
    parser.add_argument("--image-size", type=int, default=224, help="crop size (default 224, MLPerf's); resize in proportion")
    parser.add_argument("--log-dir", metavar="DIR", default=None,
                        help="LoadGen's own files (mlperf_log_summary.txt, _detail.txt, _accuracy.json), unchanged "
                             "(default: a folder beside the results file)")
    parser.add_argument("--user-conf", metavar="FILE", default=None,
                        help="LoadGen user.conf (keys as resnet50.SCENARIO.KEY or *.SCENARIO.KEY)")
    short = parser.add_argument_group("short runs (override MLPerf's rules: not a submission-valid run)")
    short.add_argument("--duration-s", type=float, default=None, help="min_duration (MLPerf: 600 s)")
    short.add_argument("--target-qps", type=float, default=None,
                       help="Server's target QPS and Offline's expected QPS (Offline's one query is sized from it)")
    short.add_argument("--target-latency-ms", type=float, default=None, help="Server's latency bound (MLPerf: 15 ms at p99)")
    short.add_argument("--query-count", type=int, default=None,
                       help="min_query_count (Offline: the samples in its one query, at least)")
    short.add_argument("--latency-percentile", type=float, default=None,
                       help="the latency percentile judged (MLPerf: 90 SingleStream, 99 MultiStream and Server); "
                            "LoadGen's early stopping needs 64 queries at 90, 662 at 99, 4 at 10")
    peak = parser.add_argument_group("--find-peak (short runs, each in a process of its own)")
    peak.add_argument("--find-peak", action="store_true",
                      help="search the highest Server target QPS that stays VALID (bracketing, then bisection) and "
                           "Offline's expected QPS (one run), and write them to LOG_DIR/user.conf; probes run "
                           f"--duration-s (default {PEAK_DURATION_S:g} s) and --query-count (default 1) each")
    peak.add_argument("--max-probes", type=int, default=None,
                      help=f"--find-peak's Server runs, at most (default {MAX_PROBES})")
    parser.add_argument("--out", default=None,
                        help="folder for the results file (default bench/results; the interpreter: a temporary folder)")
    parser.add_argument("--date", default=None, help="YYYY-MM-DD naming the results file (default today, UTC)")
    parser.add_argument("--json", action="store_true", help="print the record as one JSON line last (for scripts)")


def _check(args: argparse.Namespace) -> None:
    for name in ("batch", "image_size", "query_count", "max_probes"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    for name in ("duration_s", "target_qps", "target_latency_ms"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {v}")
    if args.latency_percentile is not None and not 0 < args.latency_percentile < 100:
        raise UserError(f"--latency-percentile must be in (0, 100), got {args.latency_percentile}")
    if args.batch is not None and args.batch > MAX_BATCH_LIMIT:
        raise UserError(f"--batch must be at most {MAX_BATCH_LIMIT}, got {args.batch}")
    if args.find_peak:
        for flag, given in (("--scenario", args.scenario is not None), ("--mode accuracy", args.mode == "accuracy"),
                            ("--target-qps", args.target_qps is not None)):
            if given:
                raise UserError(f"--find-peak runs Offline, then Server at the rates it searches: drop {flag}")
    elif args.max_probes is not None:
        raise UserError("--max-probes is --find-peak's: add --find-peak, or drop it")
    if args.image_size < 32:
        raise UserError(f"--image-size must be >= 32 (ResNets downsample by 32), got {args.image_size}")
    if args.mode == "accuracy" and args.data is None:
        raise UserError("--mode accuracy needs --data DIR (MLPerf's ImageNet layout): generated images have no labels")
    if args.engine == "null" and (args.weights or args.arch):
        raise UserError("--engine null runs no model: drop --weights / --arch")
    if args.user_conf is not None and not Path(args.user_conf).is_file():
        raise UserError(f"--user-conf {args.user_conf}: no such file")
    if args.date is not None:
        from .cli import check_date

        check_date(args.date)


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _build_model(args: argparse.Namespace, device: torch.device):
    """(fastres.ResNet, model name, dtype name) from --weights or --arch."""
    from ..kernels import interpreting

    if device.type == "cpu" and not interpreting():
        raise UserError("no CUDA device: on the CPU the engine runs only through triton's interpreter "
                        "(TRITON_INTERPRET=1, which `fastres bench` sets itself), or use --engine null")
    dtype_name = args.dtype
    if device.type == "cpu" and dtype_name == "bfloat16":
        raise UserError("bfloat16 needs a GPU: triton's CPU interpreter multiplies bf16 wrongly (triton issue 11584)")
    graph = device.type == "cuda"
    if args.weights:
        from ..weights import WeightsError, open_model

        try:
            model, meta = open_model(args.weights, device, dtype=dtype_name, cuda_graph=graph)
        except (WeightsError, FileNotFoundError, ValueError, TypeError) as exc:
            raise UserError(first_line(exc, typed=False, limit=None)) from None
        return model, str(meta.get("arch", model.arch)), str(model.dtype).replace("torch.", "")
    import fastres
    from ..models import random_resnet
    from ..plan import ARCHS

    arch = args.arch or "resnet50"
    if arch not in ARCHS:
        raise UserError(f"--arch {arch}: unknown (choose from {', '.join(ARCHS)})")
    dtype_name = dtype_name or ("float16" if device.type == "cuda" else "float32")
    model = fastres.from_torchvision(random_resnet(arch).to(device), dtype=getattr(torch, dtype_name), cuda_graph=graph)
    return model, arch, dtype_name


def main(args: argparse.Namespace) -> int:
    """Run one LoadGen test (or --find-peak's search); returns the exit code (1: INVALID or failed)."""
    _check(args)
    lg = loadgen()
    if args.find_peak:
        return find_peak(args)
    scenario = args.scenario or "Offline"
    device = _device() if args.engine == "fastres" else torch.device("cpu")
    smoke = args.engine == "fastres" and device.type == "cpu"
    size = args.image_size
    if args.data:
        paths, labels = read_val_map(Path(args.data))
    else:
        paths, labels = None, None
        print("fastres bench mlperf: no --data: generated images (seeded noise), performance mode only", flush=True)
    count = len(paths) if paths is not None else PERFORMANCE_SAMPLES
    max_batch = args.batch or (GPU_BATCH if device.type == "cuda" or args.engine == "null" else CPU_BATCH)
    if scenario == "SingleStream":
        max_batch = 1
    samples = SampleLibrary(paths, count, size, pin=device.type == "cuda")
    if args.engine == "null":
        engine, model_name, dtype_name = NullEngine(), args.arch or "none", "none"
    else:
        model, model_name, dtype_name = _build_model(args, device)
        engine = Engine(model, samples, max_batch)

    env = environment(device, smoke=smoke, date=args.date)
    if args.engine == "null" and device.type == "cpu":
        from .preprocess import cpu_name

        env.update(device=f"{cpu_name()} (CPU only)")
    out_dir = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="fastres-smoke-")) if smoke
                                                else Path("bench") / "results")
    path = results_path(out_dir, env)
    log_dir = Path(args.log_dir) if args.log_dir else out_dir / (
        f"mlperf-{env['card']}-{env['date']}-{model_name}-{dtype_name}-{engine.name}-{scenario}-{args.mode}")
    banner = f"{SMOKE_LABEL}\n" if smoke else ""
    print(f"{banner}fastres bench mlperf: {scenario}, {args.mode}, {engine.name} {model_name} {dtype_name} at "
          f"{size}x{size}, batch <= {max_batch}, {count} samples, on {env['device']}; LoadGen logs: {log_dir}", flush=True)

    # untimed: the first sample set for the warm-up's gathers, and every shape built
    samples.load(range(min(count, max_batch)))
    seconds_per_sample = warm_engine(engine, scenario, max_batch)
    overrides = Overrides(args.duration_s, args.target_qps, args.target_latency_ms, args.query_count,
                          args.latency_percentile)
    settings = test_settings(lg, scenario, args.mode, Path(args.user_conf) if args.user_conf else None, overrides,
                             sample_count=count, seconds_per_sample=seconds_per_sample, max_batch=max_batch)
    # LoadGen's issue thread needs the GIL for every Server arrival: a worker holding it for the
    # default 5 ms switch interval shows in the tail latency (null engine, 100k/s, one core: p99
    # 10.3 ms at 5 ms, 8.7 ms at 0.5 ms). One test per process, so the setting is the run's own.
    sys.setswitchinterval(0.0005)
    sut = SystemUnderTest(lg, engine, max_batch)
    try:
        run_loadgen(lg, sut, samples, settings, log_dir)
    except RuntimeError as exc:
        print(f"fastres bench mlperf: error: {first_line(exc)}", file=sys.stderr)
        return 1
    finally:
        sut.stop()

    fields = accuracy = None
    summary_path = log_dir / "mlperf_log_summary.txt"
    if args.mode == "performance":
        fields = summary_fields(read_summary(summary_path), scenario, MULTISTREAM_SAMPLES)
    else:
        accuracy = accuracy_top1(log_dir / "mlperf_log_accuracy.json", labels)
    rec = mlperf_record(model=model_name, dtype=dtype_name, system=engine.name, size=size, batch=max_batch,
                        scenario=scenario, mode=args.mode, fields=fields, accuracy=accuracy, log_dir=log_dir)
    rec.update(sut_batches=sut.batches, sut_samples=sut.samples, short_run=overrides.any(), user_conf=args.user_conf)
    results = open_results(path, env)
    add_record(results, rec)
    save_results(path, results)
    print()
    print(markdown_mlperf_table({"records": [rec]}).split("\n\n")[0])
    if accuracy is not None:
        print(accuracy_line(accuracy))
    else:
        print(f"LoadGen: {fields['result']}; {_rate(fields['samples_per_s'])} samples/s; "
              + ", ".join(f"{k} {v:.3g} ms" for k, v in fields["latency_ms"].items()))
    print(f"wrote {path}; LoadGen's files in {log_dir}")
    if smoke:
        print(SMOKE_LABEL)
    if args.json:
        print(json.dumps(rec, default=str))
    return 0 if accuracy is not None or fields["valid"] else 1


def _rate(v) -> str:
    return f"{v:,.0f}" if isinstance(v, (int, float)) else "-"
