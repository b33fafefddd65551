"""fastres.scale.oip, without Ray or a server: requests built by tritonclient's own code are
parsed, and answers are read back by tritonclient's own parsers (REST and gRPC), compressed
or not; every malformed request is an OipError with its status and a message naming the fault."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

from fastres.scale.oip import (HEADER_LENGTH, ModelInfo, OipError, grpc_infer_response, grpc_model_metadata,
                               grpc_server_metadata, http_error, http_infer_response, match, model_metadata,
                               parse_grpc_infer, parse_http_infer, server_metadata)


def test_imports_alone():
    """The codec imports neither tritonclient (the gRPC functions import it when called), nor
    torch, nor ray."""
    code = "import sys, fastres.scale.oip; print(sorted({'tritonclient', 'grpc', 'torch', 'ray'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

CROP, CLASSES = 4, 6
MODEL = ModelInfo(name="resnet50", num_classes=CLASSES, crop=CROP, labels=[f"class {i}" for i in range(CLASSES)],
                  max_items=8)
MAX_BODY = 1 << 20


def raises(status: int, words: str, fn, *args) -> OipError:
    with pytest.raises(OipError) as info:
        fn(*args)
    assert info.value.status == status and words in info.value.message, (info.value.status, info.value.message)
    return info.value


def images(n: int, rng) -> np.ndarray:
    """n fake image files of different lengths (any bytes: the codec does not decode them)."""
    return np.array([rng.integers(0, 256, 3 + 5 * i, dtype=np.uint8).tobytes() for i in range(n)], dtype=np.object_)


def pixels(n: int, rng) -> np.ndarray:
    return rng.integers(0, 256, (n, CROP, CROP, 3), dtype=np.uint8)


def top(logits: np.ndarray, k: int, labels=MODEL.labels) -> np.ndarray:
    """Triton's classification strings, written independently of the codec: sorted by value,
    ties by index, the value as C's %f."""
    rows = [[f"{'%f' % row[i]}:{i}" + (f":{labels[i]}" if labels else "")
             for i in sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]] for row in logits]
    return np.array(rows, dtype=np.object_)


def http_request(inputs, outputs=None, request_id="", encoding=None, parameters=None) -> tuple[bytes, dict]:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id=request_id, parameters=parameters)
    headers = {} if json_size is None else {HEADER_LENGTH: str(json_size)}
    if encoding == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding == "deflate":
        body, headers["Content-Encoding"] = zlib.compress(body), "deflate"
    return body, headers


def http_input(name: str, array: np.ndarray, binary: bool):
    datatype = "BYTES" if name == "IMAGE" else "UINT8"
    return httpclient.InferInput(name, list(array.shape), datatype).set_data_from_numpy(array, binary_data=binary)


def read_http(body: bytes, headers: dict):
    return httpclient.InferenceServerClient.parse_response_body(
        body, header_length=headers.get(HEADER_LENGTH), content_encoding=headers.get("Content-Encoding"))


def test_routes():
    assert match("GET", "/v2") == ("server_metadata", None, None) and match("HEAD", "/v2/") == match("GET", "/v2")
    assert match("GET", "/v2/health/live")[0] == "live" and match("get", "/v2/health/ready")[0] == "ready"
    assert match("GET", "/v2/models/resnet%2050") == ("model_metadata", "resnet 50", None)
    assert match("GET", "/v2/models/r/versions/1/ready?x=1") == ("model_ready", "r", "1")
    assert match("POST", "/v2/models/r/infer") == ("infer", "r", None)
    assert match("POST", "/v2/models/r/versions/2/infer") == ("infer", "r", "2")
    assert match("GET", "/v2/models/r/versions/infer") == ("model_metadata", "r", "infer")  # a version named infer
    assert raises(405, "GET /v2/models/r/infer: use POST", match, "GET", "/v2/models/r/infer").headers \
        == {"Allow": "POST"}
    assert raises(405, "use GET", match, "POST", "/v2/health/ready").headers == {"Allow": "GET"}
    for path in ("/", "/v1/models/r", "/v2/models", "/v2/models/r/stats", "/v2/models/r/versions/1/infer/x",
                 "/v2/health", "/predict"):
        raises(404, f"no route GET {path}", match, "GET", path)


