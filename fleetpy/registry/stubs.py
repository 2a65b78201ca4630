"""etcd's generated protobuf messages and gRPC stubs (pyetcd.etcdrpc), loaded without
running pyetcd's package __init__: that imports pyetcd's whole client, which fleetpy does
not use (README "Why etcd-sdk-python"), and costs every process talking to etcd ~1 MiB of
RSS and ~10 ms of its start (bench/README.md, "CLI start-up and the agent's memory")."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _generated() -> tuple[Any, Any]:
    if "pyetcd" in sys.modules:  # imported whole already (a test, a benchmark): use it
        from pyetcd import etcdrpc  # type: ignore[import-untyped]
        from pyetcd.etcdrpc import kv_pb2  # type: ignore[import-untyped]

        return etcdrpc, kv_pb2
    spec = importlib.util.find_spec("pyetcd")
    if spec is None:
        raise ImportError("No module named 'pyetcd' (etcd-sdk-python)", name="pyetcd")
    # The package's module, its __init__ not run, just while its subpackage etcdrpc is
    # imported (an ordinary package of generated files); then gone, so that a later
    # `import pyetcd` runs the real __init__ (which reuses the etcdrpc loaded here).
    sys.modules["pyetcd"] = importlib.util.module_from_spec(spec)
    try:
        from pyetcd import etcdrpc
        from pyetcd.etcdrpc import kv_pb2
    finally:
        del sys.modules["pyetcd"]
    return etcdrpc, kv_pb2


etcdrpc, kv_pb2 = _generated()
