"""test_hostile_units.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole:
tests/system/hostile/test_hostile_units.py."""

from __future__ import annotations

import pytest

from fleetpy.errors import PartialWriteError
from fleetpy.registry import Registry, UnitChange
from fleetpy.unit import parse_unit

from support.hostile_harness import Hostile

BODY = "[Service]\nExecStart=/bin/true\n"


def test_partial_write_says_what_was_written(hostile: Hostile) -> None:
    """A lost race on a later transaction: the message names what was and wasn't written."""
    from fleetpy.registry import RegistryConfig

    registry = Registry(RegistryConfig(endpoints=(hostile.etcd.endpoint,), prefix=hostile.prefix))
    try:
        units = {f"u{i:03d}.service": parse_unit(f"{BODY}X-Id={i}\n") for i in range(100)}
        changes = [
            UnitChange(name, "launched", unit.serialize(), unit.hash)
            for name, unit in units.items()
        ]
        known = registry.get_units(list(units))
        # Another client submits different contents for a unit of the third transaction
        # after our read: our guarded write of that chunk fails and the re-read refuses it.
        rival = parse_unit(f"{BODY}X-Rival=1\n")
        registry.change_units([UnitChange("u090.service", None, rival.serialize(), rival.hash)])
        with pytest.raises(PartialWriteError) as info:
            registry.change_units(changes, known)
        message = str(info.value)
        assert message.startswith(
            "wrote 80 of 100 units (u000.service, u001.service, "
            "u002.service and 77 more) before an error; not written: "
            "u080.service, u081.service, u082.service and 17 more: "
            "u090.service is already submitted with different contents"
        )
        assert "\n" not in message
        assert len(registry.list_units()) == 81
    finally:
        registry.close()
