"""Prometheus metrics (fleetpy/metrics.py): the cluster collector on hand-built views, the
names of reasons, --metrics-listen, and the engine and agents scraped over HTTP against a
real etcd (`fleetpy engine` and `fleetpy-agent` as processes).

Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/system/test_metrics.py, tests/integration/test_metrics.py."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fleetpy import metrics
from fleetpy.cluster.etcd import free_port
from fleetpy.config import ListenAddress, resolve
from fleetpy.errors import ConfigError
from fleetpy.model.records import ClusterView, MachineRecord, ScheduleEntry, UnitRecord, UnitState
from fleetpy.scheduler import NO_MACHINES, ReasonKind, reason_kind
from fleetpy.states import DesiredState

from support.metrics_text import Samples, parse, scrape, value

HASH = "a" * 64


# ----------------------------------------------------------------------------- reasons


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (NO_MACHINES, ReasonKind.NO_MACHINES),
        ("no machine has rack=r9", ReasonKind.METADATA),
        ("it lacks rack=r9 on every eligible machine", ReasonKind.METADATA),
        ("no machine with id m9 is alive", ReasonKind.MACHINE_ID),
        ("machine m1 cannot take it: conflicts with b.service", ReasonKind.MACHINE_ID),
        ("MachineID=m1 is a different machine on every eligible machine", ReasonKind.MACHINE_ID),
        ("waiting for web.service to be placed; web.service is inactive", ReasonKind.MACHINE_OF),
        ("waiting for web.service, whose machine m1 is not reporting", ReasonKind.MACHINE_OF),
        ("cannot join web.service on machine m1: conflicts with x", ReasonKind.MACHINE_OF),
        ("MachineOf cycle: a.service -> b.service -> a.service", ReasonKind.MACHINE_OF),
        ("conflicts with a.service and b.service on every eligible machine", ReasonKind.CONFLICTS),
        ("replaced by new.service on every eligible machine", ReasonKind.CONFLICTS),
        ("MaxPerMachine=1 reached for web@ on every eligible machine", ReasonKind.MAX_PER_MACHINE),
        (
            "every eligible machine is excluded: conflicts with a (2 machines); it lacks x (1 machine)",
            ReasonKind.CONSTRAINTS,
        ),
        ("invalid unit: content 1234567 is missing", ReasonKind.INVALID),
        ("left on machine m1, which is not reporting: 3 of 3 machines", ReasonKind.NOT_REPORTING),
        ("something a newer engine says", ReasonKind.OTHER),
        ("", ReasonKind.OTHER),
    ],
)
def test_reasons_fall_into_a_closed_set_of_kinds(reason: str, kind: ReasonKind) -> None:
    assert reason_kind(reason) is kind


# ----------------------------------------------------------------------------- the cluster


def record(name: str, desired: str = "launched", **kw: Any) -> UnitRecord:
    """kw: UnitRecord's other fields."""
    return UnitRecord(name, HASH, DesiredState(desired), **kw)


def view(
    units: Sequence[UnitRecord] = (),
    machines: tuple[str, ...] = (),
    schedule: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
    states: Mapping[str, Mapping[str, str]] | None = None,
) -> ClusterView:
    """A ClusterView by hand: schedule unit -> machine, states unit -> machine -> active."""
    return ClusterView(
        revision=42,
        units={u.name: u for u in units},
        machines={m: MachineRecord(m) for m in machines},
        schedule={
            unit: (machine, ScheduleEntry(unit, HASH, DesiredState.LAUNCHED, ""))
            for unit, machine in (schedule or {}).items()
        },
        reasons=dict(reasons or {}),
        states={
            unit: {
                machine: UnitState(unit, machine, "loaded", active, "")
                for machine, active in per_machine.items()
            }
            for unit, per_machine in (states or {}).items()
        },
    )


