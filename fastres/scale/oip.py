"""The Open Inference Protocol (KServe v2) as Triton Inference Server speaks it, for
`fastres serve`: requests parsed into an `InferRequest`, logits encoded into answers, over
REST and gRPC, apart from Ray and from any server (no I/O here; imports numpy only, and
tritonclient's protobuf messages only inside the gRPC functions).

REST routes (`match`; HEAD is answered as GET, another method is a 405 with Allow):

    GET  /v2/health/live, /v2/health/ready              live, ready
    GET  /v2                                            server_metadata
    GET  /v2/models/{name}[/versions/{v}]               model_metadata
    GET  /v2/models/{name}[/versions/{v}]/ready         model_ready
    POST /v2/models/{name}[/versions/{v}]/infer         infer

The model: inputs ``IMAGE`` (BYTES [N], encoded image files) or ``PIXELS`` (UINT8
[N, crop, crop, 3], a preprocessed crop), exactly one per request, 1 <= N <= `ModelInfo.max_items`
(each image is one item of the replica's batcher, so N is not bound to its batch size); output
``LOGITS`` (FP32 [N, num_classes]), or with the classification extension (``"parameters":
{"classification": k}``) BYTES [N, k] of ``"score:index:label"``, best first, where the score is
the logit written as C's ``%f`` (Triton's ``std::to_string(float)``, src/classification.cc of
triton-inference-server/server), ``:label`` only where the model has labels, ties in index order.
REST bodies may be compressed (Content-Encoding gzip or deflate, inflated within the body limit)
and carry tensors as JSON ``data`` or after the JSON (binary tensor data extension); answers are
compressed when Accept-Encoding asks.

Errors: `OipError`, answered ``{"error": message}`` over REST (`http_error`) and as a gRPC
status with the message. Where Triton maps its own error codes, the same mapping
(src/http_server.cc ``HttpCodeFromError``, src/grpc/grpc_utils.cc ``CodeToStatus``):

    HTTP  gRPC                when
    400   INVALID_ARGUMENT    a malformed request: its JSON, shapes, datatypes, sizes, outputs
    404   NOT_FOUND           an unknown path, model or version
    405   UNIMPLEMENTED       a REST path asked with another method (Allow says which)
    408   DEADLINE_EXCEEDED   a REST body that did not arrive within its time
    413   RESOURCE_EXHAUSTED  a body over the limit, as sent or once inflated (gRPC's own code
                              for a message over its size limit)
    500   INTERNAL            a failure of the server
    503   UNAVAILABLE         not ready, draining, or the queue is full (Triton: UNAVAILABLE)
    504   DEADLINE_EXCEEDED   not answered within the server's timeout
"""
from __future__ import annotations

import gzip
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote

import numpy as np

from .. import __version__
from ..batch_shapes import MAX_BATCH_LIMIT

SERVER_NAME = "fastres"
EXTENSIONS = ("classification", "binary_tensor_data")
IMAGE, PIXELS, LOGITS = "IMAGE", "PIXELS", "LOGITS"
HEADER_LENGTH = "Inference-Header-Content-Length"
GRPC_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED",
              413: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class OipError(Exception):
    """A request answered with HTTP `status` (and its gRPC code, `grpc_code`, a
    ``grpc.StatusCode`` name: ``grpc.StatusCode[exc.grpc_code]``) and ``{"error": message}``;
    `headers` go with the REST answer (Allow, Retry-After)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})
        self.grpc_code = GRPC_CODES.get(status, "UNKNOWN")


def bad(message: str) -> OipError:
    return OipError(400, message)


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata says of the served model, and what requests are checked against:
    logits of `num_classes` classes from `crop`×`crop` pixels, `labels` (None or one per class),
    at most `max_items` images a request."""

    name: str
    num_classes: int
    crop: int
    labels: Sequence[str] | None = None
    max_items: int = MAX_BATCH_LIMIT
    version: str = "1"
    platform: str = "fastres"

    def __post_init__(self):
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.num_classes} classes")
        if self.max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {self.max_items}")


