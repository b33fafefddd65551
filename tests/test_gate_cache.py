"""fastres.gate.cache: what the key of a cached row depends on, and where the cache lives."""
from __future__ import annotations

import dataclasses
import json

from fastres.gate.cache import cache_file, row_key
from fastres.gate.target import SM90
from fastres.gate.rows import variants
from fastres.kernels.config import Config


def test_cache_key_tracks_config_dtype_and_variant():
    cfg = Config(64, 64, 32, 4, 3)
    v1, v2 = variants("conv1x1", "float16")[:2]
    k = row_key("conv1x1", cfg, "float16", v1, source="s")
    assert k == row_key("conv1x1", cfg, "float16", v1, source="s")
    assert k != row_key("conv1x1", cfg, "float16", v2, source="s")
    assert k != row_key("conv1x1", cfg, "bfloat16", v1, source="s")
    assert k != row_key("conv1x1", Config(64, 64, 32, 4, 4), "float16", v1, source="s")
    assert k != row_key("conv1x1", cfg, "float16", v1, source="t")


def test_cache_key_tracks_the_target():
    """Rows of different targets (or of one target judged by other limits) never share a key."""
    cfg = Config(64, 64, 32, 4, 3)
    v = variants("conv1x1", "float16")[0]
    k = row_key("conv1x1", cfg, "float16", v, source="s")
    assert k == row_key("conv1x1", cfg, "float16", v, source="s", target=SM90)
    for change in ({"arch": 80}, {"max_shared": 1024}, {"tensor_core_op": "HMMA"}):
        assert k != row_key("conv1x1", cfg, "float16", v, source="s", target=dataclasses.replace(SM90, **change))


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTRES_CACHE_DIR", str(tmp_path))
    assert cache_file() == tmp_path / "check" / "results.json"


def test_an_unchanged_kernel_keeps_its_key(tmp_path):
    """The key of a kernel's rows is its own jit function's source key: an edit to another
    kernel, or to its own module outside the kernel, leaves it (no recompile); an edit inside
    the kernel changes it. The stem's kernel shares the conv's function but not its
    unspecialized arguments, so not its key either. Checked on a copy of the package, in a child without the
    interpreter (where jit functions have their cache_key)."""
    import shutil

    import subprocess
    import sys

    from gate_helpers import ROOT, gate_env

    for folder in ("fastres", "kernels"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    script = ("import json, fastres.gate.cache as c; print(json.dumps({k: c.kernel_key(k) for k in "
              "('conv', 'conv_stem', 'conv1x1', 'max_pool2d', 'add_relu')} | {'file': c.__file__}))")

    def keys() -> dict[str, str]:
        r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=gate_env(PYTHONPATH=str(tmp_path)),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        found = json.loads(r.stdout)
        assert found.pop("file").startswith(str(tmp_path)), "the child imported another copy of fastres"
        return found

    before = keys()
    assert before["conv"] != before["conv_stem"]
    pool, conv = tmp_path / "kernels" / "pool.py", tmp_path / "kernels" / "conv.py"
    conv.write_text(conv.read_text() + "\n\ndef _an_unrelated_helper():\n    return 1\n")
    text = pool.read_text()
    body = text.index("def _max_pool_kernel(")
    body = text.index("\n", text.index("):", body)) + 1  # the kernel's first body line
    pool.write_text(text[:body] + "    edited = 1  # an edit inside the kernel\n" + text[body:])
    after = keys()
    assert {k: after[k] == v for k, v in before.items()} == {"conv": True, "conv_stem": True, "conv1x1": True,
                                                              "max_pool2d": False, "add_relu": True}
