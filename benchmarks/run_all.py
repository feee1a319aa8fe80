"""Run every benchmarks/bench_*.py and plugins/*/benchmarks/bench_*.py in turn
(``tox -e bench``); pass names (``core``, ``qwen_kv``, ...) to run a subset."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

here = Path(__file__).parent
wanted = set(sys.argv[1:])
scripts = sorted(here.glob("bench_*.py")) + sorted(here.parent.glob("plugins/*/benchmarks/bench_*.py"))
for script in scripts:
    if wanted and script.stem not in wanted and script.stem.removeprefix("bench_") not in wanted:
        continue
    print(f"\n=== {script.stem} ===", flush=True)
    sys.argv = [str(script)]
    runpy.run_path(str(script), run_name="__main__")