@dataclass
class RequestedOutput:
    """An output to answer: `class_count` k > 0 asks for the top k as strings (classification),
    0 for the tensor itself; `binary` (REST only) sends it after the JSON."""

    name: str = LOGITS
    binary: bool = False
    class_count: int = 0


@dataclass
class InferRequest:
    """A parsed inference request of `n` items: `images` (n encoded image files) or `pixels`
    (uint8 [n, crop, crop, 3], HWC), exactly one of them; `outputs` in the order to answer them."""

    id: str | None
    n: int
    images: list[bytearray] | None = None
    pixels: np.ndarray | None = None
    outputs: list[RequestedOutput] = field(default_factory=lambda: [RequestedOutput()])


def check_model(model: ModelInfo, name: str, version: str | None) -> None:
    """404 unless `name` (and `version`, where one is given) is the served model's."""
    if name != model.name:
        raise OipError(404, f"unknown model {name!r}: this server serves {model.name!r}")
    if version not in (None, "", model.version):
        raise OipError(404, f"model {name!r} has no version {version!r}: its versions are [{model.version!r}]")


# --- REST routes -------------------------------------------------------------------------

def match(method: str, path: str) -> tuple[str, str | None, str | None]:
    """(route, model name, version) of a REST request: route is one of live, ready,
    server_metadata, model_metadata, model_ready, infer (see the module's table); name and
    version are URL-decoded, None where the path has none. 404 for another path, 405 (with
    Allow) for another method."""
    parts = [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")]
    route, name, version = None, None, None
    if parts == ["v2"]:
        route = "server_metadata"
    elif parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
        route = parts[2]
    elif parts[:2] == ["v2", "models"] and len(parts) >= 3 and parts[2]:
        name, rest = parts[2], parts[3:]
        if rest[:1] == ["versions"] and len(rest) >= 2 and rest[1]:
            version, rest = rest[1], rest[2:]
        route = {(): "model_metadata", ("ready",): "model_ready", ("infer",): "infer"}.get(tuple(rest))
    if route is None:
        raise OipError(404, f"no route {method} {path}: this server answers GET /v2, /v2/health/live|ready, "
                            "/v2/models/{name}[/versions/{v}][/ready] and POST /v2/models/{name}[/versions/{v}]/infer")
    allowed = "POST" if route == "infer" else "GET"
    if method.upper() != allowed and not (allowed == "GET" and method.upper() == "HEAD"):
        raise OipError(405, f"{method} {path}: use {allowed}", {"Allow": allowed})
    return route, name, version


# --- metadata ----------------------------------------------------------------------------

def server_metadata() -> dict:
    """``GET /v2``: name, version and the extensions implemented."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def _tensors(model: ModelInfo) -> tuple[list[tuple], list[tuple]]:
    inputs = [(IMAGE, "BYTES", [-1]), (PIXELS, "UINT8", [-1, model.crop, model.crop, 3])]
    return inputs, [(LOGITS, "FP32", [-1, model.num_classes])]


def model_metadata(model: ModelInfo) -> dict:
    """``GET /v2/models/{name}``: its versions, platform, inputs and outputs (-1: any N)."""
    inputs, outputs = _tensors(model)
    as_json = lambda ts: [{"name": n, "datatype": d, "shape": s} for n, d, s in ts]  # noqa: E731
    return {"name": model.name, "versions": [model.version], "platform": model.platform,
            "inputs": as_json(inputs), "outputs": as_json(outputs)}


def grpc_server_metadata():
    """`server_metadata` as a ``ServerMetadataResponse``."""
    from tritonclient.grpc import service_pb2

    return service_pb2.ServerMetadataResponse(**server_metadata())


def grpc_model_metadata(model: ModelInfo):
    """`model_metadata` as a ``ModelMetadataResponse``."""
    from tritonclient.grpc import service_pb2

    inputs, outputs = _tensors(model)
    meta = lambda ts: [service_pb2.ModelMetadataResponse.TensorMetadata(name=n, datatype=d, shape=s)  # noqa: E731
                       for n, d, s in ts]
    return service_pb2.ModelMetadataResponse(name=model.name, versions=[model.version], platform=model.platform,
                                             inputs=meta(inputs), outputs=meta(outputs))


# --- inputs, whatever the transport --------------------------------------------------------

def _check_input(name: Any, datatype: Any, shape: Any, model: ModelInfo) -> int:
    """N, for an input whose name, datatype and shape are the model's."""
    if name not in (IMAGE, PIXELS):
        raise bad(f"unknown input {name!r}: this model takes {IMAGE} (BYTES [N], image files) "
                  f"or {PIXELS} (UINT8 [N, {model.crop}, {model.crop}, 3])")
    want_type, want_shape = ("BYTES", "[N]") if name == IMAGE else ("UINT8", f"[N, {model.crop}, {model.crop}, 3]")
    if datatype != want_type:
        raise bad(f"input {name} has datatype {datatype!r}: it must be {want_type}")
    if not (isinstance(shape, (list, tuple)) and all(type(d) is int for d in shape)):
        raise bad(f"input {name} has shape {shape!r}: it must be a list of integers, {want_shape}")
    shape = list(shape)
    if (len(shape) != 1) if name == IMAGE else (len(shape) != 4 or shape[1:] != [model.crop, model.crop, 3]):
        raise bad(f"input {name} has shape {shape}: it must be {want_shape}")
    if not 1 <= shape[0] <= model.max_items:
        raise bad(f"input {name} has shape {shape}: N must be between 1 and {model.max_items}")
    return shape[0]


def _images(elements: Sequence, n: int) -> list[bytearray]:
    if len(elements) != n:
        raise bad(f"input {IMAGE} has shape [{n}] but {len(elements)} elements")
    images = [bytearray(e) for e in elements]
    empty = [i for i, image in enumerate(images) if not image]
    if empty:
        raise bad(f"input {IMAGE}[{empty[0]}] is empty: each element must be an image file's bytes")
    return images


def _deserialize_bytes(raw: memoryview, n: int) -> list[bytearray]:
    """The elements of a BYTES tensor in binary form: each a 4-byte little-endian length, then its bytes."""
    elements, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw) or len(elements) == n:
            raise bad(f"input {IMAGE}'s binary data holds more than the {n} elements of its shape [{n}] "
                      f"(or ends within a length prefix, at byte {at} of {len(raw)})")
        (size,) = struct.unpack_from("<I", raw, at)
        if at + 4 + size > len(raw):
            raise bad(f"input {IMAGE}[{len(elements)}] declares {size} bytes but only {len(raw) - at - 4} remain")
        elements.append(raw[at + 4:at + 4 + size])
        at += 4 + size
    return _images(elements, n)


