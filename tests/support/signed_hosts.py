"""Real hosts whose agents check signatures, on an etcd with TLS, client certificates and
auth: each agent acts as its own etcd user, the engine as fleetpy-engine, the CLI (a
process) as the operator, and `forge` writes keys with etcd's root certificate.

    with signed_hosts(tmp_path, host_rootfs, [{"role": "a"}], [{"signatures_required": 2}],
                      keys=("alice", "bob")) as cluster:   # their .pub trusted by every host
        cluster.cli("start", "--sign", "alice", path)
        cluster.forge("unit/web.service", json_text)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetpy.cluster.nspawn import Host, HostPool
from fleetpy.registry import Registry

from support.fleet import run_cli
from support.hosts_fixtures import pool_name_prefix
from support.secure_fixtures import SecureEtcd, secure_etcd
from support.waiting import until

TRUSTED = "/etc/fleetpy-trusted"  # where hosts see the directory of trusted public keys


@dataclass
class SignedHosts:
    etcd: SecureEtcd
    workdir: Path
    hosts: list[Host] = field(default_factory=list)
    key_ids: dict[str, str] = field(default_factory=dict)  # key name -> id

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "keys"

    @property
    def trusted_dir(self) -> Path:
        return self.workdir / "trusted"

    def env(self) -> dict[str, str]:
        env = self.etcd.env()  # the operator's certificate
        env["FLEETPY_KEYS_DIR"] = str(self.keys_dir)
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli([sys.executable, "-m", "fleetpy", *args], self.env(), self.workdir, check)

    def keys(self, *names: str) -> dict[str, str]:
        """Generate keys (name -> id) into the directory every host trusts (bound in;
        agents rescan it while they run: fleetpy.host_trust)."""
        ids = {}
        for name in names:
            ids[name] = self.cli("keys", "generate", name).stdout.split()[1]
            pub = f"{name}.pub"
            (self.trusted_dir / pub).write_bytes((self.keys_dir / pub).read_bytes())
        return ids

    def write(self, name: str, text: str) -> str:
        path = self.workdir / "units" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def units(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("list-units", "-o", "json").stdout)  # type: ignore[no-any-return]

    def state(self, unit: str) -> tuple[str, str, str]:
        """(active, sub, message) of UNIT on its one machine; ("", "", "") if not reported."""
        rows = [u for u in self.units() if u["unit"] == unit]
        if len(rows) != 1:
            return "", "", ""
        return rows[0]["active"], rows[0]["sub"], rows[0].get("message") or ""

    def operator(self) -> Registry:
        return self.etcd.registry(self.etcd.creds.operator)

    def forge(self, key: str, value: str) -> None:
        """Write a key under the prefix with etcd's root certificate (etcdctl)."""
        subprocess.run(
            [
                "etcdctl",
                "--endpoints",
                ",".join(self.etcd.endpoints),
                *self.etcd.root_etcdctl_options(),
                "put",
                f"{self.etcd.prefix}/{key}",
            ],
            input=value.encode(),
            capture_output=True,
            check=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
        )


@contextlib.contextmanager
def signed_hosts(
    workdir: Path,
    rootfs: Path,
    metadata: Sequence[Mapping[str, str]],
    agents: Sequence[Mapping[str, object]],
    keys: Sequence[str] = (),
) -> Iterator[SignedHosts]:
    """One host per item of METADATA (its metadata) and AGENTS (its extra agent settings),
    all trusting KEYS (made before they boot: cluster.key_ids); an engine; torn down after."""
    machine_ids = [secrets.token_hex(16) for _ in agents]
    with secure_etcd(workdir / "etcd", machines=machine_ids) as etcd:
        cluster = SignedHosts(etcd, workdir)
        cluster.trusted_dir.mkdir()
        cluster.key_ids = cluster.keys(*keys)
        engine_env = {**etcd.env(etcd.creds.engine)}
        with open(workdir / "engine.log", "ab") as log:
            engine = subprocess.Popen(
                [sys.executable, "-m", "fleetpy", "engine", "--lease-ttl", "3"],
                env=engine_env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        pool = HostPool(
            rootfs=rootfs,
            state_root=workdir / "hosts",
            etcd_endpoints=etcd.endpoints,
            name_prefix=pool_name_prefix(),
        )
        try:
            each = []
            for index, (machine, settings) in enumerate(zip(machine_ids, agents), start=1):
                etc = workdir / "hosts" / f"{pool.name_prefix}{index}" / "etc"
                extra = dict(settings)
                extra.update(etcd.creds.install_agent(machine, etc))
                extra.update(trusted_keys=TRUSTED, etcd_prefix=etcd.prefix)
                each.append({"machine_id": machine, "extra_config": extra})
            cluster.hosts = pool.start(
                len(agents),
                metadata=metadata,
                each=each,
                ttl=3,
                binds=[(cluster.trusted_dir, TRUSTED)],
            )
            with cluster.operator() as registry:
                until(
                    lambda: len(registry.list_machines()) == len(agents),
                    timeout=60,
                    what="every host's agent registered",
                )
            yield cluster
        finally:
            pool.close()
            engine.kill()
            engine.wait()


__all__ = ["TRUSTED", "SignedHosts", "signed_hosts"]
