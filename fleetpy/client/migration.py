"""`fleetpy migrate --from-fleet`: fleet's keyspace read (fleetpy.fleet_keyspace), the plan
made against fleetpy's (fleetpy.fleet_import), and written (registry/fleet_migration.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..fleet_import import MigrationPlan, plan
from ..fleet_keyspace import FleetSnapshot, read_fleet
from ..registry.roles import MigrationRegistry
from .drain import maintenance

DEFAULT_HOLD = "1h"  # for the hosts' hand-over (`--hold`, as drain's --window)


@dataclass(frozen=True)
class Migration:
    fleet: FleetSnapshot
    plan: MigrationPlan
    written: tuple[str, ...] = ()  # units written (none on a dry run)


def migrate(
    registry: MigrationRegistry,
    url: str,
    prefix: str,
    *,
    dry_run: bool = False,
    hold: int = 3600,
    timeout: float = 10.0,
) -> Migration:
    """Read fleet's state at URL under PREFIX, plan, and (unless DRY_RUN) write the plan."""
    fleet = read_fleet(url, prefix, timeout)
    planned = plan(fleet, registry.migration_side())
    if dry_run or not planned.has_changes:
        return Migration(fleet, planned)
    holds = [maintenance(machine, hold) for machine in planned.holds]
    written = registry.write_migration(planned, holds, hold)
    return Migration(fleet, planned, tuple(written))
