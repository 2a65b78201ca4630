"""Resource-aware placement (issue 25 items 1-2): sizes, units' reservations, machine
records with capacity, and the planner's fit, as tables. No etcd."""

from __future__ import annotations

from typing import Any

import pytest

from fleetpy.capacity import UNACCOUNTED, CapacityReport, services_usage
from fleetpy.errors import FleetOptionError
from fleetpy.model.codecs import MalformedRecord
from fleetpy.model.records import MachineRecord
from fleetpy.resources import (
    Resources,
    format_memory,
    moved_past_threshold,
    parse_cpus,
    parse_quota,
    parse_size,
)
from fleetpy.scheduler import (
    Change,
    Machine,
    ReasonKind,
    Schedule,
    Scheduled,
    SetReason,
    Snapshot,
    UnitSpec,
    reason_kind,
)
from fleetpy.scheduler import plan_placements as plan
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import FleetOptions, fleet_options, parse_unit

GiB = 1024**3
MiB = 1024**2
M1 = "3f2a" + "0" * 28
M2 = "7b10" + "0" * 28
M3 = "c0de" + "0" * 28


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MiB),
        ("2G", 2 * GiB),
        ("2g", 2 * GiB),
        ("1.5G", 3 * GiB // 2),
        ("1048576", MiB),
        ("1T", 1024 * GiB),
        ("64K", 64 * 1024),
        ("0", None),
        ("", None),
        ("2 GB", None),
        ("-1G", None),
        ("2X", None),
        ("1" * 40, None),
    ],
)
def test_sizes(text: str, expected: int | None) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.5", 500), ("2", 2000), ("1.25", 1250), ("0", None), ("-1", None), ("two", None)],
)
def test_cpus(text: str, expected: int | None) -> None:
    assert parse_cpus(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("150%", 1500), ("50%", 500), ("12.5%", 125), ("0%", None), ("150", None)],
)
def test_quota(text: str, expected: int | None) -> None:
    assert parse_quota(text) == expected


def test_memory_is_shown_in_its_largest_unit() -> None:
    assert [format_memory(n) for n in (2 * GiB, 3 * GiB // 2, 512 * MiB, 100)] == [
        "2 GiB",
        "1.5 GiB",
        "512 MiB",
        "100 B",
    ]


def reserves(text: str, name: str = "db.service") -> Resources:
    return fleet_options(parse_unit(text), name).reserves


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Service]\nExecStart=/bin/db\n", Resources()),
        ("[Service]\nMemoryMax=2G\n", Resources(2 * GiB)),
        ("[Service]\nMemoryMax=2G\nMemoryHigh=1G\n", Resources(GiB)),
        ("[Service]\nMemoryMax=1G\nMemoryMax=3G\n", Resources(3 * GiB)),  # the last wins
        ("[Service]\nMemoryMax=50%\n", Resources()),  # relative to each machine
        ("[Service]\nMemoryMax=infinity\n", Resources()),
        ("[Service]\nCPUQuota=150%\n", Resources(0, 1500)),
        ("[Service]\nCPUWeight=500\n", Resources()),  # relative: no amount
        ("[Container]\nImage=local/db\nMemory=512m\nCPUs=0.5\n", Resources(512 * MiB, 500)),
        ("[X-Fleet]\nReserveMemory=2G\nReserveCPU=2\n", Resources(2 * GiB, 2000)),
        ("[X-Fleet]\nReserveCPU=0.5\n", Resources(0, 500)),
        ("[Service]\nMemoryMax=4G\n[X-Fleet]\nReserveMemory=1G\n", Resources(GiB)),
    ],
)
def test_reservations_come_from_systemd_keys_or_x_fleet(text: str, expected: Resources) -> None:
    assert reserves(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Service]\nMemoryMax=2 GB\n", "invalid [Service] MemoryMax=2 GB in db.service"),
        ("[Service]\nCPUQuota=lots\n", "invalid [Service] CPUQuota=lots in db.service"),
        ("[X-Fleet]\nReserveMemory=2Q\n", "invalid [X-Fleet] ReserveMemory=2Q in db.service"),
        ("[X-Fleet]\nReserveCPU=0\n", "invalid [X-Fleet] ReserveCPU=0 in db.service"),
        ("[X-Fleet]\nReserveMemory=1G\nReserveMemory=2G\n", "given 2 times"),
        ("[X-Fleet]\nReserveMemroy=1G\n", "did you mean ReserveMemory="),
    ],
)
def test_malformed_reservations_are_refused(text: str, message: str) -> None:
    with pytest.raises(FleetOptionError, match=message.replace("[", r"\[").replace("]", r"\]")):
        reserves(text)


