"""Figures of a benchmark run, each with its target, written as JSON under bench/out/ so runs can be compared.

    report = Report("compute")
    report.add("invokes/s at c=8", rate, "/s", target=2000, op=">=")   # a figure with its target
    report.add("raw fresh Store call", raw * 1e6, "us")                  # a raw step, no target
    report.write()                                                       # -> bench/out/compute.json

`python -m bench` ends with `summary()` of every report written in that run: figure, value, target,
met / NOT met, at 80 columns."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
OPS = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


@dataclass
class Figure:
    name: str
    value: float
    unit: str = ""
    target: float | None = None
    op: str | None = None  # how value compares to target: ">=", ">", "<=", "<"
    met: bool | None = None

    def target_text(self) -> str:
        return "" if self.target is None else f"{self.op} {_number(self.target)}"


def _number(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 1000 or x == int(x):
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


class Report:
    """The figures of one benchmark (bench/bench_NAME.py), in the order they were measured."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.figures: list[Figure] = []
        self.started = time.time()

    def add(self, name: str, value: float, unit: str = "", *, target: float | None = None,
            op: str | None = None) -> float:
        """Record a figure; with a target, `op` says which way is good (">=" for rates, "<" for times)."""
        if target is not None and op not in OPS:
            raise ValueError(f"a target needs op in {sorted(OPS)}, got {op!r}")
        met = None if target is None else bool(OPS[op](value, target))
        self.figures.append(Figure(name, float(value), unit, target, op, met))
        return value

    def as_dict(self) -> dict:
        return {"bench": self.bench, "started": self.started, "seconds": round(time.time() - self.started, 3),
                "argv": sys.argv[1:], "machine": {"cpus": os.cpu_count(), "load": os.getloadavg(),
                                                  "python": platform.python_version()},
                "figures": [asdict(f) for f in self.figures]}

    def write(self, out: Path = OUT) -> Path:
        """bench/out/<bench>.json (the latest run) and a copy stamped with the time (for comparing runs)."""
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.as_dict(), indent=2) + "\n"
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started))
        (out / "runs").mkdir(exist_ok=True)
        (out / "runs" / f"{self.bench}-{stamp}.json").write_text(text)
        path = out / f"{self.bench}.json"
        path.write_text(text)
        print(f"figures written to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
        return path


def summary(reports: list[dict], width: int = 80) -> str:
    """A table of every figure that has a target (figure, value, target, met), `width` columns wide."""
    rows = [(f"{r['bench']}: {f['name']}", f"{_number(f['value'])} {f['unit']}".strip(),
             f"{f['op']} {_number(f['target'])}", "met" if f["met"] else "NOT met")
            for r in reports for f in r["figures"] if f.get("target") is not None]
    if not rows:
        return "no figure with a target was measured"
    value_w = max(len("value"), *(len(r[1]) for r in rows))
    target_w = max(len("target"), *(len(r[2]) for r in rows))
    met_w = len("NOT met")
    name_w = max(10, width - value_w - target_w - met_w - 3)
    fit = lambda s, w: s if len(s) <= w else s[:w - 1] + "…"  # noqa: E731
    lines = [f"{'figure':<{name_w}} {'value':>{value_w}} {'target':>{target_w}} {'':<{met_w}}".rstrip(),
             "-" * min(width, name_w + value_w + target_w + met_w + 3)]
    lines += [f"{fit(n, name_w):<{name_w}} {v:>{value_w}} {t:>{target_w}} {m}" for n, v, t, m in rows]
    met = sum(r[3] == "met" for r in rows)
    lines.append(f"{met} of {len(rows)} targets met")
    return "\n".join(lines)
