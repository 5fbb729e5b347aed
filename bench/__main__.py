"""Run every benchmark in turn, then print the figures that have targets: python -m bench.

Each bench_NAME.py writes its figures to bench/out/NAME.json (see bench/report.py); the summary table
at the end reads the files this run wrote."""

import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from .report import OUT, summary


def main() -> int:
    began = time.time()
    failed = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            print(f"\n=== {info.name} ===", flush=True)
            saved = sys.argv
            sys.argv = [info.name]
            try:
                importlib.import_module(f"bench.{info.name}").main()
            except (Exception, SystemExit) as err:  # one broken bench does not hide the others' figures
                if isinstance(err, SystemExit):
                    print(f"{info.name}: {err}", file=sys.stderr)
                else:
                    traceback.print_exc()
                failed.append(info.name)
            finally:
                sys.argv = saved
    reports = []
    for path in sorted(OUT.glob("*.json")):
        report = json.loads(path.read_text())
        if report.get("started", 0) >= began:
            reports.append(report)
    print("\n=== summary ===")
    print(summary(reports))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


sys.exit(main())
