"""The states of a unit, each named once.

Desired states are fleet's: what the cluster should do with a unit. Active, load and
sub states are systemd's: what a machine reports. Desired and active states both have
an "inactive": compare each with its own enum, never with the bare text.
"""

from __future__ import annotations

from enum import StrEnum


class DesiredState(StrEnum):
    INACTIVE = "inactive"  # submitted only
    LOADED = "loaded"  # placed on a machine, unit file loaded, not running
    LAUNCHED = "launched"  # placed and running


# Desired states in which the engine places a unit on a machine (agents load it there).
PLACED_STATES = frozenset({DesiredState.LOADED, DesiredState.LAUNCHED})


class ActiveState(StrEnum):
    """systemd's ActiveState of a unit, as a machine reports it, and fleetpy's own
    `rejected` (below). Reported states are text from etcd: compare them with these
    (a StrEnum equals its text, and is written as it)."""

    ACTIVE = "active"
    RELOADING = "reloading"
    INACTIVE = "inactive"
    FAILED = "failed"
    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"
    MAINTENANCE = "maintenance"
    REFRESHING = "refreshing"
    # Reported instead of systemd's states for a unit an agent refused to hand to
    # systemd (a machine with trusted keys and a unit without a valid signature): with
    # LoadState.NOT_LOADED, the reason as SUB and the explanation as the state's message.
    REJECTED = "rejected"


class LoadState(StrEnum):
    """systemd's LoadState of a unit, and fleetpy's `not-loaded` (a rejected unit)."""

    STUB = "stub"
    LOADED = "loaded"
    NOT_FOUND = "not-found"
    BAD_SETTING = "bad-setting"
    ERROR = "error"
    MERGED = "merged"
    MASKED = "masked"
    NOT_LOADED = "not-loaded"  # fleetpy's: see ActiveState.REJECTED


class SubState(StrEnum):
    """The service SubStates fleetpy itself writes (the simulated unit manager); systemd
    has many more, one set per unit type, carried as text."""

    DEAD = "dead"
    START = "start"
    RUNNING = "running"
    FAILED = "failed"


# systemd ActiveStates in which a unit's processes run, or are about to.
RUNNING_STATES = frozenset(
    {ActiveState.ACTIVE, ActiveState.ACTIVATING, ActiveState.DEACTIVATING, ActiveState.RELOADING}
)


def verb(desired: DesiredState) -> str:
    """The fleetctl verb that asks for a desired state."""
    return {
        DesiredState.LAUNCHED: "start",
        DesiredState.LOADED: "load",
        DesiredState.INACTIVE: "unload",
    }[desired]


# What an agent reports of the last start it asked systemd for (a unit's `job`): the
# result of systemd's start job (JobRemoved: done, skipped, failed, timeout, dependency,
# canceled, ...), "pending" until it finished, "refused" when systemd refused to make the
# job (StartUnit answered an error), "" when unknown (an agent that did not start it:
# adopted after a restart, or an agent from before jobs were reported).
JOB_PENDING = "pending"
JOB_REFUSED = "refused"
# Results of a start that systemd counts as started (`systemctl start` exits 0): "skipped"
# is a start whose Condition= did not hold.
JOB_STARTED = frozenset({"done", "skipped"})