def test_metadata():
    server = server_metadata()
    assert server["name"] == "fastres" and server["extensions"] == ["classification", "binary_tensor_data"]
    meta = model_metadata(MODEL)
    assert meta["name"] == "resnet50" and meta["versions"] == ["1"] and meta["platform"] == "fastres"
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1]},
                              {"name": "PIXELS", "datatype": "UINT8", "shape": [-1, CROP, CROP, 3]}]
    assert meta["outputs"] == [{"name": "LOGITS", "datatype": "FP32", "shape": [-1, CLASSES]}]
    from google.protobuf.json_format import MessageToDict

    assert MessageToDict(grpc_server_metadata()) == server
    pb = MessageToDict(grpc_model_metadata(MODEL))
    assert pb["inputs"][1] == {"name": "PIXELS", "datatype": "UINT8", "shape": ["-1", str(CROP), str(CROP), "3"]}
    assert pb["outputs"][0]["shape"] == ["-1", str(CLASSES)] and pb["versions"] == ["1"]


# (input, binary input, class_count, binary output, request compression, response compression)
CASES = [("IMAGE", True, 0, True, "gzip", "gzip"), ("PIXELS", False, 3, False, "deflate", "deflate"),
         ("PIXELS", True, CLASSES, True, None, None), ("IMAGE", False, 1, False, None, "br, gzip;q=0, deflate")]


@pytest.mark.parametrize("name, binary_in, k, binary_out, encoding, accept", CASES)
def test_http_round_trip(name, binary_in, k, binary_out, encoding, accept):
    rng = np.random.default_rng(len(name) + k)
    n = 3
    data = images(n, rng) if name == "IMAGE" else pixels(n, rng)
    if name == "IMAGE" and not binary_in:  # JSON carries BYTES as UTF-8 strings
        data = np.array([b"GIF89a" * (i + 1) for i in range(n)], dtype=np.object_)
    body, headers = http_request([http_input(name, data, binary_in)], [
        httpclient.InferRequestedOutput("LOGITS", binary_data=binary_out, class_count=k)], "req-7", encoding)
    req = parse_http_infer(body, headers, MODEL, MAX_BODY)
    assert req.id == "req-7" and req.n == n and len(req.outputs) == 1
    assert (req.outputs[0].binary, req.outputs[0].class_count) == (binary_out, k)
    if name == "IMAGE":
        assert req.pixels is None and [bytes(b) for b in req.images] == list(data)
    else:
        assert req.images is None and req.pixels.dtype == np.uint8 and np.array_equal(req.pixels, data)

    logits = rng.standard_normal((n, CLASSES)).astype(np.float32)
    logits[0, 1] = logits[0, 4] = logits[0].max() + 1  # a tie: index order
    answer, answer_headers = http_infer_response(req, logits, MODEL, accept)
    assert answer_headers.get("Content-Encoding") == {"br, gzip;q=0, deflate": "deflate"}.get(accept, accept)
    assert (HEADER_LENGTH in answer_headers) == binary_out
    result = read_http(answer, answer_headers)
    assert result.get_response()["id"] == "req-7" and result.get_response()["model_name"] == "resnet50"
    out = result.as_numpy("LOGITS")
    if k:
        assert out.shape == (n, k) and [[s if isinstance(s, str) else s.decode() for s in row] for row in out] \
            == top(logits, k).tolist()
        assert out[0][0] in ("%f:1:class 1" % logits[0, 1], b"%f:1:class 1" % logits[0, 1])
    else:
        assert out.dtype == np.float32 and np.array_equal(out, logits)


