"""The states of a unit, each named once.

Desired states are fleet's: what the cluster should do with a unit. Active states are
systemd's (ActiveState): what a machine reports. Both have an "inactive", which is why
the desired ones are an enum.
"""

from __future__ import annotations

from enum import StrEnum


class DesiredState(StrEnum):
    INACTIVE = "inactive"  # submitted only
    LOADED = "loaded"  # placed on a machine, unit file loaded, not running
    LAUNCHED = "launched"  # placed and running


# Desired states in which the engine places a unit on a machine (agents load it there).
PLACED_STATES = frozenset({DesiredState.LOADED, DesiredState.LAUNCHED})

# systemd ActiveStates in which a unit's processes run, or are about to.
RUNNING_STATES = frozenset({"active", "activating", "deactivating", "reloading"})

# Reported instead of systemd's states for a unit an agent refused to hand to systemd
# (a machine with trusted keys and a unit without a valid signature): LOAD and ACTIVE,
# with the reason as SUB and the explanation as the state's message.
REJECTED_LOAD = "not-loaded"
REJECTED = "rejected"


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
