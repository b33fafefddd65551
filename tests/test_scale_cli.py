"""`fastres serve` and `fastres predict --ray`: every usage mistake one line on stderr and exit
2, before any cluster starts; without ray, a line saying how to install it."""
from __future__ import annotations

import sys

import pytest
import torch

from fastres import cli
from predict_helpers import GOOD, make_images
import scale_helpers  # noqa: F401 - Ray's test environment, set before ray is imported
from test_build import calibrated


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_cli")
    make_images(root / "photos", {"rgb.jpg": GOOD["rgb.jpg"]})
    torch.save(calibrated("resnet18").state_dict(), root / "r18.pth")
    (root / "three.txt").write_text("a\nb\nc\n")
    return root


def one_line_error(capsys, argv, command: str) -> str:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1, (rc, err)
    assert lines[0].startswith(f"fastres {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("extra,words", [
    (["--max-batch", "0"], "--max-batch must be >= 1, got 0"),
    (["--max-batch", "2048"], "--max-batch must be at most 1024, got 2048"),
    (["--replicas", "0"], "--replicas must be >= 1, got 0"),
    (["--port", "0"], "--port must be between 1 and 65535, got 0"),
    (["--batch-wait-ms", "-1"], "--batch-wait-ms must be >= 0, got -1.0"),
    (["--max-body-mb", "0"], "--max-body-mb must be > 0, got 0.0"),
    (["--max-queue", "4"], "--max-queue must be at least --max-batch (8): the next batch gathers in the queue, got 4"),
    (["--timeout-s", "0"], "--timeout-s must be > 0, got 0.0"),
    (["--body-timeout-s", "-1"], "--body-timeout-s must be > 0, got -1.0"),
    (["--drain-s", "0"], "--drain-s must be > 0, got 0.0"),
    (["--grpc-port", "8000"], "--grpc-port must be between 0 (no gRPC) and 65535, and not --port, got 8000"),
    (["--grpc-port", "70000"], "--grpc-port must be between 0 (no gRPC) and 65535, and not --port, got 70000"),
    (["--watchdog-factor", "-1"], "--watchdog-factor must be >= 0 and --watchdog-min-s > 0, got -1.0 and 5.0"),
    (["--model-name", "a/b"], "--model-name must be a non-empty name without '/', got 'a/b'"),
    (["--topk", "11"], "topk must be between 1 and the model's 10 classes, got 11"),
    (["--labels", "three.txt"], "has 3 labels but the model has 10 classes"),
    (["--weights", "nope.pth"], "nope.pth: no such file"),
])
def test_serve_mistakes(files, capsys, monkeypatch, extra, words):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'fastres[ray]'")
    monkeypatch.chdir(files)
    line = one_line_error(capsys, ["serve", "--weights", "r18.pth", *extra], "serve")
    assert words in line, line


@pytest.mark.parametrize("extra,words", [
    (["--address", "auto"], "--address goes with --ray"),
    (["--actors", "2"], "--actors goes with --ray"),
    (["--ray", "--actors", "0"], "--actors must be >= 1, got 0"),
    (["--ray", "--device", "cpu"], "--device does not go with --ray"),
    (["--ray", "--topk", "11"], "topk must be between 1 and the model's 10 classes, got 11"),
])
def test_predict_ray_mistakes(files, capsys, monkeypatch, extra, words):
    if "--ray" in extra:
        pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'fastres[ray]'")
    monkeypatch.chdir(files)
    line = one_line_error(capsys, ["predict", "photos", "--weights", "r18.pth", *extra], "predict")
    assert words in line, line


@pytest.mark.parametrize("argv,command", [
    (["serve", "--weights", "r18.pth"], "serve"),
    (["predict", "photos", "--weights", "r18.pth", "--ray"], "predict"),
])
def test_without_ray_one_line_says_how_to_install(files, capsys, monkeypatch, argv, command):
    monkeypatch.chdir(files)
    monkeypatch.setitem(sys.modules, "ray", None)  # imports of ray fail as if it were not installed
    line = one_line_error(capsys, argv, command)
    assert line.endswith("needs Ray: pip install 'fastres[ray]'"), line


def test_auth_disabled_only_when_asked(files, capsys, monkeypatch):
    """RAY_AUTH_MODE=disabled (as this test environment sets it) is refused without the flag."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'fastres[ray]'")
    monkeypatch.chdir(files)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    line = one_line_error(capsys, ["serve", "--weights", "r18.pth"], "serve")
    assert "RAY_AUTH_MODE=disabled turns off Ray's token authentication: pass --insecure-no-ray-auth" in line, line


def test_an_address_without_a_cluster_is_one_line(files, capsys, monkeypatch):
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'fastres[ray]'")
    from scale_helpers import free_port

    monkeypatch.chdir(files)
    port = free_port()  # closed again: nothing listens there
    line = one_line_error(capsys, ["predict", "photos", "--weights", "r18.pth", "--ray", "--address",
                                   f"127.0.0.1:{port}"], "predict")
    assert f"cannot connect to the Ray cluster at 127.0.0.1:{port}: Connection refused" in line, line
