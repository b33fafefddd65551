#!/usr/bin/env bash
# bench/device_run.sh OUTDIR - the one prepared run on a GPU machine (DESIGN.md section 7).
#
# For an H100 / H200 with no network: installs nothing but this checkout
# (pip install --no-deps --no-build-isolation -e .), then, each step under its own `timeout`
# and the whole under TOTAL_S (default 470 s, i.e. < 8 minutes):
#
#   step        cap   expected  what
#   env          60 s    ~15 s  nvidia-smi, versions, device properties, editable install
#   tests       110 s  70-110 s pytest on cuda, the pointer kernels: every GPU test but the risky
#                               families below (no wheel/interpreter/gate/smoke tests)
#   tests-fused  30 s   10-20 s fused split-K (atomics, arrival counters), its own process
#   tests-tma    40 s   15-30 s TMA kernels (descriptors, the allocator from fresh threads, the
#                               float32 classifier's descriptor fence), its own process
#   tests-ws     25 s    5-15 s warp-specialized TMA (a deadlock burns only this cap)
#   tests-bordered 25 s  5-15 s the bordered 3x3s (tma_b, tma_b_ws, tma_b_p) and the bordered engine
#   tests-tuned  40 s   15-30 s tuned engines (they measure every family), after the families
#   check        30 s   15-30 s fastres check (Hopper compile gate; cached after the first run)
#   layers       80 s   70-80 s every distinct ResNet-50 conv, batch 1/32/256, float16,
#                               fastres' default vs cudnn-eager vs cudnn-conv (+ the matmul/copy
#                               peaks): the baselines, saved before any variant runs
#   e2e          70 s   60-70 s resnet50 then resnet18, batch 1/32/256, float16 then bfloat16,
#                               fastres vs cudnn-eager vs cudnn-eager-graph (stops at --budget-s)
#   q-layers     45 s   30-45 s every distinct ResNet-50 conv at batch 256 in int8, then
#                               float8_e4m3fn: fastres' 8-bit launch, beside the float16 records
#                               above (cuDNN has no 8-bit conv through torch); + the int8/e4m3
#                               GEMM peaks. fp8 is skipped, saying why, below sm_89
#   q-e2e        60 s   40-60 s resnet50 quantized by fastres.quantize (random calibration),
#                               int8 then float8_e4m3fn, batch 1/32/256, beside e2e's float16
#   loadgen      30 s    ~5 s   the mlcommons-loadgen wheel from bench/wheels/ (only if it is there)
#   mlperf-Offline 40 s 20-35 s fastres bench mlperf, resnet50 float16, random weights, generated
#   mlperf-Server  40 s 20-35 s   samples: LoadGen's Offline (expected QPS from the warm-up), then
#                               Server (half that rate, p99 <= 15 ms), 8 s each, a process each;
#                               skipped, saying so, where mlperf_loadgen cannot be imported
#   sanitizer    40 s   30-40 s one resnet18 64x64 batch-2 float16 forward (no CUDA graph)
#                               under compute-sanitizer --tool memcheck
#   var-fused    30 s   20-30 s the kernel variants, one process per family, each timed beside
#   var-tma      40 s   30-40 s   the saved default of the same layer (bench layers
#   var-ws       30 s   20-30 s   --variants F --variants-only): a fault or a hang loses one family
#   var-bordered 25 s   15-25 s   (tma_b, tma_b_ws, tma_b_p: the stride-1 3x3s only)
#   predict      35 s   20-35 s fastres predict's pipeline on 1024 generated ImageNet-size JPEGs,
#                               resnet50 float16 batch 64/256: engine alone, CPU decode, nvjpeg
#   preprocess   30 s   15-25 s decode + resize + crop of generated photos (500x375, 1920x1080,
#                               4032x3024): nvjpeg on the GPU (per image of a batch of 4), and
#                               fastres.preprocess exact / fast on one host core each
#   compile   <= 90 s   40-60 s torch.compile (default mode) on resnet50 batch 32 float16, only
#                               if >= 50 s are left (inductor compiles for most of that)
#   report       15 s    ~5 s   markdown + plot from the results JSON, then the short table
#
# A CUDA fault (illegal address or instruction) poisons the context of the process it happens
# in, so each risky kernel family gets its own process, and the variants are measured only after
# the baselines are saved. `bench/device_run.sh --dry-run` prints the steps, their caps and
# commands in order without running any.
#
# The benchmark steps stop starting measurements at their --budget-s and say so in the JSON,
# so a slow compile shortens a step instead of killing it. The full matrix of DESIGN.md
# section 6 (5 models x 6 batches x 2 dtypes x 4 systems, both models' layers) takes far
# longer: run `fastres bench` without a budget when more GPU time is available.
#
# OUTDIR gets at most 8 files, flat: env.txt, tests.log, check.log, bench.log, sanitizer.log,
# and CARD-DATE.json / .md / .png (the results, named by the harness). The harness writes into a
# work folder outside OUTDIR, where a step killed mid-save leaves its temporary file, and the
# finished results are copied into OUTDIR after each benchmark step; every benchmark step gets
# the UTC date the run started (--date), so a run crossing midnight still makes one results file.
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
  if [ $# -eq 0 ]; then set -- "$(mktemp -d "${TMPDIR:-/tmp}/fastres-dry.XXXXXX")"; fi
fi
if [ $# -ne 1 ]; then
  echo "usage: bench/device_run.sh [--dry-run] OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
# the results' "commit": git where the checkout has its .git, else FASTRES_COMMIT if given
if [ -z "${FASTRES_COMMIT:-}" ]; then FASTRES_COMMIT=$(git rev-parse HEAD 2>/dev/null || true); fi
export FASTRES_COMMIT
PY=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-470}
export PYTHONUNBUFFERED=1
# the checkout is importable even if the editable install fails
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
T0=$(date +%s)
DATE=$(date -u +%Y-%m-%d)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastres-bench.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
STEPS=()
FAILED_LOGS=()

left() { echo $(( TOTAL_S - ($(date +%s) - T0) )); }

# collect: the finished results (JSON, markdown, plot) from the work folder into OUTDIR, never a
# temporary file; after every benchmark step, so that a run cut short keeps what it measured.
collect() {
  local f
  for f in "$WORK"/*.json "$WORK"/*.md "$WORK"/*.png; do
    if [ -f "$f" ]; then cp "$f" "$OUT/"; fi
  done
}

# step NAME CAP LOG CMD...: CMD under `timeout`, its cap cut to what TOTAL_S leaves (keeping 15 s
# for the report); output appended to LOG; one line per step in the summary.
step() {
  local name=$1 cap=$2 log=$3
  shift 3
  local room=$(( $(left) - 15 ))
  if [ "$room" -lt "$cap" ]; then cap=$room; fi
  if [ "$cap" -lt 10 ]; then
    STEPS+=("$(printf '%-11s %-9s %5s %5s' "$name" "no time" "-" "-")")
    echo "== $name: not run (time is up)" | tee -a "$log"
    return 0
  fi
  if [ "$DRY" = 1 ]; then
    echo "step $name cap ${cap}s: $*"
    STEPS+=("$(printf '%-11s %-9s %4ss %4ss' "$name" "dry" "0" "$cap")")
    return 0
  fi
  echo "== $name (cap ${cap}s): $*" >>"$log"
  echo "== $name (cap ${cap}s)"
  local t=$(date +%s)
  timeout --kill-after=10 "$cap" "$@" >>"$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t ))
  local what="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then what="TIMEOUT"; elif [ $rc -ne 0 ]; then what="rc=$rc"; fi
  if [ $rc -ne 0 ]; then FAILED_LOGS+=("$name:$log"); fi
  STEPS+=("$(printf '%-11s %-9s %4ss %4ss' "$name" "$what" "$dt" "$cap")")
  echo "== $name: $what in ${dt}s" | tee -a "$log"
  return 0
}

# ---- env --------------------------------------------------------------------------------
ENV="$OUT/env.txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: ${FASTRES_COMMIT:-unknown}"
  git status --short 2>/dev/null | head -20
  echo "uname: $(uname -a)"
  echo
  nvidia-smi || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit --format=csv || true
  echo
  echo "compute-sanitizer: $(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo missing)"
} >"$ENV" 2>&1
step install 45 "$ENV" "$PY" -m pip install --no-deps --no-build-isolation --no-input -q -e .
step versions 30 "$ENV" "$PY" - <<'EOF'
import platform, torch, triton
import fastres
print("python", platform.python_version(), "| torch", torch.__version__, "| triton", triton.__version__,
      "| cuda", torch.version.cuda, "| cudnn", torch.backends.cudnn.version(), "| fastres", fastres.__version__, fastres.__file__)
try:
    import torchvision; print("torchvision", torchvision.__version__)
except ImportError as e:
    print("torchvision missing:", e)
for name in ("matplotlib", "pytest", "pytest_benchmark", "hypothesis", "numpy", "safetensors"):
    try:
        m = __import__(name); print(name, getattr(m, "__version__", "?"))
    except ImportError:
        print(name, "missing")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", torch.cuda.get_device_name(0), f"cc {p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "memory GiB", round(p.total_memory / 2**30, 1), "L2 MB", getattr(p, "L2_cache_size", 0) / 1e6)
else:
    print("NO CUDA DEVICE VISIBLE")
EOF
head -c 2000 "$ENV" | grep -m1 -E "H100|H200|NVIDIA" || true

# ---- GPU test tier -----------------------------------------------------------------------
# The GPU tier: every parity test on cuda (bf16 included). Not here: the wheel test and the
# interpreter probes (CPU tier; triton 3.6's interpreter breaks with the image's numpy), the
# compile gate (its own step below), the CPU smoke of the bench. The files most likely to
# find a GPU-only fault run first (capture streams, every config of the space, split-K, the
# head, compiling ahead, the engine), so that a cap that cuts the step cuts the least
# informative ones.
FIRST="tests/test_streams.py tests/test_gemm_tma.py tests/test_conv_tma.py tests/test_config.py tests/test_splitk.py tests/test_head.py tests/test_launch.py tests/test_engine.py tests/test_build.py"
TEST_FILES="$FIRST"
for f in tests/test_*.py; do
  case " $FIRST tests/test_packaging.py " in *" $f "*) continue;; esac
  case "$f" in tests/test_gate_*) continue;; esac  # the compile gate's tests (its own step below)
  TEST_FILES="$TEST_FILES $f"
done
# One process per risky kernel family, chosen by name (test, parameter and file names say the
# family: "tma", "tma_ws", "fused", "bordered" / "tma_b"; "tun" for the tuned engines, which
# measure every family); the six selections split the tests exactly (tests/test_device_run.py
# checks it).
BORDERED_K="bordered or tma_b"
POINTER_K="not tma and not fused and not tun and not ($BORDERED_K)"
FUSED_K="fused and not tma and not ($BORDERED_K)"
TMA_K="tma and not tma_ws and not ($BORDERED_K)"
WS_K="tma_ws and not ($BORDERED_K)"
TUNED_K="tun and not tma and not fused and not ($BORDERED_K)"
PYTEST=(-m pytest -q -p no:cacheprovider --maxfail=20 --durations=10
        --deselect tests/test_benchmark_cli.py::test_bench_smoke_end_to_end)
# shellcheck disable=SC2086  # one word per file
step tests 110 "$OUT/tests.log" "$PY" "${PYTEST[@]}" $TEST_FILES -k "$POINTER_K"
# shellcheck disable=SC2086
step tests-fused 30 "$OUT/tests.log" "$PY" "${PYTEST[@]}" $TEST_FILES -k "$FUSED_K"
# shellcheck disable=SC2086
step tests-tma 40 "$OUT/tests.log" "$PY" "${PYTEST[@]}" $TEST_FILES -k "$TMA_K"
# shellcheck disable=SC2086
step tests-ws 25 "$OUT/tests.log" "$PY" "${PYTEST[@]}" $TEST_FILES -k "$WS_K"
# shellcheck disable=SC2086
step tests-bordered 25 "$OUT/tests.log" "$PY" "${PYTEST[@]}" $TEST_FILES -k "$BORDERED_K"
# shellcheck disable=SC2086
step tests-tuned 40 "$OUT/tests.log" "$PY" "${PYTEST[@]}" $TEST_FILES -k "$TUNED_K"

# ---- compile gate ------------------------------------------------------------------------
step check 30 "$OUT/check.log" "$PY" -m fastres check --no-progress

# ---- benchmarks (results merge into one CARD-DATE.json in WORK, copied to OUT) -----------
BENCH="$OUT/bench.log"
LAYERS=(layers --out "$WORK" --date "$DATE" --no-plot --models resnet50 --batches 1,32,256 --dtypes float16)
# first: every ResNet-50 conv, fastres' default against cuDNN (the baselines, saved per point)
step layers 80 "$BENCH" "$PY" -m fastres bench "${LAYERS[@]}" --warmup-ms 5 --rep-ms 20 --budget-s 70
collect
step e2e 70 "$BENCH" "$PY" -m fastres bench e2e --out "$WORK" --date "$DATE" --no-plot \
  --models resnet50,resnet18 --batches 1,32,256 --dtypes float16,bfloat16 \
  --systems fastres,cudnn-eager,cudnn-eager-graph --warmup-ms 30 --rep-ms 150 --budget-s 60
collect

# ---- 8 bits (int8, float8_e4m3fn): fastres alone, beside the float16 baselines just saved ------
# (a process each, after the baselines: a faulting 8-bit kernel loses only its step; the
# layers' comparison needs the float16 batch-256 records, which the layers step's budget may cut)
step q-layers 45 "$BENCH" "$PY" -m fastres bench layers --out "$WORK" --date "$DATE" --no-plot --models resnet50 \
  --batches 256 --dtypes int8,float8_e4m3fn --layer-systems fastres --warmup-ms 5 --rep-ms 20 --budget-s 38
collect
step q-e2e 60 "$BENCH" "$PY" -m fastres bench e2e --out "$WORK" --date "$DATE" --no-plot --models resnet50 \
  --batches 1,32,256 --dtypes int8,float8_e4m3fn --systems fastres --warmup-ms 30 --rep-ms 150 --budget-s 50
collect

# ---- MLPerf's LoadGen: resnet50 float16, Offline then Server, short runs, a process each --------
# (one LoadGen test per process: only a process's first config load reads LoadGen's rules);
# LoadGen's summary goes to bench.log, its own files stay in the work folder. No package
# registry here: the mlcommons-loadgen wheel comes in bench/wheels/ (gitignored; bench/NOTES.md
# says how). Without an importable mlperf_loadgen both steps are skipped, saying so.
if compgen -G "$REPO/bench/wheels/mlcommons_loadgen-*.whl" >/dev/null; then
  step loadgen 30 "$BENCH" "$PY" -m pip install --no-index --find-links "$REPO/bench/wheels" --no-input -q \
    mlcommons-loadgen
fi
if [ "$DRY" = 1 ] || "$PY" -c "import mlperf_loadgen" >/dev/null 2>&1; then
  for SC in Offline Server; do
    step "mlperf-$SC" 40 "$BENCH" "$PY" -m fastres bench mlperf --scenario "$SC" --arch resnet50 --dtype float16 \
      --duration-s 8 --out "$WORK" --date "$DATE" --log-dir "$WORK/mlperf-$SC"
    collect
  done
else
  echo "== mlperf-Offline, mlperf-Server: skipped: mlperf_loadgen is not importable (put the mlcommons-loadgen" \
    "wheel in bench/wheels/: bench/NOTES.md)" | tee -a "$BENCH"
  STEPS+=("$(printf '%-11s %-9s %5s %5s' mlperf "no wheel" - -)")
fi

# ---- memcheck of one small forward ---------------------------------------------------------
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$SAN" ]; then
  # no caching allocator, so that an out-of-bounds access cannot land inside a cached block
  step sanitizer 40 "$OUT/sanitizer.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" --tool memcheck --error-exitcode 3 \
    --print-limit 30 "$PY" -m fastres bench forward --models resnet18 --size 64 --batches 2 --dtypes float16
else
  echo "compute-sanitizer not found: skipped" >"$OUT/sanitizer.log"
  STEPS+=("$(printf '%-11s %-9s %5s %5s' sanitizer missing - -)")
fi

# ---- kernel variants, one process per family, beside the saved baselines (bench/NOTES.md) ----
step var-fused 30 "$BENCH" "$PY" -m fastres bench "${LAYERS[@]}" --variants fused_k --variants-only \
  --warmup-ms 5 --rep-ms 20 --budget-s 25
collect
step var-tma 40 "$BENCH" "$PY" -m fastres bench "${LAYERS[@]}" --variants tma,tma_w --variants-only \
  --warmup-ms 5 --rep-ms 20 --budget-s 35
collect
step var-ws 30 "$BENCH" "$PY" -m fastres bench "${LAYERS[@]}" --variants tma_ws --variants-only \
  --warmup-ms 5 --rep-ms 20 --budget-s 25
collect
step var-bordered 25 "$BENCH" "$PY" -m fastres bench "${LAYERS[@]}" --variants tma_b,tma_b_ws,tma_b_p --variants-only \
  --warmup-ms 5 --rep-ms 20 --budget-s 20
collect

# ---- fastres predict's image pipeline (results merge into the same JSON) ---------------------
step predict 35 "$BENCH" "$PY" -m fastres bench predict --out "$WORK" --date "$DATE" --no-plot \
  --models resnet50 --batches 64,256 --dtypes float16 --images 1024 --warmup-ms 10 --rep-ms 50 --budget-s 25

# ---- preprocessing: nvjpeg's decode + resize + crop, and this host's cores in exact and fast ----
step preprocess 30 "$BENCH" "$PY" -m fastres bench preprocess --out "$WORK" --date "$DATE" --no-plot \
  --systems nvjpeg,exact,fast --images 4 --min-reps 3
collect

# ---- torch.compile, if time is left ------------------------------------------------------
if [ $(( $(left) - 15 )) -ge 50 ]; then
  step compile 90 "$BENCH" "$PY" -m fastres bench e2e --out "$WORK" --date "$DATE" --no-plot \
    --models resnet50 --batches 32 --dtypes float16 --systems fastres,torch-compile --warmup-ms 30 --rep-ms 200
  collect
else
  STEPS+=("$(printf '%-11s %-9s %5s %5s' compile "no time" - -)")
fi

# ---- report --------------------------------------------------------------------------------
RESULTS=$(ls -t "$WORK"/*.json 2>/dev/null | head -1)
if [ -n "$RESULTS" ]; then
  step report 15 "$BENCH" "$PY" -m fastres bench report "$RESULTS"
  collect
fi
{
  echo
  echo "steps (name, outcome, seconds, cap); total $(( $(date +%s) - T0 ))s of ${TOTAL_S}s"
  printf '%s\n' "${STEPS[@]}"
} | tee -a "$ENV"
SHOWN=" "
for entry in "${FAILED_LOGS[@]}"; do
  log=${entry#*:}
  case "$SHOWN" in *" $log "*) continue;; esac
  SHOWN="$SHOWN$log "
  echo
  echo "---- ${entry%%:*} failed; the end of $(basename "$log"):"
  tail -n 15 "$log" | cut -c1-300
done
echo
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -5 || true
tail -3 "$OUT/check.log" 2>/dev/null || true
grep -E "^forward |ERROR SUMMARY" "$OUT/sanitizer.log" 2>/dev/null | tail -3 || true
if [ -n "$RESULTS" ]; then
  echo
  echo "results: $(basename "$RESULTS") (+ .md, .png)"
  "$PY" -m fastres bench summary "$RESULTS"
fi
