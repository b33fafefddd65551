"""One local Ray cluster for the scale tests (2 CPUs, no dashboard, its temp dir in the test
run's tmp), started by the first test that needs it and stopped after the last one in a row
(conftest.py), with the PIDs of every process it started, so that a test can check none is
left. Ray's defaults that would surprise are set here, in the code, not in a shell:

- RAY_USAGE_STATS_ENABLED=0: no usage report is sent;
- RAY_AUTH_MODE=disabled: no token file is written to ~/.ray by the first ray.init;
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: every Ray process on 127.0.0.1;
- TRITON_INTERPRET is taken out of the environment while the cluster starts, so its workers
  do not inherit it: the engine's actors get it only through their runtime_env, as on a
  cluster started elsewhere.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    # A single-machine cluster: Ray then gives every process 127.0.0.1, not this machine's
    # address, so all its traffic stays on the loopback interface. Ray reads this when it is
    # imported, hence at this module's import, before any test imports ray.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
os.environ.update(RAY_ENV)

try:
    # Imported now, while collecting: the console log handler that importing ray.data sets up
    # keeps the sys.stderr of that moment, and a test's captured stderr is closed when it ends.
    import ray.data  # noqa: F401
except ImportError:  # the scale tests skip, saying why
    pass
# <temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store: Ray's unix sockets, whose
# paths may be at most 107 bytes; this leaves room for the part Ray adds.
MAX_TEMP_DIR = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store") - 4


def ray_or_skip():
    """ray, or a skip saying why (the core package and its tests do not need it)."""
    return pytest.importorskip("ray", reason="ray is not installed: pip install 'fastres[ray]' (the test extra has it)")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc; zombies count as gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def is_ray(pid: int) -> bool:
    """Whether a process is one of Ray's (gcs_server, raylet, a worker or actor, an agent)."""
    try:
        return b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRay:
    """The cluster: `start` (a no-op while it runs), `address` for other drivers, `env` for
    their processes, `stop` (returns the PIDs it started that are still alive after)."""

    def __init__(self):
        self.address: str | None = None
        self.temp_dir: Path | None = None
        self.pids: set[int] = set()
        self._own_temp = False
        self._saved: dict[str, str | None] = {}

    @property
    def running(self) -> bool:
        return self.address is not None

    @property
    def env(self) -> dict[str, str]:
        """The environment for a process that joins the cluster (a CLI under test)."""
        return {**os.environ, **RAY_ENV, "RAY_ADDRESS": ""}

    def start(self, tmp_root: Path) -> "LocalRay":
        if self.running:
            return self
        ray = ray_or_skip()
        temp = tmp_root / "ray"
        if len(str(temp)) > MAX_TEMP_DIR:
            # pytest's tmp tree is too deep for Ray's socket paths: a short folder instead.
            temp, self._own_temp = Path(tempfile.mkdtemp(prefix="fr")), True
        temp.mkdir(parents=True, exist_ok=True)
        self.temp_dir = temp
        self._saved = {"RAY_ADDRESS": os.environ.pop("RAY_ADDRESS", None)}
        interpret = os.environ.pop("TRITON_INTERPRET", None)
        before = descendants(os.getpid())
        try:
            # configure_logging=False: Ray's handler would keep the stderr of the test that
            # started the cluster, which pytest closes when that test ends.
            ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(temp),
                           log_to_driver=False, configure_logging=False)
        finally:
            if interpret is not None:
                os.environ["TRITON_INTERPRET"] = interpret
        self.address = ctx.address_info["address"]
        self.pids = {p for p in descendants(os.getpid()) - before if is_ray(p)}
        return self

    def stop(self, timeout: float = 20.0) -> list[int]:
        """ray.shutdown(); the PIDs of this cluster still alive `timeout` seconds later (then
        killed, so that a failing test leaves nothing behind either)."""
        if not self.running:
            return []
        import ray

        # Workers, actors and Serve's processes started since: all below this process.
        self.pids |= {p for p in descendants(os.getpid()) if is_ray(p)}
        ray.shutdown()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(p) for p in self.pids):
            time.sleep(0.2)
        left = sorted(p for p in self.pids if alive(p))
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._saved.get("RAY_ADDRESS") is not None:
            os.environ["RAY_ADDRESS"] = self._saved["RAY_ADDRESS"]
        if self._own_temp and self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.address, self.pids, self._own_temp = None, set(), False
        return left


CLUSTER = LocalRay()


def start_serve(args: list[str], cwd: Path, env: dict, log: Path, timeout: float = 240):
    """`fastres serve ARGS` in its own process (stderr to `log`), returned once it says it is
    ready; a test failure with its log's tail if it exits or is not ready within `timeout` s."""
    import subprocess
    import sys

    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fastres", "serve", *args], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + timeout
    while "fastres serve: ready at" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"fastres serve did not get ready (exit {proc.poll()}):\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    return proc
