"""One result per input (`Prediction`) and writing them as they come: JSON lines (one object
per input file) or CSV (one row per input file), flushed after every batch; or Parquet (one
row per input file, the JSON line's schema; needs pyarrow, which `fastres[ray]` brings)."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import IO, Iterator

import torch

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet",)
# Parquet buffers rows into row groups: a group per batch would make files of tiny groups.
PARQUET_GROUP_ROWS = 1024


@dataclasses.dataclass(frozen=True)
class Top:
    """One of an image's best classes: its index, label and softmax probability."""

    index: int
    label: str
    prob: float


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The result for one input: `top` (best first) or `error` (why it was not classified).
    `path` is the file (None for a tensor input); `logits` (float32, CPU) when classified."""

    path: str | None
    top: tuple[Top, ...] | None = None
    error: str | None = None
    logits: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """The JSON line: {"path", "top": [{"index", "label", "prob"}, ...]} or {"path", "error"}."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "top": [{"index": t.index, "label": t.label, "prob": _prob(t.prob)} for t in self.top]}


def _prob(p: float) -> float:
    return float(f"{p:.6g}")


class JsonLinesWriter:
    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, pred: Prediction) -> None:
        self.stream.write(json.dumps(pred.to_dict(), ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self.stream.flush()


class CsvWriter:
    """Columns: path, index_1, label_1, prob_1, ..., index_K, label_K, prob_K, error."""

    def __init__(self, stream: IO[str], topk: int):
        self.stream, self.topk = stream, topk
        self.csv = csv.writer(stream, lineterminator="\n")
        self.csv.writerow(["path", *[f"{c}_{r}" for r in range(1, topk + 1) for c in ("index", "label", "prob")], "error"])

    def write(self, pred: Prediction) -> None:
        cells: list = [pred.path]
        top = pred.top or ()
        for r in range(self.topk):
            cells += [top[r].index, top[r].label, _prob(top[r].prob)] if r < len(top) else ["", "", ""]
        self.csv.writerow(cells + [pred.error or ""])

    def flush(self) -> None:
        self.stream.flush()


def parquet_schema():
    """The Parquet columns: path (string), top (list of {index int64, label string, prob
    double}, null for an error), error (string, null when classified)."""
    import pyarrow as pa

    top = pa.struct([("index", pa.int64()), ("label", pa.string()), ("prob", pa.float64())])
    return pa.schema([("path", pa.string()), ("top", pa.list_(top)), ("error", pa.string())])


class ParquetWriter:
    """One row per input, in row groups of PARQUET_GROUP_ROWS; the file is complete on close."""

    def __init__(self, path: str | os.PathLike):
        import pyarrow.parquet as pq

        self.schema = parquet_schema()
        self.file = pq.ParquetWriter(str(path), self.schema)
        self.rows: list[dict] = []

    def write(self, pred: Prediction) -> None:
        row = pred.to_dict()
        self.rows.append({"path": row["path"], "top": row.get("top"), "error": row.get("error")})
        if len(self.rows) >= PARQUET_GROUP_ROWS:
            self._write_group()

    def _write_group(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.file.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def flush(self) -> None:
        """Nothing until a row group is full (Parquet is written in groups, not lines)."""

    def close(self) -> None:
        self._write_group()
        self.file.close()


def output_format(out: str | os.PathLike | None) -> str:
    """"jsonl", "csv" or "parquet" for an --out file (by suffix; stdout is JSON lines).
    ValueError otherwise, or for Parquet without pyarrow installed."""
    if out is None:
        return "jsonl"
    suffix = Path(out).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError(f"--out {out}: Parquet needs pyarrow: pip install 'fastres[ray]' (or pyarrow)")
        return "parquet"
    raise ValueError(f"--out {out}: name a .csv file (CSV), a .jsonl / .json / .ndjson file (JSON lines) "
                     "or a .parquet file")


@contextlib.contextmanager
def open_writer(out: str | os.PathLike | None, topk: int, stdout: IO[str] | None = None) -> Iterator:
    """A writer to `out` (its format by suffix) or, without it, JSON lines on stdout."""
    fmt = output_format(out)
    if out is None:
        stream = stdout or sys.stdout
        yield JsonLinesWriter(stream)
        stream.flush()
        return
    if fmt == "parquet":
        writer = ParquetWriter(out)
        try:
            yield writer
        finally:
            writer.close()
        return
    with open(out, "w", encoding="utf-8", newline="") as f:
        yield CsvWriter(f, topk) if fmt == "csv" else JsonLinesWriter(f)


def read_parquet(path: str | os.PathLike) -> list[dict]:
    """The rows a ParquetWriter wrote, back as JSON-line dicts."""
    import pyarrow.parquet as pq

    return [{"path": r["path"], "error": r["error"]} if r["error"] is not None else {"path": r["path"], "top": r["top"]}
            for r in pq.read_table(str(path)).to_pylist()]


def read_output(text: str, fmt: str) -> list[dict]:
    """The results a writer wrote, back as JSON-line dicts (for checking and tests)."""
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = list(csv.DictReader(io.StringIO(text)))
    out = []
    for row in rows:
        if row["error"]:
            out.append({"path": row["path"], "error": row["error"]})
            continue
        top, r = [], 1
        while f"index_{r}" in row and row[f"index_{r}"] != "":
            top.append({"index": int(row[f"index_{r}"]), "label": row[f"label_{r}"], "prob": float(row[f"prob_{r}"])})
            r += 1
        out.append({"path": row["path"], "top": top})
    return out
