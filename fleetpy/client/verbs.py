"""The verbs that write desired states (fleetctl's submit, load, start, stop, unload) as one
table: the state each writes, what it waits for, what it takes, and which units its
--replace may replace. The CLI makes its commands from it; plans and waiting follow it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..states import DesiredState
from .waiting import WaitTarget


@dataclass(frozen=True)
class StateVerb:
    name: str
    desired: DesiredState | None  # the desired state it writes (None: submit writes none)
    wait: WaitTarget | None  # what it waits for unless --no-block (None: it does not wait)
    # Unit files and names (what is new is submitted), else names and globs of submitted units.
    from_files: bool
    # fleetctl's checkReplaceUnitState: with --replace, the desired states of the units
    # whose contents it replaces (empty: it has no --replace).
    replaces: frozenset[DesiredState] = frozenset()


SUBMIT = StateVerb("submit", None, None, True, frozenset({DesiredState.INACTIVE}))
LOAD = StateVerb(
    "load",
    DesiredState.LOADED,
    WaitTarget.LOADED,
    True,
    frozenset({DesiredState.INACTIVE, DesiredState.LOADED}),
)
START = StateVerb(
    "start", DesiredState.LAUNCHED, WaitTarget.LAUNCHED, True, frozenset(DesiredState)
)
STOP = StateVerb("stop", DesiredState.LOADED, WaitTarget.STOPPED, False)
UNLOAD = StateVerb("unload", DesiredState.INACTIVE, WaitTarget.UNLOADED, False)
STATE_VERBS = (SUBMIT, LOAD, START, STOP, UNLOAD)

# The verbs that replace contents, by the desired state they write (submit's is None).
_REPLACING = {verb.desired: verb for verb in STATE_VERBS if verb.replaces}
REPLACEABLE: Mapping[DesiredState | None, frozenset[DesiredState]] = {
    desired: verb.replaces for desired, verb in _REPLACING.items()
}


def replacing_name(desired: DesiredState | None) -> str:
    """The verb that writes `desired` and may replace contents: submit, load or start."""
    return _REPLACING[desired].name


def replacing_verbs(current: DesiredState) -> str:
    """The --replace verbs that replace a unit in desired state `current`."""
    return " or ".join(
        f"`{v.name} --replace`" for v in _REPLACING.values() if current in v.replaces
    )


def replace_refusal(name: str, current: DesiredState, desired: DesiredState | None) -> str | None:
    """Why the verb asking for `desired` may not replace a unit whose desired state is
    `current`, or None if it may (fleet's rule: submit replaces inactive units, load
    inactive or loaded ones, start any). fleetctl warned and went on with the old
    contents; fleetpy refuses before writing anything."""
    if current in REPLACEABLE[desired]:
        return None
    allowed = " or ".join(str(d) for d in DesiredState if d in REPLACEABLE[desired])
    return (
        f"{name} is {current}: `{replacing_name(desired)} --replace` replaces only {allowed} "
        f"units; use {replacing_verbs(current)}"
    )
