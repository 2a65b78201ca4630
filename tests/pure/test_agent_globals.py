"""What choosing the global units costs an agent's reconcile, counted (not timed)."""

from __future__ import annotations

import pytest

from fleetpy import agent_plan as agent
from fleetpy.model.records import ScheduleEntry
from fleetpy.states import DesiredState
from fleetpy.unitfile import unit
from fleetpy.unitfile.unit import UnitFile


def entry(name: str, xfleet: str = "") -> ScheduleEntry:
    return ScheduleEntry(
        name, "h", DesiredState.LAUNCHED, f"[Service]\nExecStart=/bin/true\n{xfleet}"
    )


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = unit.parse_unit

    def counted(text: str, source: str = "<unit>") -> UnitFile:
        seen.append(source)
        return real(text, source)

    monkeypatch.setattr(agent, "parse_unit", counted)
    return seen


def test_without_global_units_no_placed_unit_is_parsed(parses: list[str]) -> None:
    placed = {f"u{i}.service": entry(f"u{i}.service") for i in range(50)}
    assert agent.select_globals({}, placed, {}) == {}
    inactive = {"g.service": entry("g.service", "\n[X-Fleet]\nGlobal=true\n")}
    inactive["g.service"] = ScheduleEntry(
        "g.service", "h", DesiredState.INACTIVE, inactive["g.service"].text
    )
    assert agent.select_globals(inactive, placed, {}) == {}
    assert parses == []  # each reconcile parsed all 50 before


def test_with_a_global_unit_placed_units_are_checked_for_conflicts(parses: list[str]) -> None:
    placed = {"a.service": entry("a.service")}
    globals_ = {"g.service": entry("g.service", "\n[X-Fleet]\nGlobal=true\nConflicts=a.service\n")}
    assert agent.select_globals(globals_, placed, {}) == {}
    assert sorted(parses) == ["a.service", "g.service"]
