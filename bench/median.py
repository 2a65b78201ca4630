"""Run a benchmark several times and keep the median of every figure, with the load
average of each run beside it (README figures are medians of at least three runs).

    python bench/median.py --runs 3 --result bench/results/engine-10000x1000.json -- \\
        bench/bench_engine.py --units 10000 --machines 1000

Writes RESULT with `.median.json` in place of `.json`: per figure the median and every
run's value, and per run the load average before it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def _numbers(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested figures get one dotted name each."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--result", required=True, help="the JSON file the benchmark writes")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"]
    result = Path(args.result)
    runs: list[dict[str, Any]] = []
    loads = []
    for run in range(args.runs):
        loads.append([round(x, 2) for x in os.getloadavg()])
        print(f"median: run {run + 1}/{args.runs} (load {loads[-1]})", file=sys.stderr)
        subprocess.run([sys.executable, *command], check=True)
        runs.append(_flat(json.loads(result.read_text())))
    figures: dict[str, Any] = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if all(_numbers(v) for v in values):
            figures[key] = {"median": statistics.median(values), "runs": values}
        else:
            figures[key] = values[0]
    document = {
        "command": " ".join(command),
        "runs": args.runs,
        "load_average_before": loads,
        "figures": figures,
    }
    out = result.with_name(result.name.removesuffix(".json") + ".median.json")
    out.write_text(json.dumps(document, indent=2) + "\n")
    width = max(map(len, figures))
    for key, value in figures.items():
        shown = value["median"] if isinstance(value, dict) else value
        print(f"{key:<{width}}  {shown}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