def cluster_samples(cluster: ClusterView) -> Samples:
    registry = metrics.new_registry(process=False)
    registry.register(metrics.ClusterCollector(lambda: cluster))
    body, content_type = metrics.exposition(registry)
    assert content_type.startswith("text/plain")
    return parse(body.decode())


CLUSTER_CASES: list[
    tuple[str, ClusterView, dict[tuple[str, tuple[tuple[str, str], ...]], float]]
] = [
    (
        "empty",
        view(),
        {
            ("fleetpy_units", (("desired", "launched"),)): 0,
            ("fleetpy_machines_alive", ()): 0,
            ("fleetpy_units_unplaced", (("reason", "pending"),)): 0,
            ("fleetpy_deployments", ()): 0,
            ("fleetpy_cluster_revision", ()): 42,
        },
    ),
    (
        "desired states",
        view([record("a.service"), record("b.service", "loaded"), record("c.service", "inactive")]),
        {
            ("fleetpy_units", (("desired", "launched"),)): 1,
            ("fleetpy_units", (("desired", "loaded"),)): 1,
            ("fleetpy_units", (("desired", "inactive"),)): 1,
            # inactive units are not expected anywhere; the other two have no reason yet
            ("fleetpy_units_unplaced", (("reason", "pending"),)): 2,
        },
    ),
    (
        "placed and reported, one unit on two machines, odd states bounded",
        view(
            [record("a.service"), record("b.service"), record("g.service", is_global=True)],
            machines=("m1", "m2"),
            schedule={"a.service": "m1", "b.service": "m2"},
            states={
                "a.service": {"m1": "active"},
                "b.service": {"m2": "failed"},
                "g.service": {"m1": "active", "m2": "\x1bweird"},
            },
        ),
        {
            ("fleetpy_machines_alive", ()): 2,
            ("fleetpy_units_scheduled", ()): 2,
            ("fleetpy_unit_states", (("active", "active"),)): 2,
            ("fleetpy_unit_states", (("active", "failed"),)): 1,
            ("fleetpy_unit_states", (("active", "other"),)): 1,
            ("fleetpy_unit_states", (("active", "inactive"),)): 0,
            # the global unit is never placed by the engine: not unplaced
            ("fleetpy_units_unplaced", (("reason", "pending"),)): 0,
        },
    ),
    (
        "unplaced by reason",
        view(
            [
                record("a.service"),
                record("b.service"),
                record("c.service", "loaded"),
                record("d.service"),
                record("e.service"),
            ],
            machines=("m1",),
            schedule={"e.service": "m1"},
            reasons={
                "a.service": "no machine has rack=r9",
                "b.service": "conflicts with x.service on every eligible machine",
                "c.service": "invalid unit: bad",
                # a reason on a placed unit (held on a machine away) is not "unplaced"
                "e.service": "left on machine m1, which is not reporting: ...",
            },
        ),
        {
            ("fleetpy_units_unplaced", (("reason", "metadata"),)): 1,
            ("fleetpy_units_unplaced", (("reason", "conflicts"),)): 1,
            ("fleetpy_units_unplaced", (("reason", "invalid"),)): 1,
            ("fleetpy_units_unplaced", (("reason", "pending"),)): 1,
            ("fleetpy_units_unplaced", (("reason", "not-reporting"),)): 0,
        },
    ),
    (
        "deployments",
        view(
            [
                record("a.service", owner="web"),
                record("b.service", owner="web"),
                record("c.service", owner="db"),
                record("d.service"),
            ]
        ),
        {("fleetpy_deployments", ()): 2},
    ),
]


@pytest.mark.parametrize(
    ("cluster", "expected"), [case[1:] for case in CLUSTER_CASES], ids=[c[0] for c in CLUSTER_CASES]
)
def test_cluster_collector(cluster: ClusterView, expected: Samples) -> None:
    samples = cluster_samples(cluster)
    for key, number in expected.items():
        assert samples.get(key, 0.0) == number, key


