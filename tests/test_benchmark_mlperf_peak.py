"""`fastres bench mlperf --find-peak`: the search itself against stand-in probes (no LoadGen:
bracketing, bisection, the ceiling, the probe bound), the user.conf it writes, and the whole
command with the null engine at short settings, its user.conf read back by LoadGen."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from fastres.benchmark.mlperf_peak import round_rate, search_peak, user_conf_text
from fastres.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def threshold(limit: float, seen: list[float]):
    """A stand-in probe: VALID up to `limit` queries/s; records the rates asked for."""
    def probe(qps: float) -> bool:
        seen.append(qps)
        return qps <= limit
    return probe


def test_bracketing_then_bisection_finds_the_highest_valid_rate():
    seen: list[float] = []
    peak, probes = search_peak(threshold(73_000, seen), 50_000, ceiling=400_000, max_probes=8, tolerance=0.05)
    # up from the start while VALID, then halving the bracket [50k, 100k] to within 5%
    assert seen == [50_000, 100_000, 75_000, 62_500, 68_800, 71_900]
    assert [p.valid for p in probes] == [q <= 73_000 for q in seen] and peak == 71_900
    seen.clear()
    peak, probes = search_peak(threshold(9_000, seen), 50_000, ceiling=400_000, max_probes=8, tolerance=0.05)
    # down while INVALID: 50k, 25k, 12.5k, 6.25k (VALID), then bisection of [6.25k, 12.5k]
    assert seen[:4] == [50_000, 25_000, 12_500, 6_250] and 9_000 / 1.05 <= peak <= 9_000
    assert len(seen) <= 8 and peak == max(q for q in seen if q <= 9_000)


def test_the_ceiling_and_the_probe_bound():
    seen: list[float] = []
    # VALID at every rate: up to the ceiling (rounded to 3 digits) and no further
    assert search_peak(threshold(1e9, seen), 40_000, ceiling=123_456)[0] == 123_000 and seen == [40_000, 80_000, 123_000]
    seen.clear()
    peak, probes = search_peak(threshold(0, seen), 1_000, max_probes=3)  # never VALID
    assert peak is None and seen == [1_000, 500, 250] and not any(p.valid for p in probes)
    seen.clear()
    peak, _ = search_peak(threshold(70_123, seen), 50_000, max_probes=3)  # the bound cuts the bisection short
    assert len(seen) == 3 and peak == 50_000 and seen == [50_000, 100_000, 75_000]
    assert round_rate(68_750) == 68_800 and round_rate(2.345) == 2.35
    with pytest.raises(ValueError):
        search_peak(threshold(1, seen), 0)


def test_user_conf_text():
    text = user_conf_text(["made here"], 431_000.0, 2.5, {"Server": "VALID at 2.5"})
    assert text == ("# made here\nresnet50.Offline.target_qps = 431000\n# Server: VALID at 2.5\n"
                    "resnet50.Server.target_qps = 2.5\n")
    assert "Server.target_qps" not in user_conf_text([], 1000.0, None, {"Server": "no VALID rate"})


def test_find_peak_with_the_null_engine(tmp_path, monkeypatch, capsys):
    lg = pytest.importorskip("mlperf_loadgen", reason="MLPerf's LoadGen is the optional extra fastres[mlperf]")
    from fastres.benchmark.mlperf_cli import configure, main

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the probes import this checkout
    parser = argparse.ArgumentParser()
    configure(parser)
    # one Server probe: the search's steps are the tests above; here, the processes and the file
    args = parser.parse_args(["--engine", "null", "--find-peak", "--duration-s", "0.05", "--max-probes", "1",
                              "--image-size", "32", "--batch", "64", "--target-latency-ms", "1000",
                              "--log-dir", str(tmp_path / "peak")])
    rc = main(args)
    out = capsys.readouterr().out
    offline = re.search(r"^Offline: (VALID|INVALID), ([\d,]+) samples/s", out, re.M)
    probes = re.findall(r"^probe (\d)/1: Server at ([\d,]+) queries/s: (VALID|INVALID)", out, re.M)
    assert offline and len(probes) == 1, out
    measured = float(offline.group(2).replace(",", ""))
    server_qps, valid = float(probes[0][1].replace(",", "")), probes[0][2] == "VALID"
    assert server_qps == pytest.approx(measured / 2, rel=0.01)  # half the Offline rate first
    conf = tmp_path / "peak" / "user.conf"
    assert conf.is_file() and rc == (0 if valid else 1)
    # LoadGen reads the file it wrote: Offline's expected rate, and Server's where one was VALID
    for scenario in ("Offline", "Server"):
        settings = lg.TestSettings()
        assert settings.FromConfig(str(conf), "resnet50", scenario, 1) == 0
    assert settings.offline_expected_qps == pytest.approx(1.1 * measured, rel=0.01)
    assert ("resnet50.Server.target_qps" in conf.read_text()) == valid
    if valid:
        assert settings.server_target_qps == server_qps
    # each probe's LoadGen files in a folder of its own, beside the user.conf
    summaries = sorted(p.parent.name for p in (tmp_path / "peak").glob("*/mlperf_log_summary.txt"))
    assert summaries == ["01-Offline", f"02-Server-{int(server_qps)}"]


def test_find_peak_user_errors():
    from fastres.benchmark.mlperf_cli import configure, main

    parser = argparse.ArgumentParser()
    configure(parser)
    for args, msg in ((["--find-peak", "--scenario", "Server"], "drop --scenario"),
                      (["--find-peak", "--target-qps", "10"], "drop --target-qps"),
                      (["--find-peak", "--max-probes", "0"], "--max-probes must be >= 1"),
                      (["--max-probes", "3"], "add --find-peak"), (["--batch", "2048"], "at most 1024")):
        with pytest.raises(UserError, match=re.escape(msg)):
            main(parser.parse_args(args))
