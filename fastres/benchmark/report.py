"""Presenting a results file: the markdown report (end-to-end, per-layer and head tables; the
8-bit ones beside the float16 records of the same points), the short text summary and the
matplotlib plot, written beside the results file."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from .names import ALL_E2E_SYSTEMS, E2E_MODELS, EIGHT_BIT, LAYER_SYSTEMS, SMOKE_LABEL
from .results import load_results


def _fmt_ms(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _fmt_rate(v) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _status_cell(r: dict) -> str | None:
    status = r.get("status", "ok")
    if status == "ok":
        return None
    if status == "wrong":
        rel, codes = r.get("rel_err"), r.get("code_err")
        if isinstance(codes, (int, float)):
            return f"WRONG ({codes:g} codes)"
        return f"WRONG (rel {rel:.1e})" if isinstance(rel, float) else "WRONG (non-finite)"
    return status


def _ok(r: dict | None) -> bool:
    return r is not None and r.get("status", "ok") == "ok" and isinstance(r.get("median_ms"), (int, float))


def _ratio(num: dict | None, den: dict | None) -> str:
    """num's time over den's ("2.10x": den is 2.1 times faster), or "-"."""
    return f"{num['median_ms'] / den['median_ms']:.2f}x" if _ok(num) and _ok(den) and den["median_ms"] > 0 else "-"


def _e2e_cell(r: dict | None, with_speedup: bool) -> str:
    if r is None:
        return ""
    bad = _status_cell(r)
    if bad:
        return bad
    cell = f"{_fmt_rate(r.get('images_per_s'))} img/s, {_fmt_ms(r.get('median_ms'))} ms"
    sp = r.get("fastres_speedup")
    if with_speedup and isinstance(sp, (int, float)):
        cell += f" (fastres {sp:.2f}x)"
    return cell


def _system_order(names: Iterable[str], known: Sequence[str]) -> list[str]:
    names = set(names)
    return [s for s in known if s in names] + sorted(names - set(known))


def markdown_e2e_table(results: dict, *, models: Sequence[str] | None = None) -> str:
    """The end-to-end table: one row per (model, dtype, batch), one column per system with
    images/s and median latency; baselines also show fastres' speedup over them
    (baseline median / fastres median, > 1 means fastres is faster)."""
    recs = [r for r in results.get("records", []) if r.get("kind", "e2e") == "e2e"]
    if models:
        recs = [r for r in recs if r["model"] in models]
    if not recs:
        return "_no end-to-end records_\n"
    systems = _system_order((r["system"] for r in recs), ALL_E2E_SYSTEMS)
    rows: dict[tuple, dict] = {}
    for r in recs:
        rows.setdefault((r["model"], r["dtype"], r.get("size", 224), r["batch"]), {})[r["system"]] = r
    model_order = {m: i for i, m in enumerate(E2E_MODELS)}
    lines = []
    if results.get("smoke"):
        lines.append(f"**{SMOKE_LABEL}**\n")
    lines.append("| model | dtype | size | batch | " + " | ".join(systems) + " |")
    lines.append("|---|---|---|---:|" + "---|" * len(systems))
    for (model, dtype, size, batch) in sorted(rows, key=lambda k: (model_order.get(k[0], 99), k[0], k[1], k[2], k[3])):
        cells = [_e2e_cell(rows[(model, dtype, size, batch)].get(s), s != "fastres") for s in systems]
        lines.append(f"| {model} | {dtype} | {size} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_layer_table(results: dict) -> str:
    """Per-layer tables, one per (model, dtype, batch): the fastres kernel's time, TFLOP/s and
    % of the measured matrix peak beside cuDNN's fused eager and conv-only times."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "layer"]
    if not recs:
        return "_no per-layer records_\n"
    groups = _layer_groups(recs)
    out = []
    if results.get("smoke"):
        out.append(f"**{SMOKE_LABEL}**\n")
    for (model, dtype, batch) in sorted(groups):
        layers = groups[(model, dtype, batch)]
        if dtype in EIGHT_BIT:
            out += _eight_bit_layer_table(model, dtype, batch, layers, groups.get((model, "float16", batch), {}))
            continue
        out.append(f"#### {model}, {dtype}, batch {batch}\n")
        out.append("| layer | uses | fastres ms | TFLOP/s | % peak | cudnn-eager ms | cudnn-conv ms | fastres vs cudnn-eager |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        totals = {"fastres": 0.0, "cudnn-eager": 0.0, "cudnn-conv": 0.0}
        complete = {k: True for k in totals}
        for layer, by_sys in layers.items():
            f, e, c = by_sys.get("fastres"), by_sys.get("cudnn-eager"), by_sys.get("cudnn-conv")
            any_rec = f or e or c
            uses = len(any_rec.get("uses", ())) or 1

            def t(r):
                if r is None:
                    return "-"
                return _status_cell(r) or _fmt_ms(r.get("median_ms"))

            for name, r in (("fastres", f), ("cudnn-eager", e), ("cudnn-conv", c)):
                if r is not None and r.get("status", "ok") == "ok":
                    totals[name] += r["median_ms"] * uses
                else:
                    complete[name] = False
            ok_f = f is not None and f.get("status", "ok") == "ok"
            ok_e = e is not None and e.get("status", "ok") == "ok"
            tflops = f"{f['tflops']:.1f}" if ok_f and isinstance(f.get("tflops"), (int, float)) else "-"
            pct = f"{f['pct_peak']:.0f}%" if ok_f and isinstance(f.get("pct_peak"), (int, float)) else "-"
            ratio = f"{e['median_ms'] / f['median_ms']:.2f}x" if ok_f and ok_e and f["median_ms"] > 0 else "-"
            out.append(f"| {layer} | {uses} | {t(f)} | {tflops} | {pct} | {t(e)} | {t(c)} | {ratio} |")
        if all(complete.values()) and totals["fastres"] > 0:
            out.append(
                f"| **all convs, x uses** | | **{_fmt_ms(totals['fastres'])}** | | | **{_fmt_ms(totals['cudnn-eager'])}** "
                f"| **{_fmt_ms(totals['cudnn-conv'])}** | **{totals['cudnn-eager'] / totals['fastres']:.2f}x** |"
            )
        out.append("")
    return "\n".join(out) + "\n"


def _layer_groups(recs: Iterable[dict]) -> dict[tuple, dict[str, dict[str, dict]]]:
    """(model, dtype, batch) -> layer -> system -> record."""
    groups: dict[tuple, dict[str, dict[str, dict]]] = {}
    for r in recs:
        groups.setdefault((r["model"], r["dtype"], r["batch"]), {}).setdefault(r["layer"], {})[r["system"]] = r
    return groups


def eight_bit_totals(layers: dict[str, dict[str, dict]], float16: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Sums over distinct convs x uses of one 8-bit group's fastres times ("fastres"), and of the
    same layers' float16 records ("fastres float16", "cudnn-eager float16", "cudnn-conv
    float16"); a sum is left out where any of its layers has no timed record."""
    cols = {"fastres": lambda l: layers[l].get("fastres")}
    cols.update({f"{s} float16": (lambda l, s=s: float16.get(l, {}).get(s)) for s in LAYER_SYSTEMS})
    totals = {}
    for name, get in cols.items():
        recs = [(get(l), len((layers[l].get("fastres") or {}).get("uses", ())) or 1) for l in layers]
        if recs and all(_ok(r) for r, _ in recs):
            totals[name] = sum(r["median_ms"] * uses for r, uses in recs)
    return totals


def _eight_bit_layer_table(model: str, dtype: str, batch: int, layers: dict[str, dict[str, dict]],
                           float16: dict[str, dict[str, dict]]) -> list[str]:
    """One 8-bit per-layer table: fastres' 8-bit conv beside the float16 records of the same
    layer and batch (fastres' and cuDNN's, which has no 8-bit conv through torch), and the
    megabytes 8 bits save per use."""
    out = [f"#### {model}, {dtype}, batch {batch} (beside float16: cuDNN has no int8 or e4m3 conv through torch)\n",
           "| layer | uses | fastres ms | TOP/s | % peak | fastres float16 ms | cudnn-eager float16 ms | vs fastres float16 "
           "| vs cudnn-eager float16 | MB saved |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for layer, by_sys in layers.items():
        q = by_sys.get("fastres")
        if q is None:
            continue
        f, e = float16.get(layer, {}).get("fastres"), float16.get(layer, {}).get("cudnn-eager")
        tops = f"{q['tflops']:.1f}" if _ok(q) and isinstance(q.get("tflops"), (int, float)) else "-"
        pct = f"{q['pct_peak']:.0f}%" if _ok(q) and isinstance(q.get("pct_peak"), (int, float)) else "-"
        saved = (f"{(q['bytes_float16'] - q['bytes']) / 1e6:.2f}"
                 if isinstance(q.get("bytes_float16"), int) and isinstance(q.get("bytes"), int) else "-")
        cells = [_status_cell(r) or _fmt_ms(r.get("median_ms")) if r else "-" for r in (q, f, e)]
        out.append(f"| {layer} | {len(q.get('uses', ())) or 1} | {cells[0]} | {tops} | {pct} | {cells[1]} | {cells[2]} "
                   f"| {_ratio(f, q)} | {_ratio(e, q)} | {saved} |")
    totals = eight_bit_totals(layers, float16)
    if "fastres" in totals:
        def vs(name):
            return f"**{totals[name] / totals['fastres']:.2f}x**" if name in totals else "-"

        out.append(f"| **all convs, x uses** | | **{_fmt_ms(totals['fastres'])}** | | "
                   f"| {_fmt_ms(totals.get('fastres float16'))} | {_fmt_ms(totals.get('cudnn-eager float16'))} "
                   f"| {vs('fastres float16')} | {vs('cudnn-eager float16')} | |")
    out.append("")
    return out


def markdown_eight_bit_table(results: dict) -> str:
    """End to end in 8 bits beside float16, per (model, size, batch): fastres' float16 engine,
    the faster of cuDNN's float16 eager and graphed, and each 8-bit engine's images/s with its
    speedup over both."""
    recs = [r for r in results.get("records", []) if r.get("kind", "e2e") == "e2e"]
    rows: dict[tuple, dict[tuple, dict]] = {}
    for r in recs:
        rows.setdefault((r["model"], r.get("size", 224), r["batch"]), {})[(r["dtype"], r["system"])] = r
    rows = {k: v for k, v in rows.items() if any(d in EIGHT_BIT and s == "fastres" for d, s in v)}
    if not rows:
        return ""
    model_order = {m: i for i, m in enumerate(E2E_MODELS)}
    out = ["| model | size | batch | fastres float16 | cuDNN float16 (best) | " + " | ".join(f"fastres {d}" for d in EIGHT_BIT)
           + " |", "|---|---|---:|---|---|" + "---|" * len(EIGHT_BIT)]
    for key in sorted(rows, key=lambda k: (model_order.get(k[0], 99), k)):
        by = rows[key]
        f16 = by.get(("float16", "fastres"))
        cudnn = [r for r in (by.get(("float16", s)) for s in ("cudnn-eager", "cudnn-eager-graph")) if _ok(r)]
        best = min(cudnn, key=lambda r: r["median_ms"]) if cudnn else None
        cells = [_e2e_cell(f16, False) or "-",
                 f"{_e2e_cell(best, False)} ({best['system']})" if best else "-"]
        for d in EIGHT_BIT:
            q = by.get((d, "fastres"))
            cell = _e2e_cell(q, False) or "-"
            if _ok(q):
                cell += f" ({_ratio(f16, q)} fastres float16, {_ratio(best, q)} cuDNN)"
            cells.append(cell)
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def render_markdown(results: dict) -> str:
    """The whole report of a results file: header, measured peaks, e2e table, per-layer tables."""
    lines = []
    title = "fastres benchmark" + (f" ({SMOKE_LABEL})" if results.get("smoke") else "")
    lines.append(f"# {title}\n")
    commit = results.get("commit") or "unknown"
    if results.get("dirty"):
        commit += " (uncommitted changes)"
    lines.append(
        f"{results.get('device', '?')}, {results.get('date', '?')}; commit {commit}; torch {results.get('torch')}, "
        f"triton {results.get('triton')}, CUDA {results.get('cuda')}, cuDNN {results.get('cudnn')}.\n"
    )
    peaks = results.get("peaks") or {}
    if peaks:
        parts = [f"{dt} matmul " + (f"{v:.3g} T{'' if dt in EIGHT_BIT else 'FL'}OP/s" if v else "not measured")
                 for dt, v in (peaks.get("matmul_tflops") or {}).items()]
        if peaks.get("copy_tb_s"):
            parts.append(f"device-to-device copy {peaks['copy_tb_s']:.3g} TB/s (read + write)")
        lines.append(f"Measured peaks ({peaks.get('note', '')}): " + "; ".join(parts) + ".\n")
    timing = results.get("timing")
    if timing:
        lines.append(f"Timing: {timing}\n")
    for note in (results.get("incomplete") or {}).values():
        lines.append(f"**Incomplete:** {note}\n")
    lines.append("## End to end\n")
    lines.append(markdown_e2e_table(results))
    eight = markdown_eight_bit_table(results)
    if eight:
        lines.append("### 8 bits beside float16 (cuDNN has no int8 or e4m3 conv through torch)\n")
        lines.append(eight)
    lines.append("## Per layer\n")
    lines.append(markdown_layer_table(results))
    variants = markdown_variant_table(results)
    if variants:
        lines.append("## Kernel variants per layer (fastres only)\n")
        lines.append(variants)
    heads = markdown_head_table(results)
    if heads:
        lines.append("## Classifier head\n")
        lines.append(heads)
    from .preprocess import markdown_preprocess_table

    preprocess = markdown_preprocess_table(results)
    if preprocess:
        lines.append("## Preprocessing per core (`fastres bench preprocess`: decode + resize + crop)\n")
        if results.get("preprocess_host"):
            lines.append(f"Measured on {results['preprocess_host']}; torch threads = 1.\n")
        lines.append(preprocess)
    from .mlperf_results import markdown_mlperf_table

    mlperf = markdown_mlperf_table(results)
    if mlperf:
        lines.append("## MLPerf LoadGen (`fastres bench mlperf`)\n")
        lines.append(mlperf)
    predict = markdown_predict_table(results)
    if predict:
        lines.append("## Classify pipeline (`fastres predict` on generated JPEGs)\n")
        lines.append(predict)
    return "\n".join(lines)


def _shares(r: dict) -> str:
    share = r.get("stage_share") or {}
    return " / ".join(f"{100 * share[k]:.0f}%" if isinstance(share.get(k), (int, float)) else "-"
                      for k in ("decode", "preprocess", "model"))


def markdown_predict_table(results: dict) -> str:
    """The image pipeline per (model, dtype, batch, system): images/s, the fraction of the
    engine-only rate it reaches, and the decode / preprocess / model shares of its busy time."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "predict"]
    if not recs:
        return ""
    out = ["| model | dtype | batch | system | img/s | of engine-only | decode / preprocess / model | workers |",
           "|---|---|---:|---|---:|---:|---|---:|"]
    for r in sorted(recs, key=lambda r: (r["model"], r["dtype"], r["batch"], r["system"])):
        bad = _status_cell(r)
        rate = bad or _fmt_rate(r.get("images_per_s"))
        frac = f"{100 * r['of_engine_only']:.0f}%" if isinstance(r.get("of_engine_only"), (int, float)) else "-"
        shares = _shares(r) if r.get("stage_share") else "-"
        out.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['system']} | {rate} | {frac} | {shares} "
                   f"| {r.get('workers', '-')} |")
    return "\n".join(out) + "\n"


def markdown_variant_table(results: dict) -> str:
    """Each layer's kernel variants side by side (``bench layers --variants``): the config,
    time, TFLOP/s, % of the measured matrix peak and the speedup over fastres' default."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "layer" and r.get("variants")]
    if not recs:
        return ""
    out = ["| model | dtype | batch | layer | variant | config | ms | TFLOP/s | % peak | vs default |",
           "|---|---|---:|---|---|---|---:|---:|---:|---:|"]
    for r in sorted(recs, key=lambda r: (r["model"], r["dtype"], r["batch"], r["layer"])):
        for v in r["variants"]:
            ok = v.get("status") == "ok"
            ms = _fmt_ms(v.get("median_ms")) if ok else v.get("status", "-")
            tf = f"{v['tflops']:.1f}" if ok and v.get("tflops") else "-"
            pct = f"{v['pct_peak']:.0f}%" if ok and v.get("pct_peak") else "-"
            sp = f"{v['speedup']:.2f}x" if ok and v.get("speedup") else "-"
            out.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['layer']} | {v['variant']} | {v['config']} "
                       f"| {ms} | {tf} | {pct} | {sp} |")
    return "\n".join(out) + "\n"


def markdown_head_table(results: dict) -> str:
    """The classifier head alone per (model, dtype, batch): fastres beside torch eager."""
    recs = [r for r in results.get("records", []) if r.get("kind") == "head"]
    if not recs:
        return ""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in recs:
        groups.setdefault((r["model"], r["dtype"], r["batch"], r["layer"]), {})[r["system"]] = r
    out = ["| model | dtype | batch | head | fastres ms | config | unsplit ms | cudnn-eager ms | fastres vs cudnn-eager |",
           "|---|---|---:|---|---:|---|---:|---:|---:|"]
    for (model, dtype, batch, layer), by_sys in sorted(groups.items()):
        f, e = by_sys.get("fastres") or {}, by_sys.get("cudnn-eager") or {}

        def cell(r):
            return _status_cell(r) or _fmt_ms(r.get("median_ms")) if r else "-"

        ratio = f"{e['fastres_speedup']:.2f}x" if e.get("fastres_speedup") else "-"
        unsplit = _fmt_ms(f.get("unsplit_median_ms")) if f.get("unsplit_median_ms") else "-"
        out.append(f"| {model} | {dtype} | {batch} | {layer} | {cell(f)} | {f.get('config', '-')} | {unsplit} "
                   f"| {cell(e)} | {ratio} |")
    return "\n".join(out) + "\n"


def summary_text(results: dict) -> str:
    """A short fixed-width overview (printed last by bench/device_run.sh): e2e medians with
    fastres' speedup over each baseline (8-bit: over the float16 records of the same point),
    per-layer totals (distinct convs x uses), and every record that is wrong or failed."""
    lines = []
    if results.get("smoke"):
        lines.append(SMOKE_LABEL)
    recs = results.get("records", [])
    e2e = [r for r in recs if r.get("kind", "e2e") == "e2e"]
    if e2e:
        systems = _system_order((r["system"] for r in e2e), ALL_E2E_SYSTEMS)
        lines.append("e2e median ms (fastres speedup = baseline / fastres)")
        lines.append(f"{'model':10s}{'dtype':14s}{'batch':>6s}  " + "".join(f"{s:>20s}" for s in systems))
        rows: dict[tuple, dict] = {}
        for r in e2e:
            rows.setdefault((r["model"], r["dtype"], r["batch"]), {})[r["system"]] = r
        for key in sorted(rows, key=lambda k: (E2E_MODELS.index(k[0]) if k[0] in E2E_MODELS else 99, k)):
            cells = []
            for s in systems:
                r = rows[key].get(s)
                if r is None:
                    cells.append("")
                elif r.get("status", "ok") != "ok":
                    cells.append(r.get("status", "?"))
                else:
                    sp = r.get("fastres_speedup")
                    cells.append(f"{r['median_ms']:.3f}" + (f" ({sp:.2f}x)" if isinstance(sp, (int, float)) else ""))
            lines.append(f"{key[0]:10s}{key[1]:14s}{key[2]:>6d}  " + "".join(f"{c:>20s}" for c in cells))
        for key in sorted(k for k in rows if k[1] in EIGHT_BIT and _ok(rows[k].get("fastres"))):
            q = rows[key]["fastres"]
            f16 = rows.get((key[0], "float16", key[2]), {})
            vs = [f"{_ratio(f16.get(s), q)} {s} float16" for s in ("fastres", "cudnn-eager", "cudnn-eager-graph")
                  if _ok(f16.get(s))]
            lines.append(f"8-bit e2e {key[0]} {key[1]} b{key[2]}: {q['median_ms']:.3f} ms"
                         + (": " + ", ".join(vs) if vs else " (no float16 records to compare)"))
    layer = [r for r in recs if r.get("kind") == "layer"]
    if layer:
        lines.append("per-layer totals, ms (sum over distinct convs x uses; complete groups only)")
        groups: dict[tuple, dict[str, list]] = {}
        for r in layer:
            groups.setdefault((r["model"], r["dtype"], r["batch"]), {}).setdefault(r["system"], []).append(r)
        by_layer = _layer_groups(layer)
        for key in sorted(groups):
            n = len(by_layer[key])
            if key[1] in EIGHT_BIT:  # beside the float16 records of the same layers
                t = eight_bit_totals(by_layer[key], by_layer.get((key[0], "float16", key[2]), {}))
                parts = [f"fastres {t['fastres']:.3f}" if "fastres" in t else "fastres incomplete"]
                parts += [f"{s} {t[s]:.3f} (fastres {t[s] / t['fastres']:.2f}x)" for s in
                          ("fastres float16", "cudnn-eager float16") if s in t and "fastres" in t]
                lines.append(f"{key[0]:10s}{key[1]:14s}b{key[2]:<5d} {n:2d} convs: " + ", ".join(parts))
                continue
            parts = []
            totals = {}
            for s in _system_order(groups[key], LAYER_SYSTEMS):
                rs = groups[key][s]
                if all(r.get("status", "ok") == "ok" for r in rs):
                    totals[s] = sum(r["median_ms"] * max(1, len(r.get("uses", ()))) for r in rs)
                    parts.append(f"{s} {totals[s]:.3f}")
                else:
                    parts.append(f"{s} incomplete")
            ratio = ""
            if totals.get("fastres") and totals.get("cudnn-eager"):
                ratio = f"  fastres {totals['cudnn-eager'] / totals['fastres']:.2f}x vs cudnn-eager"
            lines.append(f"{key[0]:10s}{key[1]:14s}b{key[2]:<5d} {n:2d} convs: " + ", ".join(parts) + ratio)
    for r in (r for r in recs if r.get("kind") == "head" and r.get("system") == "fastres"):
        eager = next((e for e in recs if e.get("kind") == "head" and e.get("system") == "cudnn-eager"
                      and all(e.get(k) == r.get(k) for k in ("model", "dtype", "batch", "size"))), None)
        parts = [f"fastres {_fmt_ms(r.get('median_ms'))} ms ({r.get('config')})"]
        if eager is not None:
            parts.append(f"cudnn-eager {_fmt_ms(eager.get('median_ms'))} ms")
        if r.get("status") != "ok":
            parts.append(f"{r.get('status')}: {r.get('reason')}")
        lines.append(f"head {r['model']} {r['dtype']} b{r['batch']}: " + ", ".join(parts))
    split = [r for r in recs if r.get("unsplit_median_ms") and r.get("median_ms")]
    if split:
        lines.append("split-K layers (fastres split vs the same tile unsplit, device time)")
        for r in split:
            lines.append(f"  {r['model']} {r['dtype']} b{r['batch']} {r['layer']}: {r['config']} "
                         f"{r['median_ms'] * 1e3:.1f} us vs {r['unsplit_median_ms'] * 1e3:.1f} us "
                         f"({r['split_speedup']:.2f}x)")
    for r in (r for r in recs if r.get("kind") == "predict" and r.get("status", "ok") == "ok"):
        frac = f", {100 * r['of_engine_only']:.0f}% of engine-only" if r.get("of_engine_only") else ""
        shares = f" (decode / preprocess / model {_shares(r)})" if r.get("stage_share") else ""
        lines.append(f"predict {r['model']} {r['dtype']} b{r['batch']} {r['system']}: "
                     f"{_fmt_rate(r.get('images_per_s'))} img/s{frac}{shares}")
    bad = [r for r in recs if r.get("status") in ("wrong", "error")]
    for r in bad:
        lines.append(f"{r['status'].upper()}: {r.get('kind')} {r['model']} {r.get('layer', '')} b{r['batch']} {r['dtype']} "
                     f"{r['system']}: {r.get('reason')}")
    for note in (results.get("incomplete") or {}).values():
        lines.append(f"incomplete: {note}")
    return "\n".join(lines) + "\n"


def write_plot(results: dict, path: Path) -> Path | None:
    """img/s vs batch, one line per system, one panel per (model, dtype); None (with a message)
    when matplotlib is missing or there are no end-to-end records."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed", flush=True)
        return None
    recs = [r for r in results.get("records", []) if r.get("kind", "e2e") == "e2e" and r.get("status", "ok") == "ok"]
    if not recs:
        print("plot skipped: no timed end-to-end records", flush=True)
        return None
    panels = sorted({(r["model"], r["dtype"]) for r in recs}, key=lambda k: (E2E_MODELS.index(k[0]) if k[0] in E2E_MODELS else 99, k))
    models = sorted({m for m, _ in panels}, key=lambda m: E2E_MODELS.index(m) if m in E2E_MODELS else 99)
    dtypes = sorted({d for _, d in panels})
    fig, axes = plt.subplots(len(models), len(dtypes), figsize=(max(6.4, 4.2 * len(dtypes)), 0.6 + 3.2 * len(models)),
                             squeeze=False)
    batches = sorted({r["batch"] for r in recs})
    systems = _system_order((r["system"] for r in recs), ALL_E2E_SYSTEMS)
    for i, model in enumerate(models):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            for s in systems:
                pts = sorted((r["batch"], r["images_per_s"]) for r in recs if (r["model"], r["dtype"], r["system"]) == (model, dtype, s))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches)
            ax.set_xticklabels([str(b) for b in batches])
            ax.minorticks_off()
            ax.set_title(f"{model}, {dtype}", fontsize=9)
            ax.set_xlabel("batch")
            ax.set_ylabel("images/s")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    head = f"{results.get('device', '')}, {results.get('date', '')}, commit {str(results.get('commit') or '?')[:10]}"
    if results.get("smoke"):
        head = f"{SMOKE_LABEL}\n{head}"
    fig.suptitle(head, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(json_path: Path, results: dict | None = None, *, plot: bool = True) -> tuple[Path, Path | None]:
    """Write `<name>.md` (and `<name>.png`) beside a results file; returns their paths."""
    results = results if results is not None else load_results(json_path)
    md = json_path.with_suffix(".md")
    md.write_text(render_markdown(results))
    png = write_plot(results, json_path.with_suffix(".png")) if plot else None
    return md, png
