"""Every benchmark still imports: benchmarks are run by hand, not by the suite, so a
renamed helper (bench_api importing start_agents after it moved to sim_agents) would
otherwise be found only by the next person measuring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_every_benchmark_module_imports() -> None:
    names = sorted(path.stem for path in BENCH.glob("*.py"))
    assert "bench_hosts" in names
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run(
        [sys.executable, "-c", script, *names],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
