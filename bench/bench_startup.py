"""CLI start-up and the agent's memory: what each verb costs before it does anything, what
each import costs, and the agent's RSS with N units.

    python bench/bench_startup.py [--repeat 5] [--units 200] [--fleetpy BIN] [--host-rootfs DIR]

Every figure is the median of --repeat fresh processes (bench/median.py runs the whole
benchmark N times on top). fleetpy's bytecode is compiled first, as pip does when it
installs a wheel (an editable checkout run with PYTHONDONTWRITEBYTECODE=1 has none, and
then every start compiles every fleetpy module it imports: --no-bytecode measures that):

- verbs: the wall time (and the CPU time, steadier on a shared machine) of the `fleetpy`
  console script (BIN, default the one beside this interpreter) from exec to exit: `--help`, `version`, `list-units` against a real etcd,
  and `start UNIT` of one new unit to active (blocking, as a user runs it), on a real etcd
  with the real engine and one real `fleetpy-agent` process whose unit manager is the
  simulated one (no systemd: the CLI's and fleetpy's share of the time, not systemd's);
- imports: per module, in a fresh interpreter of BIN's Python: the import's wall time,
  VmRSS after it and the modules loaded (the bare interpreter first, site included);
- agent: a `fleetpy-agent` process (simulated unit manager) with --units units placed on
  it and all active: VmRSS and VmHWM, as the host's agent runs by default and with
  MALLOC_ARENA_MAX=2 (as fleetpy-agent.service sets it);
- with --host-rootfs DIR (a host's rootfs, fleetpy/cluster/nspawn.py's cache; needs root):
  the agent's imports in a host's own Python (Debian's python3 with python3-dbus and
  python3-gi), one module after the other, with the RSS each adds (VmRSS, anonymous and
  file-backed), run in a chroot with this checkout bound at /opt/fleetpy/src.

Prints tables and writes bench/results/startup.json (with the load average and CPU count).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.unit import parse_unit

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
UNIT_TEXT = "[Service]\nExecStart=/bin/sleep infinity\n"

# What the CLI and the agent may load, each alone in a fresh interpreter.
IMPORTS = (
    "typer",
    "pydantic",
    "rich",
    "yaml",
    "jinja2",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "ssl",
    "grpc",
    "pyetcd.etcdrpc",
    "fleetpy.cli",
    "fleetpy.registry.facade",
    "fleetpy.client.operations",
    "fleetpy.client.waiting",
    "fleetpy.unitfile.unit",
    "fleetpy.model.records",
    "fleetpy.entrypoints",
    "fleetpy.agent",
    "fleetpy.engine",
)

# The agent's imports on a host, in the order its process loads them (cumulative).
HOST_IMPORTS = (
    "ssl",
    "dbus",
    "dbus.mainloop.glib",
    "gi.repository.GLib",
    "grpc",
    "pyetcd.etcdrpc",
    "fleetpy.model.records",
    "fleetpy.registry.facade",
    "fleetpy.agent",
    "fleetpy.systemd",
    "fleetpy.entrypoints",
    "yaml",
)

PROBE = """
import importlib, sys, time
def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields
rows = [["(interpreter)", 0.0, status(), len(sys.modules)]]
for name in sys.argv[1:]:
    began = time.perf_counter()
    importlib.import_module(name)
    rows.append([name, (time.perf_counter() - began) * 1000, status(), len(sys.modules)])
