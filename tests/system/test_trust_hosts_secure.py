"""Keys revoked and rotated on real hosts (systemd-nspawn) on an etcd with TLS, client
certificates and auth (issue [17] items 2, 5): the trust record is written by the CLI as
the operator with a root key; a forger with etcd's root certificate replays an older
record and writes one signed by a release key; neither un-revokes anything, and the unit
whose key was revoked keeps running, the same process."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.signed_hosts import signed_hosts
from support.waiting import until

pytestmark = pytest.mark.hosts
SLEEPER = "[Service]\nExecStart=/bin/sleep {}\n"


def test_a_key_revoked_while_its_unit_runs_and_forged_records(
    host_rootfs: Path, host_docker: str, tmp_path: Path
) -> None:
    with signed_hosts(tmp_path, host_rootfs, [{}], [{}], keys=("root",)) as cluster:
        (host,) = cluster.hosts
        for name in ("v1", "v2"):  # release keys: trusted only through the record
            cluster.cli("keys", "generate", name)
        cluster.cli("keys", "trust", "v1", "--root", "root")
        with cluster.operator() as registry:
            found = registry.trust_record()
            assert found is not None and found[1] is not None
            trusting_v1 = found[1]
        web = cluster.write("web.service", SLEEPER.format(1001))
        cluster.cli("start", "--sign", "v1", "--block-attempts", "60", web)
        assert host.is_active("web.service")
        pid = host.main_pid("web.service")

        cluster.cli("keys", "rotate", "v1", "v2", "--root", "root", "--grace", "1h")
        api = cluster.write("api.service", SLEEPER.format(1002))
        cluster.cli("start", "--sign", "v2", "--block-attempts", "60", api)
        assert host.is_active("api.service")

        cluster.cli("keys", "revoke", "v1", "--root", "root")
        until(
            lambda: "kept running" in cluster.state("web.service")[2],
            what="web.service kept, with the reason",
        )
        # The forger: the older record that trusted v1, then one signed by v1 itself.
        cluster.forge("trust/record", trusting_v1)
        forged = trusting_v1.replace('\\"by\\":\\"', '\\"by\\":\\"x')  # the body changed
        assert forged != trusting_v1
        cluster.forge("trust/record", forged)
        until(
            lambda: host.journal("fleetpy-agent").count("event=trust_record_refused") >= 2,
            what="both forged records refused",
        )
        late = cluster.write("late.service", SLEEPER.format(1003))
        result = cluster.cli("start", "--sign", "v1", "--block-attempts", "60", late, check=False)
        assert result.returncode == 1 and "revoked" in result.stderr
        assert host.systemctl("cat", "late.service", check=False).returncode != 0
        assert host.is_active("web.service") and host.main_pid("web.service") == pid
        assert host.is_active("api.service")
