"""The main job, end to end on this machine: `fleetpy cluster up` (etcd, two engines,
three real hosts on their own IPs: systemd-nspawn, real systemd, sshd, the real agent),
the example deployments from units/ and units/stack/, and the fleetpy CLI exactly as an
operator uses it.

    .venv/bin/python scripts/demo.py [--keep] [--hosts N] [--etcd-members 1|3]
                                           (scripts/demo.sh sets up first)

--keep leaves the cluster up (`fleetpy cluster down --name demo` ends it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "demo"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="leave the cluster up")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--etcd-members", type=int, default=1, choices=(1, 3))
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    work = Path(tempfile.mkdtemp(prefix="fleetpy-demo-"))

    def fleetpy(*argv: str, ok: tuple[int, ...] = (0,)) -> None:
        print(f"$ fleetpy {' '.join(argv)}", flush=True)
        code = subprocess.run(
            [sys.executable, "-m", "fleetpy", *argv], env=env, cwd=work
        ).returncode
        if code not in ok:
            raise SystemExit(f"demo: fleetpy {' '.join(argv)} exited {code}")

    say(f"a local cluster: etcd, two engines, {args.hosts} hosts with their own addresses")
    fleetpy(
        "cluster", "up", "--name", NAME, "--hosts", str(args.hosts),
        "--etcd-members", str(args.etcd_members),
    )  # fmt: skip
    up = True
    try:
        # What `. /run/fleetpy/clusters/demo/env` does in a shell.
        env_file = Path(f"/run/fleetpy/clusters/{NAME}/env")
        for line in env_file.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        fleetpy("list-machines")

        say("the example deployment (units/fleetpy.yaml): plan, then apply")
        fleetpy("plan", str(ROOT / "units"), ok=(2,))
        fleetpy("apply", str(ROOT / "units"), "--min-ready", "1")
        fleetpy("list-units")

        say(
            "units/stack: a database placed only where 1 GiB and half a CPU are free, and a"
            " web tier started once the database is active, wherever it runs"
        )
        fleetpy("apply", str(ROOT / "units" / "stack"), "--min-ready", "1")
        fleetpy("list-machines", "--fields", "machine,cpus,memory,reserved,free")

        say("on the units' machines, over ssh: status, journal, a command")
        fleetpy("status", "web@1.service")
        fleetpy("journal", "--lines", "3", "web-sidekick@1.service")
        fleetpy("ssh", "web@2.service", "hostname -I; docker ps --format '{{.Names}}'")

        if args.keep:
            say(f"left up: . {env_file}; fleetpy list-units; fleetpy cluster down --name {NAME}")
            up = False
            return 0

        say("a rolling restart of the web instances, one machine at a time")
        fleetpy("restart", "web@*")

        say("stop and destroy")
        fleetpy("stop", "web-sidekick@*")
        fleetpy("destroy", "web@*", "web-sidekick@*", "monitor.service")
        fleetpy("destroy", "web-db.service", "db.service")
        fleetpy("list-unit-files")
        say("done")
    finally:
        if up:
            fleetpy("cluster", "down", "--name", NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
