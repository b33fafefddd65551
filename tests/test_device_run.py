"""bench/device_run.sh, dry: every step runs in order against a stand-in python, the GPU test
step lists every test file once (the most informative first, the CPU-only ones left out), and
OUTDIR gets only the flat files the script promises: one results file however the date turns
during the run, and no temporary file from a step cut short."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "device_run.sh"


NEEDS_BASH = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and timeout")

# The stand-in python: records each invocation's arguments (one line), swallows a script
# given on stdin, answers `-c CODE` (an import check) with exit C_RC; BENCH (if any) then runs
# for `-m fastres bench ...` calls.
STUB = """#!/usr/bin/env bash
echo "$*" >> "{calls}"
[ "$1" = "-" ] && cat > /dev/null
[ "$1" = "-c" ] && exit {c_rc}
if [ "$1 $2 $3" = "-m fastres bench" ]; then
{bench}
fi
exit 0
"""


def dry_run(tmp_path: Path, bench: str = ":", c_rc: int = 0) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    """Run the script against the stand-in python in `tmp_path` (with any stand-in tools put
    there); returns the finished process, the python calls, one per line, and OUTDIR."""
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(STUB.format(calls=calls, bench=bench, c_rc=c_rc))
    stub.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(stub), TOTAL_S="120", FASTRES_COMMIT="abc123", TMPDIR=str(tmp_path),
               PATH=f"{tmp_path}:{os.environ['PATH']}")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, calls.read_text().splitlines(), out


def assert_flat_and_few(out: Path) -> list[str]:
    produced = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()) and len(produced) <= 8, produced
    return produced


@NEEDS_BASH
def test_device_run_dry(tmp_path):
    proc, lines, out = dry_run(tmp_path)
    steps = [l.split()[:3] for l in lines]
    assert steps[0][:2] == ["-m", "pip"] and steps[1] == ["-"]
    pytest_line = next(l for l in lines if l.startswith("-m pytest"))
    files = [a for a in pytest_line.split() if a.startswith("tests/") and "::" not in a]
    on_disk = sorted(f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py"))
    assert files[:5] == ["tests/test_streams.py", "tests/test_gemm_tma.py", "tests/test_conv_tma.py", "tests/test_config.py",
                         "tests/test_splitk.py"]
    gate = [f for f in on_disk if f.startswith("tests/test_gate_")]
    assert len(files) == len(set(files)) and "tests/test_packaging.py" not in files and not set(gate) & set(files)
    assert gate and sorted(files + ["tests/test_packaging.py", *gate]) == on_disk
    assert any(l.startswith("-m fastres check") for l in lines)
    layers = [l for l in lines if l.startswith("-m fastres bench ")]
    assert layers[0].startswith("-m fastres bench layers") and "--variants" not in layers[0]  # the baselines first
    assert "--batches 1,32,256" in layers[0] and "--dtypes float16" in layers[0]
    assert [l.split("--variants ")[1].split()[0] for l in layers if "--variants-only" in l] == ["fused_k", "tma,tma_w",
                                                                                              "tma_ws", "tma_b,tma_b_ws,tma_b_p"]
    assert any(l.startswith("-m fastres bench e2e") for l in lines)
    assert [l.split()[5] for l in lines if l.startswith("-m fastres bench mlperf")] == ["Offline", "Server"]
    predict = next(l for l in lines if l.startswith("-m fastres bench predict"))
    assert "--images" in predict and "--budget-s" in predict and "--date" in predict and f"--out {out}" not in predict
    pre = next(l for l in lines if l.startswith("-m fastres bench preprocess"))
    assert "--systems nvjpeg,exact,fast" in pre and "--date" in pre and f"--out {out}" not in pre
    produced = assert_flat_and_few(out)
    assert {"env.txt", "tests.log", "check.log", "bench.log"} <= set(produced)
    assert "steps (name, outcome, seconds, cap)" in proc.stdout


@NEEDS_BASH
def test_mlperf_steps_skip_without_loadgen(tmp_path):
    # mlperf_loadgen not importable (no wheel carried): both steps skipped, saying why, and the run goes on
    proc, lines, out = dry_run(tmp_path, c_rc=1)
    assert "-c import mlperf_loadgen" in lines and not [l for l in lines if l.startswith("-m fastres bench mlperf")]
    assert "skipped: mlperf_loadgen is not importable" in (out / "bench.log").read_text()
    assert "no wheel" in proc.stdout and any(l.startswith("-m fastres bench predict") for l in lines)


# Each benchmark step writes its results file into its --out, named as the harness names it (by
# --date, else by today), then is cut short by its timeout in the middle of the next save (the
# harness's temporary file is left beside the results); the report step writes the markdown
# and the plot beside the JSON.
BENCH_STEPS = """  case "$4" in
    layers|e2e)
      day=$(date -u +%Y-%m-%d)
      while [ $# -gt 0 ]; do
        case "$1" in --out) out=$2; shift;; --date) day=$2; shift;; esac
        shift
      done
      echo '{"records": []}' > "$out/h200-$day.json"
      echo '{"rec' > "$out/h200-$day.jsonq7x2ab.tmp"
      exit 124;;
    report) echo md > "${5%.json}.md"; echo png > "${5%.json}.png";;
  esac"""

# A `date` whose day moves on at every call asking for one (midnight between any two calls).
FAKE_DATE = """#!/usr/bin/env bash
if [ "${{!#}}" = "+%Y-%m-%d" ]; then
  n=$(( $(cat "{counter}" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "{counter}"
  printf '2026-01-%02d\\n' "$n"
  exit 0
fi
exec "{real}" "$@"
"""


@NEEDS_BASH
def test_device_run_fixes_the_date_and_keeps_temporaries_out(tmp_path):
    fake = tmp_path / "date"
    fake.write_text(FAKE_DATE.format(counter=tmp_path / "days", real=shutil.which("date")))
    fake.chmod(0o755)
    proc, lines, out = dry_run(tmp_path, BENCH_STEPS)
    produced = assert_flat_and_few(out)
    assert not [f for f in produced if f.endswith(".tmp")], produced
    assert [f for f in produced if f.startswith("h200-")] == ["h200-2026-01-01.json", "h200-2026-01-01.md",
                                                             "h200-2026-01-01.png"], produced
    assert "TIMEOUT" in proc.stdout and "results: h200-2026-01-01.json" in proc.stdout
    bench = [l.split() for l in lines if l.startswith("-m fastres bench ") and l.split()[3] in ("layers", "e2e")]
    assert len(bench) >= 2  # layers, e2e (and the torch.compile point, time allowing)
    assert {b[b.index("--date") + 1] for b in bench} == {"2026-01-01"}
    (work_dir,) = {Path(b[b.index("--out") + 1]) for b in bench}
    assert out.resolve() not in (work_dir.resolve(), *work_dir.resolve().parents)
    assert not work_dir.exists(), "the work folder is removed at the end"


@NEEDS_BASH
def test_dry_run_isolates_each_risky_family(tmp_path):
    """`device_run.sh --dry-run` shows the order and the caps: one capped pytest process per
    risky kernel family (fused split-K, TMA, warp-specialized TMA, the bordered 3x3s, then the tuned engines that
    measure them all), whose selections split the GPU tests exactly; the variants are timed
    one family per process, after the baselines (layers, e2e) are saved."""
    import re
    import sys

    from _pytest.mark.expression import Expression

    env = dict(os.environ, TMPDIR=str(tmp_path), TOTAL_S="470")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path / "out")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [re.match(r"step (\S+) cap (\d+)s: (.*)", l).groups() for l in proc.stdout.splitlines()
             if l.startswith("step ")]
    names = [s[0] for s in steps]
    assert all(int(cap) > 0 for _, cap, _ in steps)
    tests = ["tests", "tests-fused", "tests-tma", "tests-ws", "tests-bordered", "tests-tuned"]
    assert [n for n in names if n.startswith("tests")] == tests
    assert names.index("tests-tuned") < names.index("check") < names.index("layers") < names.index("e2e")
    # the 8-bit steps right after the float16 baselines, each its own capped process
    assert names.index("e2e") < names.index("q-layers") < names.index("q-e2e") < names.index("var-fused")
    eight = {n: cmd for n, _, cmd in steps if n.startswith("q-")}
    assert all("--dtypes int8,float8_e4m3fn" in c and "--budget-s" in c and "--models resnet50" in c
               for c in eight.values())
    assert "--batches 256 " in eight["q-layers"] and "--batches 1,32,256 " in eight["q-e2e"]
    variants = [(n, cmd) for n, _, cmd in steps if n.startswith("var-")]
    assert [n for n, _ in variants] == ["var-fused", "var-tma", "var-ws", "var-bordered"]
    assert all(names.index(n) > names.index("e2e") for n, _ in variants), "variants after the baselines"
    families = [cmd.split("--variants ")[1].split()[0] for _, cmd in variants]
    assert families == ["fused_k", "tma,tma_w", "tma_ws", "tma_b,tma_b_ws,tma_b_p"] and all("--variants-only" in c
                                                                                 for _, c in variants)
    layers = next(cmd for n, _, cmd in steps if n == "layers")
    assert "--variants" not in layers
    # the six -k selections over the GPU test files: disjoint, and together every test
    cmds = {n: cmd for n, _, cmd in steps if n in tests}
    files = [a for a in cmds["tests"].split() if a.startswith("tests/") and "::" not in a]
    exprs = {n: Expression.compile(cmds[n].split(" -k ", 1)[1]) for n in tests}
    co = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", *files], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
    ids = [l for l in co.stdout.splitlines() if "::" in l]
    assert len(ids) > 500, co.stdout[-2000:] + co.stderr[-2000:]
    chosen = {n: {i for i in ids if e.evaluate(lambda s, i=i.lower(): s.lower() in i)} for n, e in exprs.items()}
    for i in ids:
        assert sum(i in c for c in chosen.values()) == 1, i
    for n in tests[1:]:
        assert chosen[n], f"{n} selects no test"
    assert any("tma_launch_sets_the_allocator" in i for i in chosen["tests-tma"])
    assert any("[tma_ws" in i or "tma_ws]" in i for i in chosen["tests-ws"])
    assert any("test_fused_split" in i for i in chosen["tests-fused"])
    assert any("test_conv_bordered.py" in i for i in chosen["tests-bordered"])
    assert any("tma_b_ws" in i for i in chosen["tests-bordered"])
    assert any("test_resnet50_bordered_forward" in i for i in chosen["tests-bordered"])