def _pixels(raw: memoryview | bytes, n: int, model: ModelInfo) -> np.ndarray:
    shape = (n, model.crop, model.crop, 3)
    if len(raw) != n * model.crop * model.crop * 3:
        raise bad(f"input {PIXELS} has shape {list(shape)} ({np.prod(shape)} bytes) but {len(raw)} bytes of data")
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()


def _request(req_id: str | None, inputs: list[tuple[str, int, Any]], outputs: list[RequestedOutput]) -> InferRequest:
    """An InferRequest from [(name, n, data)], which must hold exactly one input."""
    names = [name for name, _, _ in inputs]
    if len(inputs) != 1:
        raise bad(f"a request carries exactly one input, {IMAGE} or {PIXELS}; this one has {names or 'none'}")
    name, n, data = inputs[0]
    return InferRequest(id=req_id or None, n=n, images=data if name == IMAGE else None,
                        pixels=data if name == PIXELS else None, outputs=outputs)


def _output(name: Any, class_count: Any, binary: bool, model: ModelInfo, seen: set) -> RequestedOutput:
    """An output of the model, once; class_count None where classification is not asked for."""
    if name != LOGITS:
        raise bad(f"unknown output {name!r}: this model's output is {LOGITS} (FP32 [N, {model.num_classes}])")
    if name in seen:
        raise bad(f"output {name} is requested twice")
    seen.add(name)
    if class_count is not None and (type(class_count) is not int or not 1 <= class_count <= model.num_classes):
        raise bad(f"output {name}: classification {class_count!r} must be an integer between 1 and {model.num_classes}")
    return RequestedOutput(name, binary, class_count or 0)


