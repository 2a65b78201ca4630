"""The main job, end to end on this machine: etcd, an engine, three real hosts
(systemd-nspawn, real systemd, the real agent), and the example units driven with
the fleetpy CLI exactly as an operator would.

    .venv/bin/python scripts/demo.py [--keep]      (scripts/demo.sh sets up first)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetpy.cluster.etcd import EtcdServer  # noqa: E402
from fleetpy.cluster.nspawn import HostPool, ensure_busybox_image, ensure_dockerd, ensure_rootfs  # noqa: E402


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the cluster up until Ctrl-C")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleetpy-demo-"))

    say("preparing: dockerd, a local busybox image, the host image (cached after the first run)")
    ensure_dockerd()
    ensure_busybox_image()
    rootfs = ensure_rootfs()

    with EtcdServer() as etcd:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        env.update(FLEETPY_ENDPOINT=etcd.endpoint)

        def fleetpy(*argv: str, ok: tuple[int, ...] = (0,)) -> None:
            print(f"$ fleetpy {' '.join(argv)}", flush=True)
            code = subprocess.run(
                [sys.executable, "-m", "fleetpy", *argv], env=env, cwd=work
            ).returncode
            if code not in ok:
                raise SystemExit(f"demo: fleetpy {' '.join(argv)} exited {code}")

        engine = subprocess.Popen(
            [sys.executable, "-m", "fleetpy", "engine"],
            env=env,
            stderr=open(work / "engine.log", "w"),
        )
        pool = HostPool(rootfs=rootfs, state_root=work / "hosts", etcd_endpoints=[etcd.endpoint])
        try:
            say(f"etcd at {etcd.endpoint}; booting 3 hosts")
            hosts = pool.start(3, metadata=[{"rack": "a"}, {"rack": "b"}, {"rack": "c"}], ttl=5)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                out = subprocess.run(
                    [sys.executable, "-m", "fleetpy", "list-machines", "--no-legend"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if len(out.stdout.splitlines()) == 3:
                    break
                time.sleep(0.5)
            fleetpy("list-machines")

            say("the example deployment (units/fleetpy.yaml): plan, then apply")
            fleetpy("plan", str(ROOT / "units"), ok=(2,))
            fleetpy("apply", str(ROOT / "units"), "--min-ready", "1")

            say("a plain unit, by hand")
            fleetpy("start", str(ROOT / "units/hello.service"))
            fleetpy("list-unit-files", "--fields", "unit,dstate,state,target,owner")
            fleetpy("list-units")
            print("$ docker ps", flush=True)
            subprocess.run(
                ["docker", "ps", "--format", "table {{.Names}}\t{{.Image}}\t{{.Status}}"]
            )
            first = hosts[0]
            print(f"$ systemctl status (on {first.name})", flush=True)
            print(
                first.systemctl(
                    "list-units",
                    "--no-pager",
                    "web@*",
                    "web-sidekick@*",
                    "hello.service",
                    "monitor.service",
                    check=False,
                ).stdout
            )

            if args.keep:
                say(
                    f"cluster up: FLEETPY_ENDPOINT={etcd.endpoint} fleetpy list-units; Ctrl-C ends it"
                )
                while True:
                    time.sleep(3600)

            say("a rolling restart of the web instances, one machine at a time")
            fleetpy("restart", "web@*")

            say("stop, unload and destroy")
            fleetpy("stop", "web-sidekick@*")
            fleetpy("unload", "hello.service")
            fleetpy("destroy", "web@*", "web-sidekick@*", "hello.service", "monitor.service")
            fleetpy("list-unit-files")
            say("done")
        except KeyboardInterrupt:
            pass
        finally:
            engine.terminate()
            engine.wait()
            pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
