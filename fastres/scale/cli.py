"""The command line on Ray: `fastres serve` (Ray Serve, HTTP, dynamic batching) and the `--ray`
path of `fastres predict` (Ray Data). Both connect to the cluster at --address (default
$RAY_ADDRESS) or start a local one, check the weights and options on the driver first (a
mistake is one line and exit 2 before any actor starts), and never print a traceback for one.
Nothing here imports ray until a command runs."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from ..predict.options import DTYPE_NAMES, add_preprocess_argument
from .batcher import BODY_TIMEOUT_S, DRAIN_S, TIMEOUT_S, WATCHDOG_FACTOR, WATCHDOG_MIN_S
from ..errors import first_line

DEFAULT_PORT = 8000
DEFAULT_GRPC_PORT = 8001


def configure(p: argparse.ArgumentParser) -> None:
    """`fastres serve`'s options."""
    p.add_argument("--weights", metavar="FILE", required=True,
                   help="a file written by `fastres convert`, or a torchvision checkpoint (.pth); readable at this "
                        "path on every node that runs a replica")
    p.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy listens on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    p.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                   help=f"gRPC port of the Open Inference Protocol (default {DEFAULT_GRPC_PORT}, as Triton's; 0: no gRPC)")
    p.add_argument("--model-name", default=None,
                   help="the model's name in the Open Inference Protocol's paths and metrics (default: its "
                        "architecture, e.g. resnet50)")
    p.add_argument("--replicas", type=int, default=1, help="replicas, one GPU each (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="most requests in one batch (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to fill its batch (default 5 ms)")
    p.add_argument("--resize", type=int, default=None,
                   help="shorter side before the crop (default: the torchvision weights' own, else 256)")
    p.add_argument("--crop", type=int, default=None, help="center crop (default: the weights' own, else 224)")
    p.add_argument("--topk", type=int, default=5, help="classes per answer, best first (default 5)")
    p.add_argument("--labels", metavar="FILE", default=None,
                   help="class names, one per line (default: ImageNet's for 1000 classes, else the index)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="engine dtype (default: a converted file's own; float16 for a .pth)")
    p.add_argument("--max-queue", type=int, default=None,
                   help="requests that may wait per replica behind the running batch; more get 503 with Retry-After "
                        "at once (default 4 x --max-batch)")
    p.add_argument("--timeout-s", type=float, default=TIMEOUT_S,
                   help="a request not answered within this many seconds of reaching its replica gets 504 "
                        f"(default {TIMEOUT_S:g})")
    p.add_argument("--body-timeout-s", type=float, default=BODY_TIMEOUT_S,
                   help="a request body not received in full within this many seconds gets 408, before it takes a "
                        f"place in the queue (default {BODY_TIMEOUT_S:g})")
    p.add_argument("--drain-s", type=float, default=DRAIN_S,
                   help="on SIGINT or SIGTERM: new requests get 503, those in flight have this many seconds to be "
                        f"answered (then 503), then the server exits (default {DRAIN_S:g})")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    p.add_argument("--watchdog-factor", type=float, default=WATCHDOG_FACTOR,
                   help="a batch running longer than this many times its size's usual time (at least "
                        f"--watchdog-min-s) marks the replica unhealthy: Serve replaces it, and the requests it holds "
                        f"get 503 (default {WATCHDOG_FACTOR:g}; 0: no watchdog)")
    p.add_argument("--watchdog-min-s", type=float, default=WATCHDOG_MIN_S,
                   help=f"the watchdog's shortest limit in seconds (default {WATCHDOG_MIN_S:g})")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse images with more pixels (default 89478485, PIL's decompression-bomb limit)")
    add_preprocess_argument(p)
    p.add_argument("--address", default=None,
                   help="the Ray cluster to serve on (host:port, auto, ray://...; default $RAY_ADDRESS, else a new "
                        "local cluster)")
    p.add_argument("--insecure-no-ray-auth", action="store_true",
                   help="run Ray without token authentication (RAY_AUTH_MODE=disabled): anyone who reaches the "
                        "cluster's ports can run code in it; see docs/serving.md, Security")


def _user_error(message: str):
    from ..errors import UserError

    return UserError(message)


def _positive(args, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise _user_error(f"--{name.replace('_', '-')} must be >= 1, got {value}")



def check_model(args):
    """A CPU Predictor of the weights and options, built on the driver only to check them:
    a bad file, a topk over the classes or a labels file of the wrong length is one line
    here, not a replica that fails to start (a bfloat16 run is checked in the file's own
    dtype: the CPU cannot hold a bfloat16 engine; whether the cluster has GPUs is checked
    once connected)."""
    from ..predict.labels import LabelsError
    from ..predict.predictor import Predictor
    from ..weights import WeightsError

    dtype = None if args.dtype in (None, "bfloat16") else args.dtype
    try:
        return Predictor(args.weights, device="cpu", dtype=dtype, topk=args.topk, resize=args.resize, crop=args.crop,
                         labels=args.labels, cuda_graph=False)
    except (WeightsError, LabelsError, FileNotFoundError, ValueError, TypeError) as exc:
        raise _user_error(first_line(exc, typed=False)) from None


def _connect(address: str | None, *, log_to_driver: bool, command: str, no_auth: bool | None = None) -> str:
    """Connect (or start a local cluster). no_auth: the user's --insecure-no-ray-auth (None: a
    command without it, where RAY_AUTH_MODE=disabled is the asking). Auth off is never a
    default: RAY_AUTH_MODE=disabled without the flag is refused, and with it, a warning says
    what it exposes."""
    from .cluster import (AUTH_ENV, NO_AUTH_WARNING, STARTED, RayNotInstalled, auth_disabled, connect,
                          set_auth_mode, token_path)

    if no_auth:
        set_auth_mode("disabled")
    elif auth_disabled() and no_auth is not None:
        raise _user_error(f"{AUTH_ENV}=disabled turns off Ray's token authentication: pass --insecure-no-ray-auth "
                          "to run so anyway (see docs/serving.md, Security), or unset it")
    try:
        how = connect(address, log_to_driver=log_to_driver)
    except (RayNotInstalled, ConnectionError) as exc:
        raise _user_error(first_line(exc, typed=False)) from None
    if no_auth or (how == STARTED and auth_disabled()):
        # Asked for, or a cluster started here without it (a cluster started elsewhere is its
        # owner's choice: this process follows it).
        print(f"fastres {command}: warning: {NO_AUTH_WARNING}", file=sys.stderr, flush=True)
    path = token_path()
    if how == STARTED and not auth_disabled() and path is not None and path.exists():
        print(f"fastres {command}: Ray token authentication on; its token is in {path} (mode "
              f"{path.stat().st_mode & 0o777:o})", file=sys.stderr, flush=True)
    return how


def _placement(args):
    from .cluster import cluster_placement

    placement = cluster_placement()
    if args.dtype == "bfloat16" and not placement.gpu:
        raise _user_error("bfloat16 needs a GPU, and this Ray cluster has none: triton's CPU interpreter multiplies "
                          "bf16 wrongly (triton issue 11584)")
    return placement


# -- fastres serve ----------------------------------------------------------------------------

def main(args) -> int:
    """`fastres serve`: deploy, say where it listens, serve until SIGINT or SIGTERM, then drain
    (new requests get 503, those in flight are answered within --drain-s, or get 503) and take
    the application down (and Serve with it, once no other application is left)."""
    from .cluster import STARTED, RayNotInstalled, disconnect, import_serve, require_ray

    _positive(args, ("replicas", "max_batch", "resize", "crop", "topk", "max_pixels", "max_queue"))
    if not 1 <= args.port <= 65535:
        raise _user_error(f"--port must be between 1 and 65535, got {args.port}")
    if not 0 <= args.grpc_port <= 65535 or args.grpc_port == args.port:
        raise _user_error(f"--grpc-port must be between 0 (no gRPC) and 65535, and not --port, got {args.grpc_port}")
    if args.watchdog_factor < 0 or not args.watchdog_min_s > 0:
        raise _user_error(f"--watchdog-factor must be >= 0 and --watchdog-min-s > 0, got {args.watchdog_factor} and "
                          f"{args.watchdog_min_s}")
    if args.model_name is not None and not args.model_name.strip("/") or "/" in (args.model_name or ""):
        raise _user_error(f"--model-name must be a non-empty name without '/', got {args.model_name!r}")
    if args.batch_wait_ms < 0:
        raise _user_error(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    for name in ("max_body_mb", "timeout_s", "body_timeout_s", "drain_s"):
        if not getattr(args, name) > 0:
            raise _user_error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    try:
        require_ray("fastres serve")
        serve = import_serve("fastres serve")
    except RayNotInstalled as exc:
        raise _user_error(str(exc)) from None
    from ..batch_shapes import MAX_BATCH_LIMIT
    from .serve import APP_NAME, app, default_queue, drain_app, grpc_options

    if args.grpc_port:
        try:
            import tritonclient.grpc.service_pb2  # noqa: F401 - the replicas parse gRPC messages with it
        except ImportError:
            raise _user_error("gRPC needs tritonclient's generated service: pip install 'tritonclient[grpc]' (the "
                              "ray extra has it), or pass --grpc-port 0 to serve HTTP only") from None

    if args.max_batch > MAX_BATCH_LIMIT:
        raise _user_error(f"--max-batch must be at most {MAX_BATCH_LIMIT}, got {args.max_batch}")
    max_queue = args.max_queue or default_queue(args.max_batch)
    if max_queue < args.max_batch:
        raise _user_error(f"--max-queue must be at least --max-batch ({args.max_batch}): the next batch gathers in "
                          f"the queue, got {max_queue}")
    model = check_model(args)
    how = _connect(args.address, log_to_driver=True, command="serve", no_auth=args.insecure_no_ray_auth)
    # From here on (after ray.init, which installs a SIGTERM handler of its own that aborts the
    # process) a signal asks for a stop; it is acted on once the application is up (or has
    # failed to start), so that what was started is always drained and taken down.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if how == STARTED:
        _check_port_free(args.host, args.port, how)
        if args.grpc_port:
            _check_port_free("0.0.0.0", args.grpc_port, how)  # Serve's gRPC proxy binds every interface
    deployed = False
    try:
        placement = _placement(args)
        application = app(args.weights, replicas=args.replicas, max_batch=args.max_batch,
                          batch_wait_ms=args.batch_wait_ms, max_queue=max_queue, timeout_s=args.timeout_s,
                          body_timeout_s=args.body_timeout_s, drain_s=args.drain_s,
                          max_body=int(args.max_body_mb * 1e6), placement=placement, dtype=args.dtype,
                          topk=args.topk, resize=args.resize, crop=args.crop, labels=args.labels,
                          preprocess=args.preprocess, model_name=args.model_name,
                          watchdog_factor=args.watchdog_factor, watchdog_min_s=args.watchdog_min_s,
                          **({"max_pixels": args.max_pixels} if args.max_pixels else {}))
        if args.grpc_port:
            print(f"fastres serve: note: gRPC listens on port {args.grpc_port} of every interface, whatever --host "
                  "says (Ray Serve's gRPC proxy has no address option); --grpc-port 0 turns it off",
                  file=sys.stderr, flush=True)
        print(f"fastres serve: {args.replicas} replica(s) of {model.engine.arch} ({model.engine.num_classes} classes), "
              f"{placement.describe()}; batches of up to {args.max_batch}, {args.batch_wait_ms:g} ms wait; up to "
              f"{max_queue} requests queued per replica, {args.timeout_s:g} s deadline", file=sys.stderr, flush=True)
        serve.start(http_options={"host": args.host, "port": args.port},
                    **({"grpc_options": grpc_options(args.grpc_port)} if args.grpc_port else {}))
        deployed = True
        try:
            serve.run(application, name=APP_NAME, route_prefix="/")
        except Exception as exc:  # noqa: BLE001 - a replica that cannot start: its first line, not a traceback
            print(f"fastres serve: error: the application did not start: {first_line(exc, typed=False)}", file=sys.stderr)
            return 1
        if not stop.is_set():
            name = args.model_name or model.engine.arch
            grpc = f"; gRPC on {args.host}:{args.grpc_port}" if args.grpc_port else ""
            print(f"fastres serve: ready at http://{args.host}:{args.port}/predict (POST an image; GET /healthz, "
                  f"/metrics); Open Inference Protocol: POST /v2/models/{name}/infer{grpc}; Ctrl-C stops",
                  file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print(f"fastres serve: stopping: new requests get 503; those in flight have {args.drain_s:g} s",
              file=sys.stderr, flush=True)
        replicas, left, errors = drain_app(APP_NAME, args.replicas, args.drain_s)
        for error in errors:
            print(f"fastres serve: a replica did not drain: {error}", file=sys.stderr)
        print(f"fastres serve: drained {replicas} of {args.replicas} replica(s)"
              + (f"; {left} request(s) not answered in time got 503" if left else ""), file=sys.stderr, flush=True)
        return 0
    finally:
        if deployed:
            _take_down(serve, APP_NAME, how == STARTED)
        disconnect(how)


def _check_port_free(host: str, port: int, how: str) -> None:
    """On a cluster this command started here, the proxy binds host:port on this machine:
    a port in use would leave it failing to start, over and over, so say it now."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            from .cluster import disconnect

            disconnect(how)
            raise _user_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _take_down(serve, name: str, started: bool) -> None:
    try:
        if started:
            serve.shutdown()
            return
        serve.delete(name)
        if not serve.status().applications:
            serve.shutdown()  # Serve with no application left would only hold the port
    except Exception as exc:  # noqa: BLE001 - leaving anyway; say what was left behind
        print(f"fastres serve: could not take the application down: {first_line(exc, typed=False)}", file=sys.stderr)


# -- fastres predict --ray --------------------------------------------------------------------

def predict_on_ray(args, files) -> int:
    """`fastres predict --ray`: the same lines as `fastres predict`, in input order, from a pool
    of Ray Data actors (one per GPU of the cluster, or one on a CPU under the interpreter)."""
    from ..predict.output import open_writer
    from .cluster import RayNotInstalled, disconnect, import_data, require_ray

    if args.device is not None:
        raise _user_error("--device does not go with --ray: each actor runs on the GPU Ray gives it (on a cluster "
                          "without GPUs, on its CPU through the interpreter)")
    _positive(args, ("actors",))
    try:
        require_ray("fastres predict --ray")
        import_data("fastres predict --ray")
    except RayNotInstalled as exc:
        raise _user_error(str(exc)) from None
    from .data import predict_files

    model = check_model(args)
    # Workers' output stays in the cluster's logs: Ray prints a worker's stdout on the
    # driver's, where it would mix with the JSON lines.
    how = _connect(args.address, log_to_driver=False, command="predict")
    import ray

    failed = 0
    t0 = time.perf_counter()
    try:
        placement = _placement(args)
    except BaseException:
        disconnect(how)
        raise
    try:
        actors = args.actors or (max(1, int(ray.cluster_resources().get("GPU", 0))) if placement.gpu else 1)
        options = dict(batch_size=args.batch, actors=actors, placement=placement, dtype=args.dtype, topk=args.topk,
                       resize=args.resize, crop=args.crop, labels=args.labels, decode=args.decode,
                       workers=args.workers, preprocess=args.preprocess)
        if args.max_pixels:
            options["max_pixels"] = args.max_pixels
        print(f"fastres predict: {len(files)} files, {model.engine.arch} ({model.engine.num_classes} classes), "
              f"resize {model.transform.resize}, crop {model.transform.crop}, on {actors} Ray actor(s), "
              f"{placement.describe()}", file=sys.stderr, flush=True)
        progress = not args.no_progress  # a bar on a terminal, else a line every few seconds
        with open_writer(args.out, args.topk) as writer:
            for pred in _progress(predict_files(files, args.weights, progress=False, **options), len(files), progress):
                writer.write(pred)
                writer.flush()
                failed += not pred.ok
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        raise _user_error(f"cannot write {args.out or 'stdout'}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - never a traceback: what was written stays written
        print(f"fastres predict: error: {first_line(exc)}", file=sys.stderr)
        return 1
    finally:
        disconnect(how)
    wall = time.perf_counter() - t0
    errors = f" ({failed} failed)" if failed else ""
    rate = "none classified" if failed >= len(files) else f"{len(files) / wall:.1f} img/s"
    print(f"{len(files)} image{'s' if len(files) != 1 else ''}{errors} in {wall:.2f} s, {rate} on Ray", file=sys.stderr)
    return 1 if failed else 0


def _progress(preds, total: int, progress: bool):
    from ..progress import Progress

    with Progress(total, desc="classifying", unit="img", enabled=progress) as bar:
        for pred in preds:
            bar.update()
            yield pred