def test_cluster_label_sets_are_closed() -> None:
    """Every label value is always there (a zero until seen), and nothing else is."""
    samples = cluster_samples(view([record("a.service")], states={"a.service": {"m": "x" * 300}}))
    labels = {(name, labels) for name, labels in samples}
    assert {lv[0][1] for n, lv in labels if n == "fleetpy_units_unplaced"} == set(ReasonKind)
    assert {lv[0][1] for n, lv in labels if n == "fleetpy_unit_states"} == set(
        metrics.ACTIVE_LABELS
    )
    assert {lv[0][1] for n, lv in labels if n == "fleetpy_units"} == set(DesiredState)


def test_exposition_speaks_openmetrics_when_asked() -> None:
    registry = metrics.new_registry(process=False)
    registry.register(metrics.ClusterCollector(view))
    body, content_type = metrics.exposition(registry, "application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


# ----------------------------------------------------------------------------- agent hooks


def test_agent_hooks_bound_their_labels() -> None:
    registry = metrics.new_registry(process=False)
    agent = metrics.AgentMetrics(registry)
    agent.observe_dbus_call("LoadUnit", 0.0004)
    agent.observe_dbus_call("Reload", 0.2)
    agent.observe_dbus_call("SomethingNew", 0.001)
    agent.job_failed("failed")
    agent.job_failed("timeout")
    agent.job_failed("\x1bnonsense")
    samples = parse(metrics.exposition(registry)[0].decode())
    count = "fleetpy_agent_dbus_call_seconds_count"
    assert value(samples, count, method="LoadUnit") == 1
    assert value(samples, count, method="Reload") == 1
    assert value(samples, count, method="other") == 1
    assert (
        value(samples, "fleetpy_agent_dbus_call_seconds_bucket", method="LoadUnit", le="0.0005")
        == 1
    )
    failures = "fleetpy_agent_systemd_job_failures_total"
    assert value(samples, failures, result="failed") == 1
    assert value(samples, failures, result="timeout") == 1
    assert value(samples, failures, result="other") == 1
    assert {labels for name, labels in samples if name == failures} == {
        (("result", r.value),) for r in metrics.JobResult
    }


# ----------------------------------------------------------------------------- serving


def test_serve_answers_metrics_only_and_refuses_a_taken_address() -> None:
    registry = metrics.new_registry()
    registry.register(metrics.ClusterCollector(view))
    port = free_port()
    server = metrics.serve(registry, "127.0.0.1", port)
    try:
        samples = scrape(port)
        assert value(samples, "fleetpy_cluster_revision") == 42
        assert value(samples, "process_resident_memory_bytes") > 0
        with pytest.raises(urllib.error.HTTPError) as missing:
            scrape(port, "/")
        assert missing.value.code == 404
        with pytest.raises(ConfigError) as taken:
            metrics.serve(registry, "127.0.0.1", port)
        assert (
            str(taken.value) == f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
        )
    finally:
        server.close()


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9464", ListenAddress("127.0.0.1", 9464)),
        ("0.0.0.0:1", ListenAddress("0.0.0.0", 1)),
        ("[::1]:65535", ListenAddress("::1", 65535)),
        ("localhost:9464", ListenAddress("localhost", 9464)),
        (" host-1.example:80 ", ListenAddress("host-1.example", 80)),
    ],
)
def test_metrics_listen_values(text: str, address: ListenAddress) -> None:
    assert resolve({"metrics_listen": text}).metrics.listen == address


@pytest.mark.parametrize(
    "text",
    [
        "9464",
        ":9464",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:http",
        "::1:9464",
        "[::1]9464",
        "[127.0.0.1]:9464",
        "host name:9464",
        "-host:9464",
        "a/b:9464",
        "host\x1b:9464",
    ],
)
def test_bad_metrics_listen_values_are_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve({"metrics_listen": text})
    message = str(error.value)
    assert message.startswith("invalid --metrics-listen value ")
    assert "\n" not in message and "HOST:PORT" in message
