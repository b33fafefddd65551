"""Formatting gate rows for people: the table, the failing-config summary and the summary line."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from .cache import triton_version
from .target import Target


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table (one line per row, a header and a rule); "mma" says
    whether a GEMM row uses its target's tensor-core instruction (wgmma on sm_90)."""
    headers = ["target", "kernel", "config", "dtype", "variant", "regs", "stack", "shared", "mma", "ok"]

    def wg(r: dict) -> str:
        if r.get("tensor_core") is None or not r.get("gemm"):
            return "-"
        return "yes" if r["tensor_core"] else ("no" if r.get("tensor_core_required") else "no (fp32 fma)")

    def cell(v) -> str:
        return "-" if v is None else str(v)

    body = [
        [r.get("target", "-"), r["kernel"], r["config"], r["dtype"], r.get("variant", ""), cell(r["registers"]),
         cell(r["stack"]), cell(r["shared"]), wg(r), "ok" if r["ok"] else "FAIL: " + str(r.get("error"))]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def failing_configs(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per failing (target, kernel, config, dtype): how many variants fail and why."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("target", "-"), r["kernel"], r["config"], r["dtype"]), []).append(r)
    lines = []
    for (t, k, c, d), rs in groups.items():
        bad = [r for r in rs if not r["ok"]]
        if not bad:
            continue
        reasons = []
        spill = [r for r in bad if r.get("spills")]
        if spill:
            reasons.append(f"spills (STACK up to {max(r['stack'] or 0 for r in spill)} B)")
        for r in bad:
            err = r.get("error") or "?"
            for part in err.split("; "):
                if not part.startswith("spills") and part not in reasons:
                    reasons.append(part)
        worst = ", ".join(r.get("variant", "?").split()[0] for r in bad)
        lines.append(f"{t} {k} {c} {d}: {'; '.join(reasons)} in {len(bad)}/{len(rs)} variants ({worst})")
    return lines


def summary_line(rows: Sequence[dict[str, Any]], targets: Target | Iterable[Target], elapsed: float) -> str:
    """How many rows passed, for which targets and triton, how fast and how many came from the
    cache; with several targets, how many rows passed on each."""
    targets = [targets] if isinstance(targets, Target) else list(targets)
    failed = [r for r in rows if not r["ok"]]
    cached = sum(1 for r in rows if r.get("cached"))
    configs = len({(r.get("target"), r["kernel"], r["config"], r["dtype"]) for r in failed})
    # A row is one config (kernel, tile, dtype) compiled at one variant: say which is counted.
    outcome = (f"{len(failed)} failed, from {configs} config{'s' if configs != 1 else ''} (kernel, tile, dtype)"
               if failed else "none failed")
    line = (
        f"fastres check: {len(rows) - len(failed)}/{len(rows)} rows ok, {outcome} "
        f"for {', '.join(t.name for t in targets)} with triton {triton_version()} in {elapsed:.1f} s "
        f"({cached} of {len(rows)} read from the cache)"
    )
    if len(targets) > 1:
        per = []
        for t in targets:
            mine = [r for r in rows if r.get("target") == t.name]
            per.append(f"{t.name} {sum(1 for r in mine if r['ok'])}/{len(mine)}")
        line += "; ok per target: " + ", ".join(per)
    return line