def test_machine_records_carry_capacity_and_old_ones_stay_readable() -> None:
    record = MachineRecord(M1, capacity=Resources(8 * GiB, 4000), used=Resources(GiB, 250))
    assert MachineRecord.from_json(M1, record.to_json().encode()) == record
    old = MachineRecord.from_json(M1, b'{"ip": "", "metadata": {}}')
    assert (old.capacity, old.used) == (None, None)
    assert '"capacity"' not in MachineRecord(M1).to_json()
    with pytest.raises(MalformedRecord, match="capacity"):
        MachineRecord.from_json(M1, b'{"capacity": {"memory": -1}}')


@pytest.mark.parametrize(
    ("reported", "current", "write"),
    [
        (None, Resources(), True),  # never reported
        (Resources(GiB, 1000), Resources(GiB + 10 * MiB, 1050), False),  # noise
        (Resources(GiB, 1000), Resources(GiB + 500 * MiB, 1000), True),  # > 5 % of 8 GiB
        (Resources(GiB, 1000), Resources(GiB, 1300), True),  # > 0.2 CPUs of 4
    ],
)
def test_usage_is_written_again_only_past_a_threshold(
    reported: Resources | None, current: Resources, write: bool
) -> None:
    assert moved_past_threshold(Resources(8 * GiB, 4000), reported, current) is write


# ---- placement


def unit(name: str, memory: int = 0, cpu: int = 0, **options: Any) -> UnitSpec:
    return UnitSpec(
        name,
        "h",
        DesiredState.LAUNCHED,
        FleetOptions(reserves=Resources(memory, cpu), **options),
    )


def machines(**capacity: Resources | None) -> dict[str, Machine]:
    ids = {"m1": M1, "m2": M2, "m3": M3}
    return {ids[k]: Machine(ids[k], {"n": k}, capacity=c) for k, c in capacity.items()}


def S(name: str, machine: str) -> Schedule:
    return Schedule(name, machine, DesiredState.LAUNCHED, "h")


def at(machine: str) -> Scheduled:
    return Scheduled(machine, DesiredState.LAUNCHED, "h")


def snap(
    units: list[UnitSpec],
    on: dict[str, Machine],
    schedule: dict[str, Scheduled] | None = None,
) -> Snapshot:
    return Snapshot({u.name: u for u in units}, on, schedule or {})


