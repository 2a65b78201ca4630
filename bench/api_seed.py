"""A large cluster's records written straight through the registry, for the read benchmarks
(bench_api_scale.py): M machine records under one lease, N units, each placed on a machine
(the schedule, written as an engine leader does: fenced on a leader key) and reported
active there (states under the lease, as agents write them).

No agent and no engine run: nothing moves unless the benchmark changes it, so what is
measured is the readers (`list-units`, `fleetpy api`, the dashboard) on exactly N units and
M machines. What a simulated agent would add (a watch and a lease per machine) costs etcd
and the engine, not the readers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fleetpy.model.changes import PlaceUnit, UnitChange
from fleetpy.model.records import MachineRecord, ScheduleEntry, UnitState
from fleetpy.registry import Registry
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import parse_unit

LEADER = "bench-seed"
BATCH = 100  # records per transaction (etcd's --max-txn-ops is 128)


def machine_id(index: int) -> str:
    return f"m{index:05d}"


def unit_name(index: int) -> str:
    return f"u{index:06d}.service"


def text(index: int) -> str:
    """Unit `index`'s file: each unit a content of its own, as in a real cluster (the API
    holds each content's options; one shared text would hide that)."""
    return parse_unit(f"[Service]\nExecStart=/bin/sleep {100_000 + index}\n").serialize()


def text_hash(index: int) -> str:
    return parse_unit(text(index)).hash


def _batches(count: int, size: int = BATCH) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def seed(registry: Registry, units: int, machines: int, ttl: int = 3600) -> int:
    """Write the cluster; returns the lease the machines and states hang on (keep it
    alive, or revoke it to make every machine vanish at once)."""
    lease = registry.grant_lease(ttl)
    for index in range(machines):
        record = MachineRecord(
            machine_id(index),
            ip=f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
            own_metadata={"zone": f"z{index % 3}"},
            hostname=f"host{index}",
            ttl=ttl,
        )
        registry.register_machine(record, lease)
    hashes = []
    for chunk in _batches(units):
        texts = [(i, text(i)) for i in chunk]
        changes = []
        for i, body in texts:
            hashes.append(parse_unit(body).hash)
            changes.append(UnitChange(unit_name(i), "launched", body, hashes[i]))
        registry.change_units(changes)
    if not registry.campaign(LEADER, lease):
        raise SystemExit("api_seed: another engine leads this prefix")
    places = [
        [
            PlaceUnit(
                machine_id(i % machines),
                ScheduleEntry(unit_name(i), hashes[i], DesiredState.LAUNCHED, text(i)),
            )
        ]
        for i in range(units)
    ]
    if not registry.engine_write(LEADER, places):
        raise SystemExit("api_seed: lost the leader key while placing")
    for chunk in _batches(units, 120):
        registry.report_states([state(i, machines, hashes[i]) for i in chunk], lease)
    return lease


def state(index: int, machines: int, unit_hash: str, active: str = "active") -> UnitState:
    sub = "running" if active == "active" else "dead"
    return UnitState(
        unit_name(index), machine_id(index % machines), "loaded", active, sub, unit_hash
    )


def set_active(
    registry: Registry, indexes: Sequence[int], machines: int, lease: int, active: str
) -> None:
    """Report units `indexes` in `active` on their machine (a change the readers see)."""
    registry.report_states([state(i, machines, text_hash(i), active) for i in indexes], lease)
