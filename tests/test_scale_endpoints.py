"""The Open Inference Protocol and the metrics of `fastres serve`, on loopback, with tritonclient
(http, http.aio and grpc) as the client, as a Triton user's code would talk to it: liveness,
readiness and metadata; IMAGE (encoded files, BYTES) answers equal to `fastres predict`'s on
the same files; PIXELS (cropped uint8 HWC) logits equal to the engine's on the same crops;
binary and JSON outputs, Triton's classification strings; bad requests as tritonclient
exceptions carrying the server's message; and Triton's counters equal to what was sent."""
from __future__ import annotations

import asyncio
import subprocess
import urllib.request

import numpy as np
import pytest
import torch

from scale_helpers import CLUSTER, free_port, ray_or_skip, start_serve
from test_build import calibrated
from test_scale_serve import CROP, REPO, RESIZE, encoded

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
MODEL = "digits"
LABELS = [f"class {i}" for i in range(10)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`fastres serve --model-name digits` with gRPC, on the test cluster: (HTTP url, gRPC url,
    a Predictor of the same weights and options, on this process's CPU)."""
    ray_or_skip()
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (the test extra has it)")
    from fastres.predict.predictor import Predictor

    root = tmp_path_factory.mktemp("oip")
    cluster = CLUSTER.start(tmp_path_factory.getbasetemp())
    torch.save(calibrated("resnet18").state_dict(), root / "r18.pth")
    (root / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    port, grpc_port = free_port(), free_port()
    log = root / "serve.log"
    proc = start_serve(["--address", cluster.address, "--port", str(port), "--grpc-port", str(grpc_port),
                        "--model-name", MODEL, "--weights", "r18.pth", "--labels", "labels.txt", "--dtype", "float32",
                        "--resize", str(RESIZE), "--crop", str(CROP), "--max-batch", "4", "--max-body-mb", "1",
                        "--insecure-no-ray-auth"],
                       root, dict(cluster.env, PYTHONPATH=str(REPO)), log)
    predictor = Predictor(root / "r18.pth", device="cpu", dtype="float32", resize=RESIZE, crop=CROP,
                          labels=root / "labels.txt", topk=3, cuda_graph=False)
    yield f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", predictor
    proc.send_signal(2)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


def image_input(module, bodies: list[bytes]):
    """IMAGE, BYTES [N]: encoded files (over HTTP as binary data: JSON carries only UTF-8)."""
    inp = module.InferInput("IMAGE", [len(bodies)], "BYTES")
    inp.set_data_from_numpy(np.array(bodies, dtype=np.object_))
    return inp


def metrics(url: str) -> dict[str, float]:
    """`GET /metrics` as {sample line's name and labels: value}."""
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=60) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_health_and_metadata(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http_url, grpc_url, predictor = server
    for client in (httpclient.InferenceServerClient(http_url), grpcclient.InferenceServerClient(grpc_url)):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, "1")
    meta = httpclient.InferenceServerClient(http_url).get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in meta["inputs"]} == {
        ("IMAGE", "BYTES", (-1,)), ("PIXELS", "UINT8", (-1, CROP, CROP, 3))}
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [("LOGITS", "FP32", [-1, 10])]
    gmeta = grpcclient.InferenceServerClient(grpc_url).get_model_metadata(MODEL, as_json=True)
    assert gmeta["name"] == MODEL and [o["name"] for o in gmeta["outputs"]] == ["LOGITS"]
    smeta = httpclient.InferenceServerClient(http_url).get_server_metadata()
    assert smeta["name"] == "fastres" and "classification" in smeta["extensions"]
    assert grpcclient.InferenceServerClient(grpc_url).get_server_metadata(as_json=True)["name"] == "fastres"


def test_image_bytes_answer_as_fastres_predict(server):
    """Five files (JPEG and PNG) in one request (two parts at --max-batch 4) over HTTP and over
    gRPC: the logits `fastres predict` gives; two of them with JSON outputs, then the top 3 as
    Triton's "score:index:label"."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http_url, grpc_url, predictor = server
    bodies = [encoded(i) for i in range(5)]
    want = torch.stack([p.logits for p in predictor.predict_bytes(bodies)]).numpy()
    client = httpclient.InferenceServerClient(http_url)
    got = client.infer(MODEL, [image_input(httpclient, bodies)],
                       outputs=[httpclient.InferRequestedOutput("LOGITS", binary_data=True)], request_id="r-1")
    assert got.get_response()["id"] == "r-1"
    np.testing.assert_allclose(got.as_numpy("LOGITS"), want, rtol=1e-4, atol=1e-4)
    two = image_input(httpclient, bodies[:2])
    as_json = client.infer(MODEL, [two], outputs=[httpclient.InferRequestedOutput("LOGITS", binary_data=False)])
    np.testing.assert_array_equal(as_json.as_numpy("LOGITS"), got.as_numpy("LOGITS")[:2])
    top = client.infer(MODEL, [two], outputs=[httpclient.InferRequestedOutput("LOGITS", class_count=3)])
    top = top.as_numpy("LOGITS")
    assert top.shape == (2, 3)
    for row, logits in zip(top, got.as_numpy("LOGITS")):
        order = np.argsort(-logits, kind="stable")[:3]
        assert [s.decode() for s in row] == [f"{logits[i]:f}:{i}:{LABELS[i]}" for i in order]
    grpc_got = grpcclient.InferenceServerClient(grpc_url).infer(MODEL, [image_input(grpcclient, bodies)])
    np.testing.assert_array_equal(grpc_got.as_numpy("LOGITS"), got.as_numpy("LOGITS"))


def test_pixels_answer_as_the_engine_on_the_same_crops(server):
    """Cropped uint8 HWC images: over gRPC and over http.aio, the logits of the engine run on
    the same crops (normalized in its stem)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http.aio as aioclient

    http_url, grpc_url, predictor = server
    crops = np.random.default_rng(3).integers(0, 256, (3, CROP, CROP, 3), dtype=np.uint8)
    chw = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    want = torch.stack([p.logits for p in predictor.predict_tensors(chw, preprocess=False)]).numpy()
    inp = grpcclient.InferInput("PIXELS", list(crops.shape), "UINT8")
    inp.set_data_from_numpy(crops)
    got = grpcclient.InferenceServerClient(grpc_url).infer(MODEL, [inp]).as_numpy("LOGITS")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    async def aio():
        client = aioclient.InferenceServerClient(http_url)
        try:
            inp = aioclient.InferInput("PIXELS", list(crops.shape), "UINT8")
            inp.set_data_from_numpy(crops)
            return (await client.infer(MODEL, [inp])).as_numpy("LOGITS")
        finally:
            await client.close()

    np.testing.assert_array_equal(asyncio.run(aio()), got)


def test_bad_requests_are_exceptions_with_the_servers_message(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    http_url, grpc_url, _ = server
    for module, url in ((httpclient, http_url), (grpcclient, grpc_url)):
        client = module.InferenceServerClient(url)
        with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
            client.infer("nope", [image_input(module, [encoded(0)])])
        with pytest.raises(InferenceServerException, match="not an image"):
            client.infer(MODEL, [image_input(module, [encoded(0), b"hello, not an image" * 4])])
        wrong = module.InferInput("PIXELS", [1, CROP, CROP - 1, 3], "UINT8")
        wrong.set_data_from_numpy(np.zeros((1, CROP, CROP - 1, 3), np.uint8))
        with pytest.raises(InferenceServerException, match=rf"\[1, {CROP}, {CROP - 1}, 3\]"):
            client.infer(MODEL, [wrong])
        with pytest.raises(InferenceServerException, match="classification"):
            client.infer(MODEL, [image_input(module, [encoded(0)])],
                         outputs=[module.InferRequestedOutput("LOGITS", class_count=11)])
    with pytest.raises(InferenceServerException, match="over the limit"):
        httpclient.InferenceServerClient(http_url).infer(MODEL, [image_input(httpclient, [b"\xff\xd8" * 600_000])])


def test_metrics_count_what_was_sent(server):
    """Three requests (1, 2 and 3 images) and a bad one that reached the batch (its image does
    not decode): Triton's counters grow by exactly that; one batch execution at least per
    request of images, the durations grow."""
    import tritonclient.http as httpclient

    http_url, _, _ = server
    model = f'model="{MODEL}",version="1"'
    before = metrics(http_url)
    client = httpclient.InferenceServerClient(http_url)
    for n in (1, 2, 3):
        client.infer(MODEL, [image_input(httpclient, [encoded(i) for i in range(n)])])
    truncated = encoded(0)[:300]
    with pytest.raises(Exception, match="cannot decode"):
        client.infer(MODEL, [image_input(httpclient, [truncated])])
    after = metrics(http_url)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    assert delta[f"nv_inference_request_success{{{model}}}"] == 3
    assert delta[f"nv_inference_count{{{model}}}"] == 6
    assert delta[f'nv_inference_request_failure{{model="{MODEL}",reason="BACKEND",version="1"}}'] == 1
    assert delta[f"nv_inference_exec_count{{{model}}}"] >= 4
    for stage in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        assert delta[f"nv_inference_{stage}_duration_us{{{model}}}"] >= 0
    assert delta[f"nv_inference_compute_infer_duration_us{{{model}}}"] > 0
    assert after[f"nv_inference_pending_request_count{{{model}}}"] == 0