CASES: list[tuple[str, Snapshot, list[Change]]] = [
    (
        "a reservation goes where it fits, not to the least loaded machine",
        snap(
            [unit("db.service", memory=2 * GiB), unit("a.service"), unit("b.service")],
            machines(m1=Resources(GiB, 2000), m2=Resources(4 * GiB, 2000)),
            {"a.service": at(M2)},
        ),
        [S("b.service", M1), S("db.service", M2)],
    ),
    (
        "reservations of placed units count against the machine",
        snap(
            [unit("a.service", memory=3 * GiB), unit("b.service", memory=2 * GiB)],
            machines(m1=Resources(4 * GiB), m2=Resources(4 * GiB)),
            {"a.service": at(M1)},
        ),
        [S("b.service", M2)],
    ),
    (
        "the issue's reason: no machine has 2 GiB free, the largest free named",
        snap(
            [unit("db.service", memory=2 * GiB), unit("x.service", memory=GiB // 2)],
            machines(m1=Resources(2 * GiB), m2=Resources(GiB)),
            {"x.service": at(M1)},
        ),
        [SetReason("db.service", "no machine has 2 GiB free; largest free 1.5 GiB on 3f2a0000…")],
    ),
    (
        "a reservation larger than any machine says so",
        snap(
            [unit("big.service", memory=64 * GiB)],
            machines(m1=Resources(8 * GiB), m2=Resources(16 * GiB)),
        ),
        [
            SetReason(
                "big.service", "it reserves 64 GiB, more than any machine has (largest 16 GiB)"
            )
        ],
    ),
    (
        "CPUs count like memory",
        snap(
            [unit("cpu.service", cpu=1500)],
            machines(m1=Resources(8 * GiB, 1000), m2=Resources(8 * GiB, 2000)),
        ),
        [S("cpu.service", M2)],
    ),
    (
        "a machine that reports no capacity (an old agent) takes only units without one",
        snap(
            [unit("db.service", memory=GiB), unit("plain.service")],
            machines(m1=None),
        ),
        [
            S("plain.service", M1),
            SetReason(
                "db.service",
                "it reserves 1 GiB, and no eligible machine reports its capacity (agents "
                "before resource reports take only units without reservations)",
            ),
        ],
    ),
    (
        "a placed unit stays where it is, even if its reservation no longer fits there",
        snap(
            [unit("a.service", memory=4 * GiB), unit("b.service", memory=4 * GiB)],
            machines(m1=Resources(4 * GiB), m2=Resources(GiB)),
            {"a.service": at(M1), "b.service": at(M1)},
        ),
        [],
    ),
    (
        "MaxPerMachine= and the reservation both apply",
        snap(
            [
                unit("w@1.service", memory=GiB, max_per_machine=1),
                unit("w@2.service", memory=GiB, max_per_machine=1),
                unit("w@3.service", memory=GiB, max_per_machine=1),
            ],
            machines(m1=Resources(4 * GiB), m2=Resources(4 * GiB), m3=Resources(GiB // 2)),
        ),
        [
            S("w@1.service", M1),
            S("w@2.service", M2),
            SetReason(
                "w@3.service",
                "every eligible machine is excluded: MaxPerMachine=1 reached for w@.service "
                "(2 machines); too little free (1 machine)",
            ),
        ],
    ),
    (
        "Spread= still spreads among the machines where it fits",
        snap(
            [
                unit("s@1.service", memory=GiB, spread="n"),
                unit("s@2.service", memory=GiB, spread="n"),
                unit("s@3.service", memory=GiB, spread="n"),
            ],
            machines(m1=Resources(2 * GiB), m2=Resources(GiB), m3=Resources(GiB // 2)),
        ),
        [S("s@1.service", M1), S("s@2.service", M2), S("s@3.service", M1)],
    ),
    (
        "global units' limits count on every machine they run on",
        snap(
            [
                unit("mon.service", memory=GiB, is_global=True, machine_metadata=(("n", ("m1",)),)),
                unit("db.service", memory=7 * GiB // 2),
            ],
            machines(m1=Resources(4 * GiB), m2=Resources(2 * GiB)),
        ),
        [SetReason("db.service", "no machine has 3.5 GiB free; largest free 3 GiB on 3f2a0000…")],
    ),
    (
        "MachineID= to a machine where it does not fit says what is free there",
        snap(
            [unit("db.service", memory=2 * GiB, machine_id=M2)],
            machines(m1=Resources(8 * GiB), m2=Resources(GiB)),
        ),
        [
            SetReason(
                "db.service", f"machine {M2} cannot take it: it reserves 2 GiB, 1 GiB free there"
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("snapshot", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_placement_with_reservations(snapshot: Snapshot, expected: list[Change]) -> None:
    assert list(plan(snapshot)) == expected


def test_resource_reasons_have_their_kind() -> None:
    assert reason_kind("no machine has 2 GiB free; largest free 1 GiB on 3f2a…") is (
        ReasonKind.RESOURCES
    )
    assert reason_kind("it reserves 64 GiB, more than any machine has") is ReasonKind.RESOURCES
    assert reason_kind("no machine has role=db") is ReasonKind.METADATA


# ---- what agents report


class Accounting:
    """A unit manager's accounting, as fleetpy.capacity reads it."""

    def __init__(self) -> None:
        self.memory, self.cpu_ns = 0, 0

    def usage(self) -> tuple[int, int] | None:
        return self.memory, self.cpu_ns


def test_usage_is_measured_as_cpu_time_over_time_and_written_past_a_threshold() -> None:
    now = [100.0]
    manager = Accounting()
    report = CapacityReport(manager, Resources(8 * GiB, 4000), clock=lambda: now[0])
    manager.memory = GiB
    assert report.due() == Resources(GiB, 0)  # never written: due
    report.reported = Resources(GiB, 0)
    now[0] += 10
    manager.cpu_ns += 5 * 10**9  # 5 s of CPU in 10 s: half a CPU
    assert report.due() == Resources(GiB, 500)
    report.reported = Resources(GiB, 500)
    now[0] += 10
    manager.cpu_ns += 5 * 10**9 + 10**8  # 0.51 CPUs: within the threshold
    manager.memory += 10 * MiB
    assert report.due() is None
    now[0] += 10
    manager.cpu_ns = 0  # a unit restarted: its count began again
    assert report.measure() == Resources(GiB + 10 * MiB, 0)


def test_a_manager_without_accounting_reports_capacity_only() -> None:
    report = CapacityReport(object())
    assert report.capacity.memory > 0 and report.capacity.cpu >= 1000  # this host's
    assert report.measure() is None and report.due() is None


def test_services_usage_sums_what_systemd_accounts() -> None:
    figures = {
        ("a.service", "MemoryCurrent"): GiB,
        ("a.service", "CPUUsageNSec"): 10**9,
        ("b.service", "MemoryCurrent"): UNACCOUNTED,  # MemoryAccounting=no
        ("b.service", "CPUUsageNSec"): 2 * 10**9,
    }
    names = ["a.service", "b.service", "gone.service", "a.timer"]
    assert services_usage(names, lambda name, prop: figures.get((name, prop))) == (
        GiB,
        3 * 10**9,
    )
    assert services_usage([], lambda name, prop: None) == (0, 0)  # nothing running


def test_a_host_where_systemd_accounts_nothing_reports_no_usage_rather_than_zero() -> None:
    # A host without the memory and cpu controllers (the test hosts' nspawn containers on
    # a cgroup v1 machine): MemoryCurrent=[not set], CPUUsageNSec=[not set].
    assert services_usage(["a.service"], lambda name, prop: UNACCOUNTED) is None

    class Unaccounted:
        def usage(self) -> tuple[int, int] | None:
            return None

    assert CapacityReport(Unaccounted(), Resources(GiB, 1000)).due() is None
