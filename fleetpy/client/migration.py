"""`fleetpy migrate --from-fleet`: fleet's keyspace read (fleetpy.fleet_keyspace), the plan
made against fleetpy's (fleetpy.fleet_import), and written (registry/fleet_migration.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RegistryError
from ..fleet_handover import FROZEN_ENGINE_VERSION, freeze_fleet_engine
from ..fleet_import import ENGINE_LEADS, MigrationPlan, plan
from ..fleet_keyspace import FleetSnapshot, etcd_base_url, read_fleet
from ..registry.roles import MigrationRegistry
from .drain import maintenance


@dataclass(frozen=True)
class Migration:
    fleet: FleetSnapshot
    plan: MigrationPlan
    written: tuple[str, ...] = ()  # units written (none on a dry run)
    froze: bool = False  # this run froze fleet's engine (it was not already)


def migrate(
    registry: MigrationRegistry,
    url: str,
    prefix: str,
    *,
    dry_run: bool = False,
    hold: int = 3600,
    timeout: float = 10.0,
) -> Migration:
    """Read fleet's state at URL under PREFIX, plan, and (unless DRY_RUN) write the plan.

    Before writing, fleet's engine is frozen (fleet_handover.freeze_fleet_engine: every
    fleetd v1.0 engine stands aside) and fleet's state read again: what is written is
    where fleet's units stay, since no fleet engine moves one after that read (a host
    lost meanwhile would otherwise have its units started by fleet elsewhere while
    fleetpy's agent started them where fleet had them: twice)."""
    fleet = read_fleet(url, prefix, timeout)
    side = registry.migration_side()
    planned = plan(fleet, side)
    if dry_run or not planned.has_changes:
        return Migration(fleet, planned)
    if side.engine_leads:  # said before fleet's engine is frozen for nothing
        raise RegistryError(ENGINE_LEADS)
    froze = freeze_fleet_engine(etcd_base_url(url), prefix, timeout) < FROZEN_ENGINE_VERSION
    fleet = read_fleet(url, prefix, timeout)
    planned = plan(fleet, registry.migration_side())
    if not planned.has_changes:
        return Migration(fleet, planned, froze=froze)
    holds = [maintenance(machine, hold) for machine in planned.holds]
    written = registry.write_migration(planned, holds, hold)
    return Migration(fleet, planned, tuple(written), froze)