# --- REST requests ---------------------------------------------------------------------------

def inflate(body: bytes | bytearray, encoding: str | None, limit: int) -> bytes | bytearray:
    """The body as sent before its Content-Encoding (gzip, deflate: zlib's format or raw;
    identity or none: as is), never more than `limit` bytes of it inflated (413 past them)."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in ("gzip", "deflate"):
        raise bad(f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or identity")
    for wbits in ((16 + zlib.MAX_WBITS,) if coding == "gzip" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)  # max_length bounds what a zip bomb allocates
        except zlib.error as exc:
            error = exc
            continue
        if len(out) > limit:
            raise OipError(413, f"the {coding} body inflates past the limit of {limit} bytes")
        if not inflater.eof:
            raise bad(f"the {coding} body is truncated ({len(body)} bytes inflate to an unfinished stream)")
        if inflater.unused_data:
            raise bad(f"the {coding} body has {len(inflater.unused_data)} bytes after its compressed stream")
        return out
    raise bad(f"the {coding} body does not inflate: {error}")


def _flatten(data: Any) -> Iterator:
    """The scalars of a JSON tensor's ``data``, flat or nested lists, in row-major order."""
    stack = [iter([data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def _json_input(name: str, n: int, data: Any, model: ModelInfo) -> Any:
    values = list(_flatten(data))
    if name == IMAGE:
        if not all(isinstance(v, str) for v in values):
            raise bad(f"input {IMAGE}'s JSON data must be strings (or send it as binary data)")
        return _images([v.encode() for v in values], n)
    if not all(type(v) is int and 0 <= v <= 255 for v in values):
        raise bad(f"input {PIXELS}'s JSON data must be integers from 0 to 255")
    return _pixels(bytes(values), n, model)


def parse_http_infer(body: bytes | bytearray, headers: Mapping[str, str], model: ModelInfo,
                     max_body: int) -> InferRequest:
    """A REST ``POST .../infer`` body, as sent with its `headers` (any case: Content-Encoding,
    Inference-Header-Content-Length), at most `max_body` bytes once inflated. The model's
    name and version come from the path: see `match` and `check_model`."""
    headers = {k.lower(): v for k, v in headers.items()}
    body = inflate(body, headers.get("content-encoding"), max_body)
    if not body:
        raise bad("empty body: POST an inference request's JSON")
    declared = headers.get(HEADER_LENGTH.lower())
    size = len(body)
    if declared is not None:
        if not (declared.strip().isdigit() and 0 < int(declared) <= len(body)):
            raise bad(f"{HEADER_LENGTH} {declared!r} must be the length of the JSON, "
                      f"within the body's {len(body)} bytes")
        size = int(declared)
    try:
        head = json.loads(bytes(memoryview(body)[:size]))
    except (ValueError, RecursionError) as exc:
        raise bad(f"the request's JSON does not parse: {exc}") from None
    if not isinstance(head, dict) or not isinstance(head.get("inputs"), list):
        raise bad('the request must be a JSON object with "inputs": [...]')
    params = _params(head, "request")
    binary_default = params.get("binary_data_output", False)
    if type(binary_default) is not bool:
        raise bad(f'"binary_data_output" must be true or false, got {binary_default!r}')
    raw, at, inputs = memoryview(body)[size:], 0, []
    for tensor in head["inputs"]:
        if not isinstance(tensor, dict):
            raise bad(f"each input must be a JSON object, got {tensor!r}")
        name = tensor.get("name")
        n = _check_input(name, tensor.get("datatype"), tensor.get("shape"), model)
        nbytes = _params(tensor, f"input {name}").get("binary_data_size")
        if nbytes is not None:
            if type(nbytes) is not int or nbytes < 0 or at + nbytes > len(raw):
                raise bad(f"input {name}: binary_data_size {nbytes!r} is not within the {len(raw) - at} bytes "
                          "after the JSON")
            chunk, at = raw[at:at + nbytes], at + nbytes
            inputs.append((name, n, _deserialize_bytes(chunk, n) if name == IMAGE else _pixels(chunk, n, model)))
        elif "data" in tensor:
            inputs.append((name, n, _json_input(name, n, tensor["data"], model)))
        else:
            raise bad(f"input {name} has neither \"data\" nor binary data (parameters.binary_data_size)")
    if at != len(raw):
        raise bad(f"{len(raw) - at} bytes after the JSON belong to no input (binary_data_size)")
    outputs, seen = [], set()
    for tensor in head.get("outputs") or [{"name": LOGITS}]:
        if not isinstance(tensor, dict):
            raise bad(f"each output must be a JSON object, got {tensor!r}")
        out_params = _params(tensor, f"output {tensor.get('name')}")
        binary = out_params.get("binary_data", binary_default)
        if type(binary) is not bool:
            raise bad(f"output {tensor.get('name')}: binary_data must be true or false, got {binary!r}")
        outputs.append(_output(tensor.get("name"), out_params.get("classification"), binary, model, seen))
    req_id = head.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise bad(f'"id" must be a string, got {req_id!r}')
    return _request(req_id, inputs, outputs)


def _params(obj: dict, what: str) -> dict:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise bad(f'{what}: "parameters" must be a JSON object, got {params!r}')
    return params


# --- answers, whatever the transport ------------------------------------------------------------

def classifications(logits: np.ndarray, k: int, labels: Sequence[str] | None) -> list[list[bytes]]:
    """The top k of each row of `logits` (fp32 [N, C]) as Triton's classification extension
    writes them: ``b"score:index:label"`` (score as C's %f; ``:label`` only with labels), best
    first, ties in index order."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[(f"{float(row[i]):f}:{i}" + (f":{labels[i]}" if labels is not None else "")).encode()
             for i in idx.tolist()] for row, idx in zip(logits, order)]


def _answers(req: InferRequest, logits: np.ndarray,
             model: ModelInfo) -> Iterator[tuple[RequestedOutput, str, list, Any]]:
    """(output, datatype, shape, value) per requested output: the fp32 logits, or the
    classification strings (a list of rows of bytes)."""
    logits = np.asarray(logits)
    if logits.shape != (req.n, model.num_classes):
        raise OipError(500, f"the engine answered logits of shape {list(logits.shape)} for "
                            f"[{req.n}, {model.num_classes}]")
    logits = logits.astype("<f4", copy=False)
    for out in req.outputs:
        if out.class_count:
            yield out, "BYTES", [req.n, out.class_count], classifications(logits, out.class_count, model.labels)
        else:
            yield out, "FP32", [req.n, model.num_classes], logits


def _raw(datatype: str, value: Any) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(s)) + s for row in value for s in row)
    return np.ascontiguousarray(value).tobytes()


def http_infer_response(req: InferRequest, logits: np.ndarray, model: ModelInfo,
                        accept_encoding: str | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers) answering `req` with `logits` (fp32 [n, num_classes]): the JSON, then
    the binary outputs' bytes (Inference-Header-Content-Length: the JSON's length), compressed
    as `accept_encoding` asks (gzip first, then deflate; Content-Encoding says which)."""
    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if req.id is not None:
        answer["id"] = req.id
    outputs, tail = [], []
    for out, datatype, shape, value in _answers(req, logits, model):
        tensor = {"name": out.name, "datatype": datatype, "shape": shape}
        if out.binary:
            tail.append(_raw(datatype, value))
            tensor["parameters"] = {"binary_data_size": len(tail[-1])}
        else:
            tensor["data"] = ([s.decode() for row in value for s in row] if datatype == "BYTES"
                              else value.ravel().tolist())
        outputs.append(tensor)
    answer["outputs"] = outputs
    head = json.dumps(answer, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream" if tail else "application/json"}
    if tail:
        headers[HEADER_LENGTH] = str(len(head))
    return compress(b"".join([head, *tail]), accept_encoding, headers)


def compress(body: bytes, accept_encoding: str | None, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """`body` gzipped or deflated (zlib's format, as tritonclient inflates it) when
    `accept_encoding` accepts it, with Content-Encoding added to `headers`."""
    accepted = {}
    for item in (accept_encoding or "").lower().split(","):
        coding, _, params = item.strip().partition(";")
        q = params.strip()[2:] if params.strip().startswith("q=") else "1"
        try:
            accepted[coding.strip()] = float(q) > 0
        except ValueError:
            accepted[coding.strip()] = False
    for coding, pack in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        if accepted.get(coding, accepted.get("*", False)):
            return pack(body), {**headers, "Content-Encoding": coding}
    return body, headers


def http_error(exc: OipError) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of the REST answer to `exc`: ``{"error": message}`` (tritonclient
    reads the key ``error`` of every answer that is not a 200)."""
    return exc.status, json.dumps({"error": exc.message}).encode(), {"Content-Type": "application/json", **exc.headers}


# --- gRPC ---------------------------------------------------------------------------------------

def parse_grpc_infer(request, model: ModelInfo) -> InferRequest:
    """A ``ModelInferRequest`` (tritonclient.grpc.service_pb2): checks its model (404) and its
    tensors, given in ``raw_input_contents`` (one per input, as tritonclient sends them) or in
    each input's ``contents`` (``bytes_contents`` for IMAGE, ``uint_contents`` for PIXELS)."""
    check_model(model, request.model_name, request.model_version)
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        n = _check_input(tensor.name, tensor.datatype, list(tensor.shape), model)
        contents = tensor.contents.bytes_contents if tensor.name == IMAGE else tensor.contents.uint_contents
        if raw and tensor.HasField("contents"):
            raise bad(f"input {tensor.name} has contents besides raw_input_contents: give one or the other")
        if raw:
            data = _deserialize_bytes(memoryview(raw[i]), n) if tensor.name == IMAGE else _pixels(raw[i], n, model)
        elif tensor.name == IMAGE:
            data = _images(list(contents), n)
        elif any(v > 255 for v in contents):
            raise bad(f"input {PIXELS}'s uint_contents must be integers from 0 to 255")
        else:
            data = _pixels(bytes(contents), n, model)
        inputs.append((tensor.name, n, data))
    outputs, seen = [], set()
    for tensor in request.outputs or [None]:
        if tensor is None:
            outputs.append(_output(LOGITS, None, False, model, seen))
            continue
        k = None
        if "classification" in tensor.parameters:
            param = tensor.parameters["classification"]
            choice = param.WhichOneof("parameter_choice")
            k = getattr(param, choice) if choice else "unset"
        outputs.append(_output(tensor.name, k, False, model, seen))
    return _request(request.id, inputs, outputs)


def grpc_infer_response(req: InferRequest, logits: np.ndarray, model: ModelInfo):
    """The ``ModelInferResponse`` answering `req` with `logits` (fp32 [n, num_classes]): every
    output's bytes in ``raw_output_contents``, in the order of ``outputs`` (tritonclient pairs
    them by position)."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=req.id or "")
    for out, datatype, shape, value in _answers(req, logits, model):
        response.outputs.add(name=out.name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(_raw(datatype, value))
    return response
