"""fleetpy's domain model: the records the store holds and their JSON codecs, the watch
events, what one read at one revision sees (ClusterView), and writes as data.

| module    | what                                                                       |
|-----------|----------------------------------------------------------------------------|
| `records` | units, deployments, schedule entries, machines, unit states; ClusterView   |
| `codecs`  | schema versions, MalformedRecord/RecordTooNew/Newer, the checks of a value |
| `events`  | one typed record per change a watch sees, in batches                       |
| `changes` | a client's UnitChange, the engine's placements and reasons                 |

Pure: no etcd, no gRPC; nothing here imports fleetpy.registry (the architecture tests
check it). The registry stores and reads these; everyone else may use them without it.
"""