def test_http_defaults_and_labels():
    """No outputs asked: LOGITS, binary as tritonclient's binary_data_output asks; JSON data
    nested as well as flat; a model without labels answers "score:index"."""
    rng = np.random.default_rng(1)
    data = pixels(2, rng)
    body, headers = http_request([http_input("PIXELS", data, True)])
    req = parse_http_infer(bytearray(body), {k.lower(): v for k, v in headers.items()}, MODEL, MAX_BODY)
    assert req.id is None and [(o.name, o.binary, o.class_count) for o in req.outputs] == [("LOGITS", True, 0)]
    nested = {"inputs": [{"name": "PIXELS", "datatype": "UINT8", "shape": [2, CROP, CROP, 3], "data": data.tolist()}],
              "outputs": [{"name": "LOGITS", "parameters": {"classification": 2}}]}
    plain = ModelInfo(name="m", num_classes=CLASSES, crop=CROP)
    req = parse_http_infer(json.dumps(nested).encode(), {}, plain, MAX_BODY)
    assert np.array_equal(req.pixels, data) and not req.outputs[0].binary
    logits = rng.standard_normal((2, CLASSES)).astype(np.float32)
    answer, answer_headers = http_infer_response(req, logits, plain)
    assert answer_headers == {"Content-Type": "application/json"}
    assert read_http(answer, answer_headers).as_numpy("LOGITS").tolist() == top(logits, 2, None).tolist()
    raises(500, "logits of shape [3, 6] for [2, 6]", http_infer_response, req, np.zeros((3, CLASSES)), plain)


def bad_json(inputs=None, outputs=None, **extra) -> bytes:
    head = {"inputs": inputs if inputs is not None else
            [{"name": "PIXELS", "datatype": "UINT8", "shape": [1, CROP, CROP, 3], "data": [7] * CROP * CROP * 3}]}
    if outputs is not None:
        head["outputs"] = outputs
    return json.dumps({**head, **extra}).encode()


def image(shape, **fields) -> dict:
    return {"name": "IMAGE", "datatype": "BYTES", "shape": shape, **fields}


def test_http_errors():
    ok = bad_json()
    assert parse_http_infer(ok, {}, MODEL, MAX_BODY).n == 1
    px = {"name": "PIXELS", "datatype": "UINT8"}
    cases = [
        (b"", {}, "empty body"),
        (b"{nope", {}, "JSON does not parse"),
        (b"[1]", {}, '"inputs": [...]'),
        (b"[" * 100_000, {}, "JSON does not parse"),
        (ok, {"Content-Encoding": "br"}, "Content-Encoding 'br' is not supported"),
        (ok, {"Content-Encoding": "gzip"}, "gzip body does not inflate"),
        (gzip.compress(ok)[:-12], {"Content-Encoding": "gzip"}, "truncated"),
        (gzip.compress(ok) + b"xx", {"Content-Encoding": "gzip"}, "2 bytes after its compressed stream"),
        (ok, {HEADER_LENGTH: str(len(ok) + 1)}, f"{HEADER_LENGTH} '{len(ok) + 1}' must be the length of the JSON"),
        (ok + b"abc", {HEADER_LENGTH: str(len(ok))}, "3 bytes after the JSON belong to no input"),
        (bad_json([]), {}, "exactly one input, IMAGE or PIXELS; this one has none"),
        (bad_json([image([1], data=["a"]), image([1], data=["b"])]), {}, "this one has ['IMAGE', 'IMAGE']"),
        (bad_json([{"name": "INPUT0", "datatype": "FP32", "shape": [1]}]), {}, "unknown input 'INPUT0'"),
        (bad_json([{**px, "shape": [1, 224, 224, 3]}]), {}, "shape [1, 224, 224, 3]: it must be [N, 4, 4, 3]"),
        (bad_json([{**px, "shape": [0, CROP, CROP, 3]}]), {}, "N must be between 1 and 8"),
        (bad_json([image([9], data=["a"] * 9)]), {}, "shape [9]: N must be between 1 and 8"),
        (bad_json([image([2, 1])]), {}, "shape [2, 1]: it must be [N]"),
        (bad_json([image("2")]), {}, "must be a list of integers"),
        (bad_json([{**px, "datatype": "FP32", "shape": [1, CROP, CROP, 3]}]), {}, "datatype 'FP32': it must be UINT8"),
        (bad_json([image([2])]), {}, "input IMAGE has neither \"data\" nor binary data"),
        (bad_json([image([2], data=["a"])]), {}, "input IMAGE has shape [2] but 1 elements"),
        (bad_json([image([2], data=["a", ""])]), {}, "input IMAGE[1] is empty"),
        (bad_json([image([1], data=[3])]), {}, "IMAGE's JSON data must be strings"),
        (bad_json([{**px, "shape": [1, CROP, CROP, 3], "data": [1] * 5}]), {}, "(48 bytes) but 5 bytes of data"),
        (bad_json([{**px, "shape": [1, CROP, CROP, 3], "data": [256] * 48}]), {}, "integers from 0 to 255"),
        (bad_json([{**px, "shape": [1, CROP, CROP, 3], "data": [0.5] * 48}]), {}, "integers from 0 to 255"),
        (bad_json(outputs=[{"name": "PROBS"}]), {}, "unknown output 'PROBS': this model's output is LOGITS"),
        (bad_json(outputs=[{"name": "LOGITS"}] * 2), {}, "output LOGITS is requested twice"),
        (bad_json(outputs=[{"name": "LOGITS", "parameters": {"classification": CLASSES + 1}}]), {},
         f"classification 7 must be an integer between 1 and {CLASSES}"),
        (bad_json(outputs=[{"name": "LOGITS", "parameters": {"classification": 0}}]), {}, "classification 0"),
        (bad_json(outputs=[{"name": "LOGITS", "parameters": {"binary_data": "yes"}}]), {}, "binary_data must be"),
        (bad_json(parameters={"binary_data_output": 1}), {}, '"binary_data_output" must be true or false'),
        (bad_json(id=5), {}, '"id" must be a string'),
    ]
    for body, headers, words in cases:
        raises(400, words, parse_http_infer, body, headers, MODEL, MAX_BODY)


