"""Formatting gate rows for people: the table, the failing-config summary and the summary line."""
from __future__ import annotations

from typing import Any, Sequence

from .cache import triton_version
from .target import Target


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table (one line per row, a header and a rule)."""
    headers = ["kernel", "config", "dtype", "variant", "regs", "stack", "shared", "wgmma", "ok"]

    def wg(r: dict) -> str:
        if r.get("wgmma") is None:
            return "-"
        if not r.get("gemm"):
            return "-"
        return "yes" if r["wgmma"] else ("no" if r.get("wgmma_required") else "no (fp32 fma)")

    def cell(v) -> str:
        return "-" if v is None else str(v)

    body = [
        [r["kernel"], r["config"], r["dtype"], r.get("variant", ""), cell(r["registers"]), cell(r["stack"]),
         cell(r["shared"]), wg(r), "ok" if r["ok"] else "FAIL: " + str(r.get("error"))]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def failing_configs(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per failing (kernel, config, dtype): how many variants fail and why."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["config"], r["dtype"]), []).append(r)
    lines = []
    for (k, c, d), rs in groups.items():
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
        lines.append(f"{k} {c} {d}: {'; '.join(reasons)} in {len(bad)}/{len(rs)} variants ({worst})")
    return lines


def summary_line(rows: Sequence[dict[str, Any]], target: Target, elapsed: float) -> str:
    """How many rows passed, for which target and triton, how fast and how many came from the cache."""
    failed = [r for r in rows if not r["ok"]]
    cached = sum(1 for r in rows if r.get("cached"))
    return (
        f"fastres check: {len(rows) - len(failed)}/{len(rows)} rows ok, {len(failed)} failed "
        f"({len({(r['kernel'], r['config'], r['dtype']) for r in failed})} configs) "
        f"for {target.name} with triton {triton_version()} in {elapsed:.1f} s ({cached} cached)"
    )
