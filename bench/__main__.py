"""Run every benchmark in turn: python -m bench."""

import importlib
import pkgutil
import sys
from pathlib import Path

for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
    if info.name.startswith("bench_"):
        print(f"\n=== {info.name} ===", flush=True)
        module = importlib.import_module(f"bench.{info.name}")
        saved = sys.argv
        sys.argv = [info.name]
        try:
            module.main()
        finally:
            sys.argv = saved