def test_http_binary_errors():
    """Binary data that does not match the declared sizes and shapes."""
    def binary(tensor: dict, raw: bytes):
        head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}).encode()
        return head + raw, {HEADER_LENGTH: str(len(head))}

    cases = [
        (binary(image([2]), b"\3\0\0\0abc"), "has shape [2] but 1 elements"),
        (binary(image([1]), b"\3\0\0\0abc\1\0\0\0d"), "holds more than the 1 elements of its shape [1]"),
        (binary(image([1]), b"\x09\0\0\0abc"), "IMAGE[0] declares 9 bytes but only 3 remain"),
        (binary(image([1]), b"\3\0\0\0abc\1\0"), "ends within a length prefix"),
        (binary({"name": "PIXELS", "datatype": "UINT8", "shape": [2, CROP, CROP, 3]}, bytes(96 - 1)),
         "(96 bytes) but 95 bytes of data"),
    ]
    for (body, headers), words in cases:
        raises(400, words, parse_http_infer, body, headers, MODEL, MAX_BODY)
    body, headers = binary(image([1]), b"\3\0\0\0abc")
    raises(400, "binary_data_size 7 is not within the 6 bytes", parse_http_infer, body[:-1], headers, MODEL, MAX_BODY)


def test_http_body_limit():
    """A zip bomb is a 413 after at most the limit inflated, gzip and deflate alike."""
    bomb = b"\0" * (50 * MAX_BODY)
    for packed, coding in ((gzip.compress(bomb), "gzip"), (zlib.compress(bomb), "deflate")):
        assert len(packed) < MAX_BODY // 10
        raises(413, f"inflates past the limit of {MAX_BODY} bytes", parse_http_infer, packed,
               {"content-encoding": coding}, MODEL, MAX_BODY)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw deflate, as some clients send it
    body = raw.compress(bad_json()) + raw.flush()
    assert parse_http_infer(body, {"Content-Encoding": "deflate"}, MODEL, MAX_BODY).n == 1


