"""Shared by the tests of the compile gate (tests/test_gate_*.py): running python in a child
without TRITON_INTERPRET, where ``triton.compile`` can compile ``@triton.jit`` functions."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.int8: "int8",
               torch.float8_e4m3fn: "float8_e4m3fn"}


def gate_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_python(args: list[str], *, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository root, without TRITON_INTERPRET unless `env` sets it."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=gate_env(**env), capture_output=True, text=True, timeout=timeout,
    )


# -- the gate's long runs, in the background ------------------------------------------------
# A cold `fastres check --target all` compiles for minutes on two processes, while the
# interpreter tests keep one core busy. So the session starts the gate's runs as soon as it has
# collected their tests (tests/conftest.py), runs those tests last, and their fixtures only
# wait for the result: the compiles overlap the rest of the suite instead of following it.
GATE_ALL = ["-m", "fastres", "check", "--target", "all", "--json", "--no-progress"]
TRITON36 = "3.6.0"
TRITON36_FAMILIES = "fused_k,tma,tma_w,tma_ws,tma_b,tma_b_ws,tma_b_p"
# A folder where triton 3.6.0 is installed already (`pip install --no-deps --target DIR
# triton==3.6.0`, as .ci/run does before the tests): then the tests need no network.
TRITON36_DIR_ENV = "FASTRES_TRITON36_DIR"
# The exit status of the triton 3.6 run when pip could not install it (no network, no index):
# its tests then skip, saying so (tests/test_gate_triton36.py).
INSTALL_FAILED = 75
_jobs: dict[str, tuple[subprocess.Popen, object, object, list[str]]] = {}
_dirs: list[str] = []


def _triton_version(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"cannot import triton: {out.stderr[-2000:]}")
    return out.stdout.strip()


def _triton36_command() -> tuple[list[str], dict]:
    """The gate's Hopper-variant rows under triton 3.6.0: this environment's triton if it is that
    one, else the one in $FASTRES_TRITON36_DIR, else 3.6.0 installed (no dependencies) into a
    folder of its own; PYTHONPATH puts that folder before this environment's
    (tests/test_gate_triton36.py). Exit INSTALL_FAILED when pip cannot install it."""
    env = gate_env()
    check = [sys.executable, "-m", "fastres", "check", "--target", "sm_90", "--family", TRITON36_FAMILIES, "--json",
             "--no-progress"]
    if _triton_version(env) == TRITON36:
        return check, env
    given = os.environ.get(TRITON36_DIR_ENV)
    if given:
        env["PYTHONPATH"] = os.pathsep.join([given, env["PYTHONPATH"]])
        return check, env
    import shlex
    import tempfile

    folder = tempfile.mkdtemp(prefix="fastres-triton36-")
    _dirs.append(folder)
    env["PYTHONPATH"] = os.pathsep.join([folder, env["PYTHONPATH"]])
    # Offline, pip fails at once with one retry rather than after minutes of them.
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--retries", "1", "--timeout", "30", "--target", folder, f"triton=={TRITON36}"]
    # pip's output goes to stderr, so that stdout is the gate's JSON alone
    script = f"{shlex.join(install)} 1>&2 || exit {INSTALL_FAILED}; {shlex.join(check)}"
    return ["/bin/sh", "-c", script], env


# The lowest CPU priority for the gate's runs (their compile workers and ptxas inherit it). The
# interpreter tests run on one thread most of the time. At equal priority the gate's four
# processes took four fifths of a 2-core machine from them until the gate was done, and then
# the tests went on alone on one core: about tests + 3/8 gate in all (CPU seconds). At the
# lowest priority the tests keep a whole core and the gate takes every cycle they leave, so
# both cores stay busy to the end: about (gate + tests) / 2 where the gate is the longer.
BACKGROUND_NICE = 19


def _background_priority() -> None:
    os.nice(BACKGROUND_NICE)


def start_background(name: str) -> None:
    """Start the named long run ("gate_all" or "triton36") unless it is running already."""
    if name in _jobs:
        return
    import tempfile

    if name == "gate_all":
        argv, env = [sys.executable, *GATE_ALL], gate_env()
    elif name == "triton36":
        argv, env = _triton36_command()
    else:
        raise ValueError(f"no background run {name!r}")
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err, preexec_fn=_background_priority)
    _jobs[name] = (proc, out, err, argv)


def background_result(name: str, timeout: float) -> subprocess.CompletedProcess:
    """Wait for the named run (started now if it was not) and return what it printed."""
    start_background(name)
    proc, out, err, argv = _jobs.pop(name)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode(errors="replace"))
        f.close()
    return subprocess.CompletedProcess(argv, proc.returncode, texts[0], texts[1])


def stop_background() -> None:
    """End whatever is still running (a run whose tests were deselected or never reached)."""
    import shutil

    for proc, out, err, _ in _jobs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
    _jobs.clear()
    for d in _dirs:
        shutil.rmtree(d, ignore_errors=True)
    _dirs.clear()