print(rows)
"""


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 4)


def timed(argv: Sequence[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """ARGV's wall time from exec to exit; its CPU seconds (user + system) appended to CPU:
    on a shared machine the CPU time varies less with the load than the wall time."""
    began = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {errors.decode()[-2000:]}")
    if cpu is not None:
        cpu.append(usage.ru_utime + usage.ru_stime)
    return elapsed


def probe(python: Sequence[str], modules: Sequence[str], cwd: Path | None = None) -> list[Any]:
    out = subprocess.run(
        [*python, "-c", PROBE, *modules], capture_output=True, text=True, check=True, cwd=cwd
    ).stdout
    return list(ast.literal_eval(out.strip().splitlines()[-1]))


def import_costs(python: str, repeat: int) -> dict[str, dict[str, float]]:
    """Each module alone in a fresh interpreter: median wall ms, VmRSS MiB, modules."""
    table: dict[str, dict[str, float]] = {}
    for name in ("(interpreter)", *IMPORTS):
        runs = [probe([python], [] if name == "(interpreter)" else [name]) for _ in range(repeat)]
        last = [r[-1] for r in runs]
        table[name] = {
            "ms": round(median([r[1] for r in last]), 1),
            "rss_mib": round(median([r[2]["VmRSS"] for r in last]), 1),
            "modules": last[0][3],
        }
    began = [timed([python, "-c", "pass"], dict(os.environ)) for _ in range(repeat)]
    table["(interpreter)"]["ms"] = round(median(began) * 1000, 1)  # exec to exit, site included
    return table


def host_imports(rootfs: Path) -> list[dict[str, Any]]:
    """HOST_IMPORTS one after the other in a host's Python, in a chroot of its rootfs with
    this checkout at /opt/fleetpy/src (a private mount namespace: nothing outside sees it)."""
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "probe.py"
        script.write_text(PROBE)
        shell = (
            f"mount --bind {ROOT} {rootfs}/opt/fleetpy/src && "
            f"mount -t proc proc {rootfs}/proc && mount --bind {scratch} {rootfs}/mnt && "
            f"exec chroot {rootfs} /opt/fleetpy/venv/bin/python /mnt/probe.py "
            + " ".join(HOST_IMPORTS)
        )
        out = subprocess.run(
            ["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, check=True
        ).stdout
    rows = list(ast.literal_eval(out.strip().splitlines()[-1]))
    table, previous = [], rows[0][2]
    for name, _ms, status, modules in rows:
        table.append(
            {
                "module": name,
                "rss_mib": round(status["VmRSS"], 1),
                "adds_mib": round(status["VmRSS"] - previous["VmRSS"], 1),
                "adds_anon_mib": round(status["RssAnon"] - previous["RssAnon"], 1),
                "adds_file_mib": round(status["RssFile"] - previous["RssFile"], 1),
                "modules": modules,
            }
        )
        previous = status
    return table


def rss(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            fields[key] = float(value.split()[0]) / (1 if key == "Threads" else 1024)
    return fields


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Cluster:
    """A real etcd prefix with the real engine and one fleetpy-agent process (simulated unit
    manager), all processes of BIN's installation."""

    def __init__(
        self, etcd: EtcdServer, bindir: Path, prefix: str, workdir: Path, agent_env: dict[str, str]
    ) -> None:
        self.env = dict(os.environ, FLEETPY_ENDPOINT=etcd.endpoint, FLEETPY_ETCD_PREFIX=prefix)
        self.registry = Registry(RegistryConfig(endpoints=(etcd.endpoint,), prefix=prefix))
        self.log = log = open(workdir / f"{prefix.strip('/')}.log", "w")
        self.engine = subprocess.Popen(
            [str(bindir / "fleetpy"), "engine"], env=self.env, stdout=log, stderr=log
        )
        self.agent = subprocess.Popen(
            [
                str(bindir / "fleetpy-agent"),
                "--unit-manager=simulated",
                "--machine-id=bench0001",
                f"--unit-dir={workdir / prefix.strip('/') / 'units'}",
            ],
            env={**self.env, **agent_env},
            stdout=log,
            stderr=log,
        )
        wait_until(lambda: len(self.registry.read_view(with_text=False).machines) == 1, 60, "agent")

    def active(self) -> int:
        view = self.registry.read_view(with_text=False)
        return sum(
            1 for states in view.states.values() for s in states.values() if s.active == "active"
        )

    def close(self) -> None:
        for process in (self.engine, self.agent):
            process.terminate()
        for process in (self.engine, self.agent):
            process.wait(30)
        self.registry.close()
        self.log.close()


def verb_times(bindir: Path, etcd: EtcdServer, workdir: Path, repeat: int) -> dict[str, Any]:
    fleetpy = str(bindir / "fleetpy")
    cluster = Cluster(etcd, bindir, "/benchverbs", workdir, {})
    try:
        env = cluster.env
        figures: dict[str, Any] = {}
        for label, argv in (("--help", ["--help"]), ("version", ["version"])):
            cpu: list[float] = []
            figures[label] = median([timed([fleetpy, *argv], env, cpu) for _ in range(repeat)])
            figures[f"{label} cpu"] = median(cpu)
        starts: list[float] = []
        cpu = []
        for i in range(repeat):
            unit = workdir / f"bench-start-{i}.service"
            unit.write_text(UNIT_TEXT)
            starts.append(timed([fleetpy, "start", str(unit)], env, cpu))
        figures["start one unit to active"] = median(starts)
        figures["start one unit to active cpu"] = median(cpu)
        figures["start runs"] = [round(s, 3) for s in starts]
        cpu = []
        listings = [timed([fleetpy, "list-units"], env, cpu) for _ in range(repeat)]
        figures["list-units"] = median(listings)
        figures["list-units cpu"] = median(cpu)
        figures["list-units units"] = cluster.active()
        return figures
    finally:
        cluster.close()