def test_http_error_answers():
    """tritonclient reads the message of each error answer (it needs the key "error")."""
    from tritonclient.http._utils import _get_error

    class Answer:
        def __init__(self, status, body):
            self.status_code, self.body = status, body

        def read(self):
            return self.body

    for status, code in ((400, "INVALID_ARGUMENT"), (404, "NOT_FOUND"), (413, "RESOURCE_EXHAUSTED"),
                         (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED")):
        exc = OipError(status, f"trouble {status}", {"Retry-After": "1"} if status == 503 else None)
        assert exc.grpc_code == code
        answer, body, headers = http_error(exc)
        assert answer == status and headers["Content-Type"] == "application/json"
        assert headers.get("Retry-After") == ("1" if status == 503 else None)
        err = _get_error(Answer(status, body))
        assert err.message() == f"trouble {status}" and err.status() == str(status)


def grpc_request(inputs, outputs=None, name="resnet50", version="", request_id=""):
    from tritonclient.grpc._utils import _get_inference_request

    return _get_inference_request(name, inputs, version, request_id, outputs, 0, False, False, 0, None, None)


def grpc_input(name: str, array: np.ndarray):
    datatype = "BYTES" if name == "IMAGE" else "UINT8"
    return grpcclient.InferInput(name, list(array.shape), datatype).set_data_from_numpy(array)


@pytest.mark.parametrize("name, k", [("IMAGE", 2), ("PIXELS", 0)])
def test_grpc_round_trip(name, k):
    rng = np.random.default_rng(k)
    data = images(2, rng) if name == "IMAGE" else pixels(2, rng)
    outputs = [grpcclient.InferRequestedOutput("LOGITS", class_count=k)] if k else None
    req = parse_grpc_infer(grpc_request([grpc_input(name, data)], outputs, version="1", request_id="g1"), MODEL)
    assert req.id == "g1" and req.n == 2 and req.outputs[0].class_count == k
    if name == "IMAGE":
        assert [bytes(b) for b in req.images] == list(data)
    else:
        assert np.array_equal(req.pixels, data)
    logits = rng.standard_normal((2, CLASSES)).astype(np.float32)
    response = grpc_infer_response(req, logits, MODEL)
    assert response.id == "g1" and response.model_version == "1"
    out = grpcclient.InferResult(response).as_numpy("LOGITS")
    if k:
        assert [[s.decode() for s in row] for row in out] == top(logits, k).tolist()
    else:
        assert out.dtype == np.float32 and np.array_equal(out, logits)


def test_grpc_contents_and_errors():
    from tritonclient.grpc import service_pb2

    def request(*tensors, raw=(), k=None):
        req = service_pb2.ModelInferRequest(model_name="resnet50", raw_input_contents=list(raw))
        for name, datatype, shape, contents in tensors:
            tensor = req.inputs.add(name=name, datatype=datatype, shape=shape)
            if contents is not None:
                field = "bytes_contents" if name == "IMAGE" else "uint_contents"
                getattr(tensor.contents, field).extend(contents)
        if k is not None:
            req.outputs.add(name="LOGITS").parameters["classification"].int64_param = k
        return req

    px = list(range(48))
    assert parse_grpc_infer(request(("IMAGE", "BYTES", [2], [b"ab", b"c"])), MODEL).images == [b"ab", b"c"]
    assert parse_grpc_infer(request(("PIXELS", "UINT8", [1, CROP, CROP, 3], px)), MODEL).pixels.ravel().tolist() == px
    wrong = request(("IMAGE", "BYTES", [1], [b"a"]))
    wrong.model_name = "resnet18"
    assert raises(404, "unknown model 'resnet18': this server serves 'resnet50'", parse_grpc_infer, wrong, MODEL) \
        .grpc_code == "NOT_FOUND"
    wrong.model_name, wrong.model_version = "resnet50", "3"
    raises(404, "has no version '3': its versions are ['1']", parse_grpc_infer, wrong, MODEL)
    cases = [
        (request(("PIXELS", "UINT8", [1, 8, 8, 3], None), raw=[bytes(192)]),
         "shape [1, 8, 8, 3]: it must be [N, 4, 4, 3]"),
        (request(("IMAGE", "BYTES", [1], None), raw=[b"\1\0\0\0a", b""]), "2 raw_input_contents for 1 inputs"),
        (request(("IMAGE", "BYTES", [1], [b"a"]), raw=[b"\1\0\0\0a"]), "contents besides raw_input_contents"),
        (request(("PIXELS", "UINT8", [1, CROP, CROP, 3], [300] * 48)), "uint_contents must be integers from 0 to 255"),
        (request(("IMAGE", "BYTES", [1], [b"a"]), k=0), "classification 0 must be an integer between 1 and 6"),
        (request(("IMAGE", "BYTES", [1], [])), "shape [1] but 0 elements"),
    ]
    for req, words in cases:
        assert raises(400, words, parse_grpc_infer, req, MODEL).grpc_code == "INVALID_ARGUMENT"
