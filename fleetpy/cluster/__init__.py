"""Local clusters on one machine: etcd members and CoreOS-like nspawn hosts.

Used by the tests, the benchmarks and the demo; nothing in fleetpy's core (unit,
registry, scheduler, engine, agent, systemd, control) imports it.
"""