def agent_memory(
    bindir: Path, etcd: EtcdServer, workdir: Path, units: int, agent_env: dict[str, str]
) -> dict[str, float]:
    prefix = "/benchagent" + ("-arena2" if agent_env else "")
    cluster = Cluster(etcd, bindir, prefix, workdir, agent_env)
    try:
        idle = rss(cluster.agent.pid)
        text = parse_unit(UNIT_TEXT).serialize()
        unit_hash = parse_unit(text).hash
        names = [f"mem{i:04d}.service" for i in range(units)]
        for start in range(0, units, 50):
            cluster.registry.change_units(
                [UnitChange(n, "launched", text, unit_hash) for n in names[start : start + 50]]
            )
        wait_until(lambda: cluster.active() >= units, 120, f"{units} active units")
        time.sleep(3)  # the agent's reports and watch settle
        loaded = rss(cluster.agent.pid)
        return {
            "idle VmRSS": round(idle["VmRSS"], 1),
            f"{units} units VmRSS": round(loaded["VmRSS"], 1),
            f"{units} units VmHWM": round(loaded["VmHWM"], 1),
            f"{units} units RssAnon": round(loaded["RssAnon"], 1),
            f"{units} units RssFile": round(loaded["RssFile"], 1),
            "threads": loaded["Threads"],
        }
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per figure")
    parser.add_argument("--units", type=int, default=200, help="units on the measured agent")
    parser.add_argument(
        "--fleetpy",
        default=str(Path(sys.executable).parent / "fleetpy"),
        help="the fleetpy console script measured (its installation's fleetpy-agent too)",
    )
    parser.add_argument("--host-rootfs", type=Path, help="a host's rootfs for its imports")
    parser.add_argument("--output", type=Path, default=RESULTS / "startup.json")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="do not compile fleetpy's bytecode first"
    )
    parser.add_argument(
        "--only", choices=("imports", "verbs", "agent"), help="one part (A/B runs of one figure)"
    )
    args = parser.parse_args()
    bindir = Path(args.fleetpy).resolve().parent
    python = str(bindir / "python")

    package = subprocess.run(
        [python, "-c", "import fleetpy, os; print(os.path.dirname(fleetpy.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not args.no_bytecode:
        subprocess.run([python, "-m", "compileall", "-q", package], check=True)
    figures: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "fleetpy": package,
        "bytecode": not args.no_bytecode,
    }
    if args.only in (None, "imports"):
        print("import costs...", file=sys.stderr)
        figures["imports"] = import_costs(python, args.repeat)
    with tempfile.TemporaryDirectory() as scratch, EtcdServer() as etcd:
        workdir = Path(scratch)
        if args.only in (None, "verbs"):
            print("verbs...", file=sys.stderr)
            figures["verbs_seconds"] = verb_times(bindir, etcd, workdir, args.repeat)
        if args.only in (None, "agent"):
            print(f"agent with {args.units} units...", file=sys.stderr)
            figures["agent_mib"] = agent_memory(bindir, etcd, workdir, args.units, {})
            figures["agent_mib_malloc_arena_max_2"] = agent_memory(
                bindir, etcd, workdir, args.units, {"MALLOC_ARENA_MAX": "2"}
            )
    if args.host_rootfs is not None and args.only is None:
        print("a host's agent imports...", file=sys.stderr)
        figures["host_agent_imports"] = host_imports(args.host_rootfs)

    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"load average {figures['load_average']}, {figures['cpus']} CPUs\n")
    print(f"{'verb (exec to exit)':<34} seconds")
    for key, value in figures.get("verbs_seconds", {}).items():
        print(f"{key:<34} {value}")
    print(f"\n{'import (alone)':<52} {'ms':>7} {'VmRSS MiB':>10} {'modules':>8}")
    for name, row in figures.get("imports", {}).items():
        print(f"{name:<52} {row['ms']:>7} {row['rss_mib']:>10} {row['modules']:>8}")
    for key in ("agent_mib", "agent_mib_malloc_arena_max_2"):
        if key in figures:
            print(f"\n{key}: " + ", ".join(f"{k} {v}" for k, v in figures[key].items()))
    if "host_agent_imports" in figures:
        print(
            f"\n{'host agent import (cumulative)':<32} {'VmRSS':>6} {'+':>5} {'+anon':>6} {'+file':>6}"
        )
        for row in figures["host_agent_imports"]:
            print(
                f"{row['module']:<32} {row['rss_mib']:>6} {row['adds_mib']:>5} "
                f"{row['adds_anon_mib']:>6} {row['adds_file_mib']:>6}"
            )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
