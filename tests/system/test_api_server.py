"""`fleetpy api` against a real etcd: unix socket, TCP with TLS client certificates and
bearer tokens, bad input, etcd requests per client request, and the real fleetctl v1.0.0
driving every verb it has against simulated agents.

Here: the tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or tools of the machine (README "Tests"); the others are in
tests/integration/test_api_server.py, tests/pure/test_api_server.py."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetpy.api import ApiServer
from fleetpy.config import ApiSettings
from fleetpy.errors import ConfigError
from fleetpy.model.cordons import CordonMode, CordonRecord
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.unit import content_hash

from support.api_fixtures import Api, UnixConnection, request
from support.cli_run import Run
from support.fleet_unit_files import STARTED, UNIT_FILES, copy_unit_files
from support.fleetctl import fleetctl_binary, fleetctl_on
from support.sim_cluster import Cluster
from support.waiting import until

UNIT = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 1000\n"


OPTIONS = [
    {"section": "Unit", "name": "Description", "value": "Hello"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"},
]


def test_tcp_without_credentials_is_refused_unless_insecure(
    api: Api, registry_config: RegistryConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry(registry_config)
    try:
        with pytest.raises(ConfigError, match="needs TLS"):
            ApiServer(ApiSettings(listen="127.0.0.1:0"), [])
    finally:
        registry.close()
    server, _ = api(listen="127.0.0.1:0", insecure=True)
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    seen: list[str] = []

    def logged() -> bool:
        seen.append(capsys.readouterr().err)
        return "event=api_insecure" in "".join(seen)

    until(logged)
    assert request(conn, "GET", "/fleet/v1/machines")[0] == 200
    result = subprocess.run(
        ["fleetpy", "--endpoint", registry_config.endpoints[0], "api", "--listen", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("fleetpy: error: a TCP listener")
    assert "Traceback" not in result.stderr


def test_an_insecure_listener_refuses_dns_rebinding(api: Api, tmp_path: Path) -> None:
    """A page whose name was rebound to 127.0.0.1 sends its own name as Host (and as
    Origin): an --insecure listener answers it 403, and refuses cross-origin writes."""
    server, _ = api(listen="127.0.0.1:0", insecure=True)
    port = server.address[1]

    def ask(method: str, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            return request(conn, method, path, body, headers)
        finally:
            conn.close()

    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "localhost.evil"):
        for path in ("/fleet/v1/units", "/dashboard.json", "/events"):
            status, answer = ask("GET", path, {"Host": host})
            assert (status, answer["error"]["code"]) == (403, 403), (host, path)
            assert "localhost" in answer["error"]["message"]
    unit = {"options": OPTIONS}
    assert ask("PUT", "/fleet/v1/units/a.service", {"Host": "evil.example"}, unit)[0] == 403
    for host in (
        f"127.0.0.1:{port}",
        "127.0.0.1",
        f"localhost:{port}",
        "LocalHost",
        f"[::1]:{port}",
    ):
        assert ask("GET", "/fleet/v1/units", {"Host": host})[0] == 200, host
    # Writes: an Origin of another host:port is refused; the same one, or none, is not.
    here = {"Host": f"127.0.0.1:{port}"}
    for origin in (
        "http://evil.example",
        f"http://127.0.0.1:{port + 1}",
        "null",
        "https://127.0.0.1",
    ):
        got = ask("PUT", "/fleet/v1/units/a.service", {**here, "Origin": origin}, unit)
        assert got[0] == 403 and "origin" in got[1]["error"]["message"], origin
    assert ask("GET", "/fleet/v1/units", {**here, "Origin": "http://evil.example"})[0] == 200
    same = {**here, "Origin": f"http://127.0.0.1:{port}"}
    assert ask("PUT", "/fleet/v1/units/a.service", same, unit) == (201, None)
    stop = {"desiredState": "inactive"}
    assert ask("PUT", "/fleet/v1/units/a.service", {"Host": f"localhost:{port}"}, stop)[0] == 204
    # No Host at all (HTTP/1.0): refused too, one line of fleet's error JSON.
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(b"GET /fleet/v1/units HTTP/1.0\r\n\r\n")
    answer = raw.makefile("rb").read()
    raw.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ") and b"\n" not in body
    assert json.loads(body)["error"]["code"] == 403
    # fleetctl sends the endpoint's host: it works against 127.0.0.1.
    result = subprocess.run(
        [
            fleetctl_binary(),
            "--driver=API",
            f"--endpoint=http://127.0.0.1:{port}",
            "list-unit-files",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and "a.service" in result.stdout, result.stderr


# ----------------------------------------------------------------------------- fleetctl


@pytest.fixture
def fleet(registry_config: RegistryConfig, api: Api, tmp_path: Path) -> Iterator[Any]:
    cluster = Cluster(registry_config)
    cluster.agent("m1", role="web")
    cluster.agent("m2")
    cluster.engine()
    sock = str(tmp_path / "api.sock")
    api(listen=sock)
    fleetctl = fleetctl_on(sock, tmp_path)
    (tmp_path / "hello.service").write_text(UNIT)
    (tmp_path / "web@.service").write_text(
        "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nConflicts=web@*.service\n"
    )
    yield fleetctl
    cluster.close()


def test_fleetctl_drives_every_verb(fleet: Callable[..., str]) -> None:
    fleetctl = fleet
    machines = fleetctl("list-machines", "--full", "--no-legend")
    assert sorted(line.split("\t")[0] for line in machines.splitlines()) == ["m1", "m2"]
    assert "role=web" in machines
    assert "Unit hello.service inactive" in fleetctl("submit", "hello.service")
    assert "hello.service" in fleetctl("list-unit-files", "--no-legend")
    assert fleetctl("cat", "hello.service").strip() == UNIT.strip()
    out = fleetctl("load", "hello.service")
    assert re.search(r"Unit hello.service loaded on m\d", out), out
    out = fleetctl("start", "hello.service")
    assert re.search(r"Unit hello.service launched on m\d", out), out
    out = fleetctl("start", "web@1.service", "web@2.service")
    assert "web@1.service launched" in out and "web@2.service launched" in out
    units = fleetctl("list-units", "--fields", "unit,active,sub", "--no-legend")
    assert sorted(units.splitlines()) == [
        "hello.service\tactive\trunning",
        "web@1.service\tactive\trunning",
        "web@2.service\tactive\trunning",
    ]
    placed = fleetctl("list-unit-files", "--fields", "unit,dstate,state,target", "--full")
    web = {
        line.split()[0]: line.split()[3] for line in placed.splitlines() if line.startswith("web@")
    }
    assert sorted(web.values()) == ["m1", "m2"]  # Conflicts= honoured
    assert "Triggered unit web@1.service stop" in fleetctl("stop", "--no-block", "web@1.service")
    assert "Unit hello.service loaded" in fleetctl("stop", "hello.service")
    assert "Unit hello.service inactive" in fleetctl("unload", "hello.service")
    out = fleetctl("destroy", "hello.service", "web@1.service", "web@2.service")
    assert out.count("Destroyed") == 3
    assert fleetctl("list-unit-files", "--no-legend").strip() == ""
    until(lambda: fleetctl("list-units", "--no-legend").strip() == "", what="units to go")


def test_fleetctl_reports_fleetpys_refusal(fleet: Callable[..., str], tmp_path: Path) -> None:
    (tmp_path / "bad.service").write_text(
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineOf=bad.service\n"
    )
    out = fleet("submit", "bad.service", ok=False)
    assert "Error 400" in out and "names the unit itself" in out


def test_fleetctl_submits_and_starts_fleets_unit_files_unchanged(
    fleet: Callable[..., str], run: Run, registry: Registry, tmp_path: Path
) -> None:
    """Unit files as fleet users wrote them (tests/fleet_units/): fleetctl submits them,
    `fleetctl cat` gives back what fleet gave (fleet's serialization of what fleetctl
    parsed), and starting the unchanged files warns of no difference: fleetctl hashes
    the options it reads back and compares them with the file's. fleetpy's own CLI then
    finds the same units (no "different contents")."""
    copy_unit_files(tmp_path)
    out = fleet("submit", *UNIT_FILES)
    assert out.count("inactive") == len(UNIT_FILES), out
    web = fleet("cat", "registry-web@.service")
    assert "ExecStart=/usr/bin/docker run --rm --name registry-web-%i \\\n    --volumes" in web
    assert "\nRequires=docker.service\nAfter=docker.service\nRequires=registry-data" in web
    assert "\nEnvironment=\n" in fleet("cat", "registry-data.service")
    for name in UNIT_FILES:
        stored = registry.get_content(registry.get_unit(name).hash)  # type: ignore[union-attr]
        assert fleet("cat", name) == stored
    out = fleet("start", *STARTED)
    assert "differs" not in out and "WARNING" not in out, out
    assert out.count("launched") == len(STARTED), out
    placed = fleet("list-unit-files", "--fields", "unit,target", "--full", "--no-legend")
    machine = {line.split()[0]: line.split()[-1] for line in placed.splitlines()}
    assert machine["registry-web@1.service"] == "m1"  # X-ConditionMachineMetadata=role=web
    assert machine["registry-data.service"] == "m1"
    assert machine["registry-web-announce@1.service"] == "m1"  # both its MachineOf=
    assert machine["snapshot.timer"] == machine["snapshot.service"]
    assert machine["pinned.service"] == "m2"  # X-ConditionMachineBootID=m2
    # Again, unchanged: nothing differs, for fleetctl and for fleetpy.
    out = fleet("start", *STARTED)
    assert "differs" not in out and "WARNING" not in out, out
    files = [str(tmp_path / n) for n in STARTED if (tmp_path / n).exists()]
    result = run("start", "--no-block", *files)
    assert result.exit_code == 0, result.output + result.stderr


def test_fleetctl_finds_units_fleetpy_submitted_unchanged(
    fleet: Callable[..., str], run: Run, tmp_path: Path
) -> None:
    copy_unit_files(tmp_path)
    result = run("submit", *(str(tmp_path / n) for n in UNIT_FILES))
    assert result.exit_code == 0, result.output + result.stderr
    until(
        lambda: len(fleet("list-unit-files", "--no-legend").splitlines()) == len(UNIT_FILES),
        what="the API to see the units",
    )
    out = fleet("start", "--no-block", *STARTED)
    assert "differs" not in out and "WARNING" not in out, out
    for name in UNIT_FILES:
        assert "WARNING" not in fleet("submit", name)


def test_fleetctl_starts_units_that_replace_each_other(
    fleet: Callable[..., str], tmp_path: Path
) -> None:
    """fleet's TestScheduleCircularReplace: a.service (Replaces=b.service) started, then
    b.service (Replaces=a.service); both want m1 (role=web). b, started last, runs there."""
    for name, other in (("a", "b"), ("b", "a")):
        (tmp_path / f"{name}.service").write_text(
            "[Service]\nExecStart=/bin/sleep 1000\n\n"
            f"[X-Fleet]\nReplaces={other}.service\nMachineMetadata=role=web\n"
        )
    assert "a.service launched on m1" in fleet("start", "a.service")
    fleet("start", "--no-block", "b.service")  # was a 400 "Replaces= cycle"

    def units() -> str:
        return fleet("list-units", "--fields", "unit,active,machine", "--full", "--no-legend")

    until(lambda: units().split() == ["b.service", "active", "m1"], what="b alone active")
    listed = fleet("list-unit-files", "--fields", "unit,dstate,state", "--no-legend")
    assert sorted(line.split() for line in listed.splitlines()) == [
        ["a.service", "launched", "inactive"],
        ["b.service", "launched", "launched"],
    ]


def test_fleetctl_gets_a_misspelled_key_refused(fleet: Callable[..., str], tmp_path: Path) -> None:
    (tmp_path / "typo.service").write_text(
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nX-ConditionMachinOf=db.service\n"
    )
    out = fleet("submit", "typo.service", ok=False)
    assert "Error 400" in out and "did you mean X-ConditionMachineOf=?" in out, out


@pytest.mark.parametrize(("verb", "active"), [("load", "inactive"), ("start", "active")])
def test_fleetctl_replace_ends_in_the_target_state_on_the_new_contents(
    fleet: Callable[..., str], registry: Registry, tmp_path: Path, verb: str, active: str
) -> None:
    """fleetctl's load/start --replace PUT the new options without a desired state, wait
    for the unit to be inactive (fleet made it anew, inactive) and then set the target:
    a plain unit, an instance with a file of its own (fleet's functional test) and an
    instance from its template on disk, each loaded or launched first."""
    target = "loaded" if verb == "load" else "launched"
    (tmp_path / "side@1.service").write_text(UNIT)
    names = ["hello.service", "side@1.service", "web@1.service"]
    assert fleet(verb, *names).count(f" {target}") == 3
    for name in ("hello.service", "side@1.service", "web@.service"):
        path = tmp_path / name
        path.write_text(path.read_text().replace("sleep 1000", "sleep 2000"))
    # --block-attempts bounds every wait, the one for "inactive" too: a hang is an error.
    out = fleet(verb, "--replace", "--block-attempts", "10", *names)
    for name in names:
        assert f"Unit {name} {target}" in out, out
        assert "sleep 2000" in fleet("cat", name)
        record = registry.get_unit(name)
        assert record is not None and record.desired == target
        text = registry.get_content(record.hash) or ""
        assert "sleep 2000" in text and record.hash == content_hash(text)
        until(
            lambda: (
                [(s.hash, s.active) for s in registry.list_states().get(name, {}).values()]
                == [(record.hash, active)]
            ),
            what=f"{name} reported {active} with its new hash",
        )


def test_patch_machines_sets_metadata_that_fleetctl_and_the_engine_see(
    registry_config: RegistryConfig, api: Api, tmp_path: Path
) -> None:
    cluster = Cluster(registry_config)
    try:
        cluster.agent("m1", role="db")
        cluster.agent("m2")
        cluster.engine()
        sock = str(tmp_path / "api.sock")
        api(listen=sock)
        conn = UnixConnection(sock)
        waiting = [*OPTIONS, {"section": "X-Fleet", "name": "MachineMetadata", "value": "role=web"}]
        body = {"options": waiting, "desiredState": "launched"}
        assert request(conn, "PUT", "/fleet/v1/units/w.service", body)[0] == 201
        before = request(conn, "GET", "/fleet/v1/machines")
        bad = [
            {"op": "add", "path": "/m2/metadata/role", "value": "web"},
            {"op": "add", "path": "/m1/metadata/role", "value": "a,b"},
        ]
        status, answer = request(conn, "PATCH", "/fleet/v1/machines", bad)
        assert (status, answer["error"]["code"]) == (400, 400)
        assert answer["error"]["message"].startswith("operation 2: invalid metadata value 'a,b'")
        assert request(conn, "GET", "/fleet/v1/machines") == before  # nothing written
        good = [
            {"op": "add", "path": "/m2/metadata/role", "value": "web"},
            {"op": "remove", "path": "/m1/metadata/role"},
        ]
        assert request(conn, "PATCH", "/v1-alpha/machines", good) == (204, None)
        # read-your-writes: the next read shows it
        machines = request(conn, "GET", "/fleet/v1/machines")[1]["machines"]
        assert all("capacity" in m["fleetpy"] for m in machines)  # fleetpy's extra ([16])
        assert [{k: m[k] for k in ("id", "primaryIP", "metadata")} for m in machines] == [
            {"id": "m1", "primaryIP": "", "metadata": {}},
            {"id": "m2", "primaryIP": "", "metadata": {"role": "web"}},
        ]
        listed = fleetctl_on(sock, tmp_path)("list-machines", "--full")
        assert re.search(r"^m2\t.*role=web", listed, re.M) and "role=db" not in listed, listed

        def state() -> dict[str, Any]:
            found = dict(request(conn, "GET", "/fleet/v1/state/w.service")[1])
            return {k: v for k, v in found.items() if k != "hash"}

        until(
            lambda: (
                state()
                == {
                    "name": "w.service",
                    "machineID": "m2",
                    "systemdLoadState": "loaded",
                    "systemdActiveState": "active",
                    "systemdSubState": "running",
                }
            ),
            what="the waiting unit placed on m2 and running",
        )
    finally:
        cluster.close()


def test_fleetctl_lists_a_cordoned_machine(
    fleet: Callable[..., str], registry_config: RegistryConfig, tmp_path: Path
) -> None:
    """fleetpy's extra field on a machine (its cordon, under "fleetpy") is in the API's
    answer, and fleetctl, which ignores it, lists the machine as before."""
    with Registry(registry_config) as registry:
        registry.put_cordon(CordonRecord("m1", CordonMode.DRAINING, 2))
    conn = UnixConnection(str(tmp_path / "api.sock"))

    def cordoned() -> bool:
        machines = request(conn, "GET", "/fleet/v1/machines")[1]["machines"]
        return any(
            m.get("fleetpy", {}).get("cordon", {}).get("mode") == "draining" for m in machines
        )

    until(cordoned, what="the API to show m1's cordon")
    machines = fleet("list-machines", "--full", "--no-legend")
    assert sorted(line.split("\t")[0] for line in machines.splitlines()) == ["m1", "m2"]
