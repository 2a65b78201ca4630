"""fleetpy's domain model: the records the store holds and their JSON codecs, the watch
events, what one read at one revision sees (ClusterView), and writes as data.

Pure: no etcd, no gRPC; nothing here imports fleetpy.registry (the architecture tests
check it). The registry stores and reads these; everyone else may use them without it.
"""

from __future__ import annotations

from .changes import (
    ClearAdoptionRequest,
    ClearForceReschedule,
    EngineWrite,
    PlaceUnit,
    StoreReason,
    UnitChange,
    UnplaceUnit,
)
from .codecs import (
    MACHINE_ID,
    OVERLAY_VERSION_KEY,
    SCHEMA_VERSION,
    VERSION_FIELD,
    MalformedRecord,
    Newer,
    RecordTooNew,
    overlay_from_json,
    overlay_to_json,
)
from .events import (
    ContentEvent,
    DeploymentEvent,
    EngineEvent,
    MachineEvent,
    MetadataEvent,
    ReasonEvent,
    ScheduleEvent,
    StateEvent,
    UnitEvent,
    WatchBatch,
)
from .records import (
    ClusterView,
    DeploymentRecord,
    DeploymentSession,
    MachineRecord,
    MachineSchedule,
    ScheduleEntry,
    UnitRecord,
    UnitState,
    with_overlays,
)

__all__ = [
    "MACHINE_ID",
    "OVERLAY_VERSION_KEY",
    "SCHEMA_VERSION",
    "VERSION_FIELD",
    "ClearAdoptionRequest",
    "ClearForceReschedule",
    "ClusterView",
    "ContentEvent",
    "DeploymentEvent",
    "DeploymentRecord",
    "DeploymentSession",
    "EngineEvent",
    "EngineWrite",
    "MachineEvent",
    "MachineRecord",
    "MachineSchedule",
    "MalformedRecord",
    "MetadataEvent",
    "Newer",
    "PlaceUnit",
    "ReasonEvent",
    "RecordTooNew",
    "ScheduleEntry",
    "ScheduleEvent",
    "StateEvent",
    "StoreReason",
    "UnitChange",
    "UnitEvent",
    "UnitRecord",
    "UnitState",
    "UnplaceUnit",
    "WatchBatch",
    "overlay_from_json",
    "overlay_to_json",
    "with_overlays",
]
