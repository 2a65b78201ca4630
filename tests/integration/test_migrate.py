"""`fleetpy migrate --from-fleet` against the session's etcd: fleet's keys written in its v2
API as fleetctl, fleetd and fleet's engine write them (tests/support/fleet_keys.py), the
CLI in process, fleetpy's keys read back."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator

import pytest

from fleetpy.cluster.etcd import EtcdServer, free_port
from fleetpy.registry import Registry
from fleetpy.states import DesiredState

from support.cli_run import Run
from support.fleet_keys import FleetKeys, machine_keys, unit_keys
from support.sim_cluster import Cluster, watch
from support.waiting import until

M1, M2 = "a" * 32, "b" * 32
SLEEP = "[Service]\nExecStart=/bin/sleep infinity\n"
SIDEKICK = "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nMachineOf=web.service\n"
TEMPLATE = "[Service]\nExecStart=/bin/sleep %i\n\n[X-Fleet]\nMachineMetadata=rack=r2\n"
GLOBAL = "[Service]\nExecStart=/bin/sleep 2000\n\n[X-Fleet]\nGlobal=true\n"
MISSPELT = "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetdata=rack=r1\n"


@pytest.fixture
def fleet_keys(etcd: EtcdServer, prefix: str) -> FleetKeys:
    """fleet's keys under a prefix of the test's own in the v2 store."""
    return FleetKeys(etcd.endpoint, f"/fleet{prefix}")


def migrate(run: Run, fleet_keys: FleetKeys, *args: str) -> tuple[int, str, str]:
    result = run(
        "migrate", "--from-fleet", fleet_keys.endpoint, "--fleet-prefix", fleet_keys.prefix, *args
    )
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stdout, result.stderr


def a_fleet_cluster(fleet_keys: FleetKeys) -> None:
    fleet_keys.put(
        {
            **unit_keys("web.service", SLEEP, "launched", M1),
            **unit_keys("side.service", SIDEKICK, "loaded", M1),
            **unit_keys("db@.service", TEMPLATE, "inactive"),
            **unit_keys("db@1.service", TEMPLATE, "launched", M2),
            **unit_keys("g.service", GLOBAL, "launched"),
            **unit_keys("idle.service", SLEEP, "inactive"),
            **unit_keys("bad.service", MISSPELT, "launched", M2),
            **machine_keys(M1, "10.0.0.1", {"rack": "r1"}),
            **machine_keys(M2, "10.0.0.2", {"rack": "r2", "disk": "hdd"}, {"disk": "ssd"}),
        }
    )


def nothing_written(registry: Registry) -> None:
    view = registry.read_view(with_states=False)
    assert (view.units, view.schedule, view.overlays, view.cordons) == ({}, {}, {}, {})


def test_fleets_units_go_where_fleet_ran_them_and_a_second_run_changes_nothing(
    run: Run, fleet_keys: FleetKeys, registry: Registry
) -> None:
    a_fleet_cluster(fleet_keys)
    code, out, err = migrate(run, fleet_keys, "--dry-run")
    assert code == 2, err
    assert "6 to add, 0 unchanged, 1 refused, 2 machines' metadata, 2 hand-over holds" in out
    assert f"+ web.service  launched on {M1}" in out
    assert "! bad.service  refused, stays under fleet: unknown [X-Fleet] option" in out
    nothing_written(registry)
    code, out, _ = migrate(run, fleet_keys, "--dry-run", "-o", "json")
    (planned,) = json.loads(out)
    assert code == 2 and planned["holds"] == [M1, M2] and planned["written"] == []
    assert {u["unit"]: u["machine"] for u in planned["units"]}["db@1.service"] == M2
    assert planned["refused"][0]["unit"] == "bad.service"

    assert fleet_keys.get("engine/version") is None  # a dry run froze nothing

    code, out, err = migrate(run, fleet_keys)
    assert code == 0, err
    assert "Migrated 6 units from fleet" in out
    # fleet's engines stand aside from then on: none moves what fleetpy now places.
    assert fleet_keys.get("engine/version") == "2"
    assert "1 of fleet's units not migrated" in err
    view = registry.read_view(with_states=False)
    assert {n: (r.desired, r.is_global) for n, r in view.units.items()} == {
        "web.service": (DesiredState.LAUNCHED, False),
        "side.service": (DesiredState.LOADED, False),
        "db@.service": (DesiredState.INACTIVE, False),
        "db@1.service": (DesiredState.LAUNCHED, False),
        "g.service": (DesiredState.LAUNCHED, True),
        "idle.service": (DesiredState.INACTIVE, False),
    }
    assert {u: m for u, (m, _) in view.schedule.items()} == {
        "web.service": M1,
        "side.service": M1,
        "db@1.service": M2,
    }
    assert view.schedule["web.service"][1].text == SLEEP
    assert registry.get_global("g.service") is not None
    assert view.overlays == {M1: {"rack": "r1"}, M2: {"rack": "r2", "disk": "ssd"}}
    # Each migrated unit's audit trail says where it came from (same transaction).
    trails = registry.unit_histories(list(view.units))
    assert {n: [(e.verb, e.detail) for e in t.entries] for n, t in trails.items()} == {
        "web.service": [("migrate", f"from fleet, on machine {M1}")],
        "side.service": [("migrate", f"from fleet, on machine {M1}")],
        "db@.service": [("migrate", "from fleet")],
        "db@1.service": [("migrate", f"from fleet, on machine {M2}")],
        "g.service": [("migrate", "from fleet")],
        "idle.service": [("migrate", "from fleet")],
    }
    assert {m: c.in_maintenance for m, c in view.cordons.items()} == {M1: True, M2: True}

    code, out, _ = migrate(run, fleet_keys)
    assert code == 0 and "0 to add, 6 unchanged, 1 refused, 0 machines' metadata, 0 hand" in out
    assert registry.read_view(with_states=False).revision == view.revision  # nothing written
    assert migrate(run, fleet_keys, "--dry-run")[0] == 0


def test_no_placement_is_written_while_an_engine_leads(
    run: Run, fleet_keys: FleetKeys, registry: Registry
) -> None:
    a_fleet_cluster(fleet_keys)
    assert registry.campaign("engine-1", registry.grant_lease(30))
    code, _, err = migrate(run, fleet_keys)
    assert code == 1
    assert err.startswith("fleetpy: error: an engine leads this prefix") and err.count("\n") == 1
    nothing_written(registry)
    assert fleet_keys.get("engine/version") is None  # fleet's engine left as it was


def test_an_interrupted_migration_is_finished_by_running_it_again(
    run: Run, fleet_keys: FleetKeys, registry: Registry
) -> None:
    keys = machine_keys(M1)
    for index in range(40):
        keys |= unit_keys(
            f"u{index:02}.service", f"[Service]\nExecStart=/bin/sleep {index}\n", "launched", M1
        )
    fleet_keys.put(keys)
    # Another writer took the placement of a unit of the second transaction.
    in_the_way = registry.key("schedule", M1, "u35.service")
    registry._etcd.put(in_the_way, "{}")
    code, _, err = migrate(run, fleet_keys)
    assert code == 1
    wrote = re.search(r"wrote (\d+) of 40 units", err)
    assert wrote is not None and "another client wrote" in err, err
    done = int(wrote.group(1))  # the transactions before the one in the way, whole
    assert 0 < done < 36 and len(registry.list_units()) == done
    registry._etcd.delete(in_the_way)
    code, out, err = migrate(run, fleet_keys)
    assert code == 0, err
    assert f"{40 - done} to add, {done} unchanged" in out
    placed = {u: m for u, (m, _) in registry.read_view(with_states=False).schedule.items()}
    assert placed == {f"u{index:02}.service": M1 for index in range(40)}


@pytest.fixture
def not_etcd() -> Iterator[str]:
    """An HTTP server that is not etcd."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("url", "fleet_prefix", "message"),
    [
        ("http://127.0.0.1:{free}", None, "cannot reach fleet's etcd at http://127.0.0.1:"),
        ("ftp://127.0.0.1:2379", None, "not an etcd URL"),
        ("{etcd}/v2/keys", None, "give etcd's client URL only"),
        ("http://127.0.0.1:notaport", None, "the port is not a number"),
        ("{not_etcd}", None, "does not answer as etcd does"),
        ("{etcd}", "/no/fleet/here", "no fleet data under /no/fleet/here/"),
        ("{etcd}", "/a/../b", "'.' and '..' are not key names"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(
    run: Run,
    fleet_keys: FleetKeys,
    registry: Registry,
    not_etcd: str,
    url: str,
    fleet_prefix: str | None,
    message: str,
) -> None:
    a_fleet_cluster(fleet_keys)
    target = url.format(free=free_port(), etcd=fleet_keys.endpoint, not_etcd=not_etcd)
    result = run(
        "migrate", "--from-fleet", target, "--fleet-prefix", fleet_prefix or fleet_keys.prefix
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("fleetpy: error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr
    nothing_written(registry)
    assert fleet_keys.get("engine/version") is None


@pytest.mark.parametrize(
    ("rel", "value", "message"),
    [
        ("job/web.service/object", "{not json", "job/web.service/object: not JSON"),
        ("job/web.service/target-state", "started", "'started' is not one of fleet's states"),
        (f"machines/{M1}/object", '{"ID": "someone-else"}', "ID is not"),
        ("job/" + "/".join(["d"] * 700), "x", "nest deeper than fleet's ever did"),
    ],
)
def test_records_fleet_never_wrote_are_named_and_nothing_is_written(
    run: Run, fleet_keys: FleetKeys, registry: Registry, rel: str, value: str, message: str
) -> None:
    a_fleet_cluster(fleet_keys)
    fleet_keys.put({rel: value})
    code, _, err = migrate(run, fleet_keys)
    assert code == 1 and err.startswith("fleetpy: error: ") and err.count("\n") == 1
    assert message in err and fleet_keys.prefix in err
    nothing_written(registry)
    assert fleet_keys.get("engine/version") is None


def test_a_hold_out_of_range_is_refused(
    run: Run, fleet_keys: FleetKeys, registry: Registry
) -> None:
    a_fleet_cluster(fleet_keys)
    code, _, err = migrate(run, fleet_keys, "--hold", "200h")
    assert code == 1 and "--hold '200h': expected 1 s to 7 days" in err
    nothing_written(registry)


def test_an_engine_started_after_the_migration_moves_nothing_while_hosts_are_handed_over(
    run: Run, fleet_keys: FleetKeys, cluster: Cluster
) -> None:
    a_fleet_cluster(fleet_keys)
    fleet_keys.put(unit_keys("new.service", "[Service]\nExecStart=/bin/sleep 3\n", "launched"))
    assert migrate(run, fleet_keys)[0] == 0
    migrated = cluster.placement()
    # M1's host is handed over first; M2 still runs fleetd (no fleetpy agent yet).
    cluster.agent(M1, rack="r1")
    cluster.engine()

    def never_twice() -> None:  # a global unit runs on every machine, the others on one
        hosted = [name for name, _ in cluster.hosted() if name != "g.service"]
        assert len(hosted) == len(set(hosted)), f"running on two machines at once: {hosted}"

    stop, twice = watch(never_twice)
    # Held machines take no new unit until their hand-over ends the hold (uncordon): then
    # the engine places what fleet had not, on M1, the only machine reporting ...
    until(
        lambda: {"web.service", "g.service"} <= set(cluster.running()),
        what="M1's units active",
    )
    assert "new.service" not in cluster.placement()
    assert run("uncordon", M1).exit_code == 0
    until(lambda: cluster.placement().get("new.service") == M1, what="new.service placed")
    # ... and leaves M2's where fleet ran them, held for its hand-over, for longer than the
    # engine's grace for a lost machine (its agent's TTL is 2 s here).
    time.sleep(6)
    assert cluster.placement() == migrated | {"new.service": M1}
    cluster.agent(M2, rack="r2")
    until(lambda: cluster.running().get("db@1.service") == M2, what="db@1 active on M2")
    stop.set()
    assert twice == []
    assert cluster.placement() == migrated | {"new.service": M1}
