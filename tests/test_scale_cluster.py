"""fastres.scale.cluster: what actors and replicas ask for and are given; the core package
never importing ray; Serve importable under warnings-as-errors; the test cluster's workers
not inheriting TRITON_INTERPRET (so the other scale tests show the runtime_env delivers it);
the token file of a cluster started here readable by its owner only; a process already
connected never silently uses its cluster for an address that names another."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastres.scale.cluster import RayNotInstalled, for_workers, placement_for, require_ray
from helpers import ON_GPU
from scale_helpers import ray_or_skip

REPO = Path(__file__).resolve().parents[1]


def test_placement_on_a_gpu_cluster():
    p = placement_for(4, 64, environ={"FASTRES_CACHE_DIR": "/cache", "TRITON_INTERPRET": "1", "HOME": "/root"})
    assert (p.gpu, p.device, p.num_cpus) == (True, "cuda", 16.0)  # the cluster's CPUs per GPU, to decode
    # stated, not inherited; the tuning cache passed on; nothing else
    assert p.env == {"FASTRES_CACHE_DIR": "/cache", "TRITON_INTERPRET": "0"}
    assert p.ray_options() == {"num_gpus": 1, "num_cpus": 16.0,
                               "runtime_env": {"env_vars": {"FASTRES_CACHE_DIR": "/cache", "TRITON_INTERPRET": "0"}}}
    assert placement_for(8, 4, environ={}).num_cpus == 1.0 and placement_for(8, 64, cpus=2, environ={}).num_cpus == 2.0
    assert "1 GPU and 16 CPU each" == p.describe()


def test_placement_without_gpus_is_the_interpreter():
    p = placement_for(0, 2, environ={})
    assert (p.gpu, p.device, p.num_cpus, p.env) == (False, "cpu", 1.0, {"TRITON_INTERPRET": "1"})
    assert p.ray_options()["num_gpus"] == 0 and "through triton's CPU interpreter" in p.describe()
    with pytest.raises(ValueError, match="CPUs per actor must be > 0, got 0"):
        placement_for(0, 2, cpus=0, environ={})


def test_files_as_workers_see_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"")
    assert for_workers("w.pth") == str(tmp_path / "w.pth")
    assert for_workers("/on/the/nodes/w.pth") == "/on/the/nodes/w.pth"
    assert for_workers(None) is None and for_workers(["a", "b"]) == ["a", "b"]


def test_without_ray_the_message_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray now fails as if it were missing
    with pytest.raises(RayNotInstalled, match=r"^fastres serve needs Ray: pip install 'fastres\[ray\]'$"):
        require_ray("fastres serve")


# The child: the core package, its whole CLI and the timm / transformers sources load without
# ray, timm or transformers (those are imported only for a model of theirs); then, with every
# warning an error (as `python -W error` makes them), the Ray modules import.
CHILD = r"""
import json, sys, warnings
import fastres, fastres.cli, fastres.predict.cli, fastres.scale, fastres.scale.cli
fastres.cli.build_parser()
fastres.Predictor, fastres.from_timm, fastres.from_transformers, fastres.convert
import fastres.sources.hub, fastres.ops
optional = ("ray", "timm", "transformers")
core = sorted(m for m in sys.modules if m.split(".")[0] in optional)
warnings.simplefilter("error")
ok = True
try:
    import fastres.scale.serve, fastres.scale.data
except ModuleNotFoundError as exc:
    ok = f"missing {exc.name}"
print(json.dumps({"core": core, "ray_modules": ok}))
"""


def test_core_never_imports_ray_and_serve_imports_under_warnings_as_errors():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["core"] == [], f"importing fastres (and its CLI) imported {got['core']}"
    if got["ray_modules"] is not True:
        pytest.skip(f"ray is not installed ({got['ray_modules']}): pip install 'fastres[ray]'")


def test_workers_do_not_inherit_triton_interpret(ray_cluster):
    """The cluster's workers were started without it: only a runtime_env gives it to them."""
    if ON_GPU:
        pytest.skip("on a GPU the actors run compiled kernels: there is no TRITON_INTERPRET to deliver")
    ray = ray_or_skip()
    from fastres.scale.cluster import cluster_placement

    assert os.environ.get("TRITON_INTERPRET") == "1"  # the driver has it (conftest.py)
    getenv = ray.remote(os.getenv)
    assert ray.get(getenv.remote("TRITON_INTERPRET"), timeout=120) is None
    placement = cluster_placement()
    assert not placement.gpu and placement.env["TRITON_INTERPRET"] == "1"
    given = getenv.options(runtime_env=placement.ray_options()["runtime_env"])
    assert ray.get(given.remote("TRITON_INTERPRET"), timeout=120) == "1"


def test_an_address_is_honoured_while_already_connected(ray_cluster):
    """Connected already (the shared cluster): its own address, by name or number, and "auto"
    reuse the connection; a closed port is refused as without a connection; a port where
    something else listens is refused, naming both clusters."""
    import socket

    from fastres.scale.cluster import ALREADY, connect
    from scale_helpers import free_port

    ray = ray_or_skip()
    current = ray.get_runtime_context().gcs_address
    port = current.rpartition(":")[2]
    assert connect(current) == connect(f"localhost:{port}") == connect("auto") == connect() == ALREADY
    closed = free_port()
    with pytest.raises(ConnectionError, match=rf"at 127.0.0.1:{closed}: Connection refused"):
        connect(f"127.0.0.1:{closed}")
    with socket.create_server(("127.0.0.1", 0)) as other:
        elsewhere = f"127.0.0.1:{other.getsockname()[1]}"
        with pytest.raises(ConnectionError, match=rf"at {elsewhere}: this process is already connected to the one "
                                                  rf"at {current}"):
            connect(elsewhere)
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == current


def test_the_token_file_is_private(tmp_path):
    import os
    import stat

    from fastres.scale.cluster import secure_token_file

    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "ray" / "auth_token")}
    path, done = secure_token_file(env)
    assert done == "created" and len(path.read_text()) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text()
    os.chmod(path, 0o644)
    assert secure_token_file(env) == (path, "made private") and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secure_token_file(env) == (path, "private") and path.read_text() == token
    assert secure_token_file({"RAY_AUTH_TOKEN": "abc"}) == (None, "in RAY_AUTH_TOKEN")
