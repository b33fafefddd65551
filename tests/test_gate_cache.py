"""fastres.gate.cache: what the key of a cached row depends on, and where the cache lives."""
from __future__ import annotations

import dataclasses

from fastres.gate.cache import cache_file, row_key
from fastres.gate.target import SM90
from fastres.gate.variants import variants
from fastres.kernels.config import Config


def test_cache_key_tracks_config_dtype_and_variant():
    cfg = Config(64, 64, 32, 4, 3)
    v1, v2 = variants("conv1x1", "float16")[:2]
    k = row_key("conv1x1", cfg, "float16", v1, sources="s")
    assert k == row_key("conv1x1", cfg, "float16", v1, sources="s")
    assert k != row_key("conv1x1", cfg, "float16", v2, sources="s")
    assert k != row_key("conv1x1", cfg, "bfloat16", v1, sources="s")
    assert k != row_key("conv1x1", Config(64, 64, 32, 4, 4), "float16", v1, sources="s")
    assert k != row_key("conv1x1", cfg, "float16", v1, sources="t")


def test_cache_key_tracks_the_target():
    """Rows of different targets (or of one target judged by other limits) never share a key."""
    cfg = Config(64, 64, 32, 4, 3)
    v = variants("conv1x1", "float16")[0]
    k = row_key("conv1x1", cfg, "float16", v, sources="s")
    assert k == row_key("conv1x1", cfg, "float16", v, sources="s", target=SM90)
    for change in ({"arch": 80}, {"max_shared": 1024}, {"tensor_core_op": "HMMA"}):
        assert k != row_key("conv1x1", cfg, "float16", v, sources="s", target=dataclasses.replace(SM90, **change))


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTRES_CACHE_DIR", str(tmp_path))
    assert cache_file() == tmp_path / "check" / "results.json"
