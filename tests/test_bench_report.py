"""bench/report.py: every figure is written with its target, and the summary fits 80 columns."""

from __future__ import annotations

import json

import pytest

from bench.report import Report, summary


def test_figures_are_written_with_their_targets_and_whether_they_were_met(tmp_path) -> None:
    report = Report("demo")
    report.add("invokes/s at c=8", 2500.0, "/s", target=2000, op=">=")
    report.add("p50 at c=1", 1.25, "ms", target=1, op="<")
    report.add("raw step", 3.0, "us")
    path = report.write(tmp_path)
    data = json.loads(path.read_text())
    assert path == tmp_path / "demo.json" and len(list((tmp_path / "runs").glob("demo-*.json"))) == 1
    figures = {f["name"]: f for f in data["figures"]}
    assert figures["invokes/s at c=8"] == {"name": "invokes/s at c=8", "value": 2500.0, "unit": "/s",
                                           "target": 2000, "op": ">=", "met": True}
    assert figures["p50 at c=1"]["met"] is False and figures["raw step"]["met"] is None
    with pytest.raises(ValueError):
        report.add("no direction", 1.0, target=2)


def test_the_summary_lists_every_target_within_80_columns() -> None:
    report = Report("market_network")
    report.add("a figure with a name far too long to fit in the summary's first column at all", 12_345.678, "MB/s",
               target=150, op=">=")
    report.add("added p50", 4.5, "ms", target=20, op="<")
    report.add("no target", 1.0)
    text = summary([report.as_dict()])
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert len(lines) == 2 + 2 + 1 and lines[-1] == "2 of 2 targets met"
    assert "12,346 MB/s" in text and ">= 150" in text and "< 20" in text and "no target" not in text
