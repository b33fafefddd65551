"""Ray for fastres: importing it, connecting to a cluster (or starting a local one), and what
each actor (Ray Data) or replica (Ray Serve) asks for and is given.

Ray's defaults that would surprise a fastres user, and what this module does about them:

- A local cluster starts a dashboard web server: never here (include_dashboard=False; its
  head process and the per-node agent still run, with ports of their own: docs/serving.md's
  Security section lists what listens where).
- A worker does not get the driver's environment on a cluster started elsewhere: whatever
  the engine reads from its environment (TRITON_INTERPRET, FASTRES_CACHE_DIR) is given to
  every actor and replica through ``runtime_env={"env_vars": ...}``.
- ``ray.serve``'s import fails under ``python -W error``: its pydantic models pass a keyword
  pydantic 2 deprecates. `import_serve` silences that one warning class for the import.
- Ray's token authentication: `auth_mode` says what a command runs with, and a command
  that would run without it (``RAY_AUTH_MODE=disabled``) does so only when asked.
- Ray writes the token file it generates (``~/.ray/auth_token``) with the process's umask,
  usually readable by every user of the machine: `secure_token_file` creates it first, with
  mode 0600, or takes the group's and others' permissions off an existing one.
- Usage reporting is left to the user (docs/serving.md says how); the tests turn it off.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import stat
import warnings
from pathlib import Path
from types import ModuleType

from ..errors import first_line

INSTALL_HINT = "pip install 'fastres[ray]'"
# What the engine reads from its environment, so every worker must be handed it.
FORWARDED_ENV = ("FASTRES_CACHE_DIR",)


class RayNotInstalled(ImportError):
    """Ray (or the part of it a command needs) is not installed."""


def require_ray(what: str = "this") -> ModuleType:
    """The ray module; RayNotInstalled (saying how to install it) without the extra."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalled(f"{what} needs Ray: {INSTALL_HINT}") from None
    return ray


def import_serve(what: str = "fastres serve") -> ModuleType:
    """ray.serve, importable under ``-W error``: Serve declares its pydantic models with extra
    keyword arguments to ``Field``, which pydantic 2 reports as PydanticDeprecatedSince20."""
    require_ray(what)
    with warnings.catch_warnings():
        try:
            from pydantic.warnings import PydanticDeprecatedSince20

            warnings.simplefilter("ignore", PydanticDeprecatedSince20)
        except ImportError:  # no pydantic at all: the import below says what is missing
            pass
        try:
            from ray import serve
        except ImportError as exc:
            raise RayNotInstalled(f"{what} needs Ray Serve ({exc.name or exc} is missing): {INSTALL_HINT}") from None
    return serve


AUTH_ENV = "RAY_AUTH_MODE"
NO_AUTH_WARNING = ("Ray's token authentication is off (RAY_AUTH_MODE=disabled): anyone who can reach this "
                   "cluster's ports (GCS, raylet, workers, Serve's gRPC ports, on every interface) can run code in "
                   "it, and Serve's replicas unpickle what they receive")


def auth_disabled(environ: dict | None = None) -> bool:
    """Whether Ray would run without token authentication here (RAY_AUTH_MODE=disabled)."""
    environ = os.environ if environ is None else environ
    return environ.get(AUTH_ENV, "").strip().lower() == "disabled"


def has_token_auth() -> bool:
    """Whether this Ray has token authentication (RAY_AUTH_MODE=token)."""
    try:
        import ray._private.authentication.authentication_token_setup  # noqa: F401
    except ImportError:
        return False
    return True


def set_auth_mode(mode: str) -> None:
    """RAY_AUTH_MODE=mode ("token" or "disabled") for this process and the processes it
    starts. Ray reads its configuration once, at import: like Ray's own switch to token mode
    for a new local cluster (``_enable_token_auth``), the configuration is read again after
    the change."""
    if os.environ.get(AUTH_ENV) == mode:
        return
    os.environ[AUTH_ENV] = mode
    if has_token_auth():
        from ray._raylet import Config

        Config.initialize("")


