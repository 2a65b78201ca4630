"""fleetpy: a fleet-style distributed init system over etcd and systemd."""

__version__ = "0.1.0"