def token_path(environ: dict | None = None) -> Path | None:
    """Where Ray reads its token (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token); None when the
    token is given in RAY_AUTH_TOKEN itself."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_TOKEN"):
        return None
    return Path(environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def secure_token_file(environ: dict | None = None) -> tuple[Path | None, str]:
    """The token file of a cluster started here, readable by its owner only: created (mode
    0600, 256 random bits as Ray's own generator makes them) when missing, so Ray does not
    write it world-readable; an existing one's group and other permissions taken off.
    Returns (path, what was done: "created", "made private", "private", or "in RAY_AUTH_TOKEN")."""
    path = token_path(environ)
    if path is None:
        return None, "in RAY_AUTH_TOKEN"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return path, "created"
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
        return path, "made private"
    return path, "private"


def import_data(what: str = "fastres predict --ray") -> ModuleType:
    """ray.data; RayNotInstalled without it (or without pyarrow, which it needs)."""
    require_ray(what)
    try:
        import ray.data
    except ImportError as exc:
        raise RayNotInstalled(f"{what} needs Ray Data ({exc.name or exc} is missing): {INSTALL_HINT}") from None
    return ray.data


def for_workers(path):
    """A file argument as a worker must see it: absolute where it exists here (a worker's
    directory is not the driver's), else as given (a path only the cluster's nodes have)."""
    if isinstance(path, (str, os.PathLike)) and os.path.exists(path):
        return os.path.abspath(path)
    return path


@dataclasses.dataclass(frozen=True)
class Placement:
    """What one actor or replica asks Ray for and runs with: one GPU (the engine on "cuda"),
    or CPUs only, the engine on "cpu" through triton's interpreter; `env` reaches the worker
    through its runtime_env."""

    gpu: bool
    num_cpus: float
    env: dict[str, str]

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    def ray_options(self) -> dict:
        """Options for an actor (``ray_actor_options`` of a deployment, ``**ray_remote_args``
        of ``map_batches``)."""
        return {"num_gpus": 1 if self.gpu else 0, "num_cpus": self.num_cpus,
                "runtime_env": {"env_vars": dict(self.env)}}

    def describe(self) -> str:
        if self.gpu:
            return f"1 GPU and {self.num_cpus:g} CPU each"
        return f"{self.num_cpus:g} CPU each, through triton's CPU interpreter (no GPU in the cluster; slow)"


def placement_for(cluster_gpus: float, cluster_cpus: float, *, cpus: float | None = None,
                  environ: dict | None = None) -> Placement:
    """The Placement on a cluster with these totals. With GPUs: one per actor, and by default
    the cluster's CPUs per GPU (at least 1) for decoding; without: 1 CPU, under the
    interpreter. cpus: the CPUs per actor, overriding that."""
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in FORWARDED_ENV if name in environ}
    gpu = cluster_gpus >= 1
    if cpus is not None and cpus <= 0:
        raise ValueError(f"CPUs per actor must be > 0, got {cpus}")
    if gpu:
        # Stated, not inherited: a worker of a local cluster would see the driver's setting.
        env["TRITON_INTERPRET"] = "0"
        default = max(1, int(cluster_cpus // cluster_gpus))
    else:
        env["TRITON_INTERPRET"] = "1"
        default = 1
    return Placement(gpu=gpu, num_cpus=float(cpus if cpus is not None else default), env=env)


def cluster_placement(*, cpus: float | None = None) -> Placement:
    """The Placement on the cluster this process is connected to."""
    import ray

    total = ray.cluster_resources()
    return placement_for(total.get("GPU", 0.0), total.get("CPU", 1.0), cpus=cpus)


STARTED, CONNECTED, ALREADY = "started", "connected", "already connected"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A host:port address where nothing listens: ConnectionError now (ray.init would retry
    for minutes). "auto" and ray:// addresses are left to Ray."""
    import re
    import socket

    m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", address)
    if m is None:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"cannot connect to the Ray cluster at {address}: "
                              f"{exc.strerror or type(exc).__name__} (is a Ray head node running there?)") from None


def _same_address(a: str, b: str) -> bool:
    """Whether host:port addresses `a` and `b` name the same endpoint (host names resolved)."""
    import socket

    def key(address: str):
        host, _, port = address.rpartition(":")
        try:
            host = socket.gethostbyname(host.strip("[]"))
        except OSError:
            pass
        return host, port

    return a == b or key(a) == key(b)


def connect(address: str | None = None, *, num_cpus: int | None = None, temp_dir: str | None = None,
            log_to_driver: bool = True) -> str:
    """Connect this process to the Ray cluster at `address` (host:port, "auto" for the one
    `ray start` runs on this machine, ray://host:port for Ray Client; default $RAY_ADDRESS),
    or, without one, start a local cluster (no dashboard). Nothing when Ray is already
    initialized, unless `address` names another cluster (ConnectionError). log_to_driver=False
    keeps the workers' output out of this process's stdout and stderr (it stays in the
    cluster's log files): Ray prints a worker's stdout on the driver's.
    Returns STARTED (this call started a cluster: ray.shutdown() stops it), CONNECTED or
    ALREADY (initialized before: the caller leaves it so). Raises RayNotInstalled, or
    ConnectionError when the address has no cluster."""
    ray = require_ray("--ray" if address is None else f"--address {address}")
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address and address != "auto" and not address.startswith("ray://") and not _same_address(address, current):
            # Ray keeps one connection per process: the work would silently run elsewhere.
            raise ConnectionError(f"cannot connect to the Ray cluster at {address}: this process is already "
                                  f"connected to the one at {current} (ray.shutdown() first)")
        return ALREADY
    if not address:  # (an address given was probed above)
        address = os.environ.get("RAY_ADDRESS") or None
        if address:
            _check_reachable(address)
    if address:
        try:
            ray.init(address=address, log_to_driver=log_to_driver)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
            raise ConnectionError(f"cannot connect to the Ray cluster at {address}: "
                                  f"{first_line(exc, typed=False)}") from None
        return CONNECTED
    # address="local": a cluster of our own, even where `ray start` left one running.
    if not auth_disabled() and has_token_auth():
        # Token authentication, as Ray 2.60 starts a local cluster by default, stated (for this
        # process and those it starts) so that no Ray version or leftover state turns it off.
        set_auth_mode("token")
        secure_token_file()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir,
             log_to_driver=log_to_driver)
    return STARTED


def disconnect(how: str) -> None:
    """Undo `connect` (stopping the cluster it started, with every process of it)."""
    import ray

    if how != ALREADY and ray.is_initialized():
        ray.shutdown()
