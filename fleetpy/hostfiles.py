"""The files that make a machine a fleetpy host, shipped inside the package (fleetpy/share/)
so that a pip-installed fleetpy has them too: the agent's systemd unit, its config example,
and provision.sh, the one script that builds host images (nspawn rootfs, packer, vagrant).

API:
  read(name) -> bytes                  one of UNIT, CONFIG_EXAMPLE, PROVISION
  agent_unit(program=None) -> str      the unit, ExecStart= on this installation's agent
  installed_agent() -> str | None      the fleetpy-agent script of this installation
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os

UNIT = "fleetpy-agent.service"
CONFIG_EXAMPLE = "agent.yaml.example"
PROVISION = "provision.sh"
# Where provision.sh installs the agent: the program the shipped unit runs.
IMAGE_AGENT = "/opt/fleetpy/venv/bin/fleetpy-agent"


def read(name: str) -> bytes:
    return importlib.resources.files("fleetpy").joinpath("share", name).read_bytes()


def installed_agent() -> str | None:
    """The fleetpy-agent script pip installed with this fleetpy (from the distribution's
    RECORD), or None when there is none (running from a checkout without installing)."""
    # All of them: a checkout's build leftover (fleetpy.egg-info, no scripts) may come first.
    for distribution in importlib.metadata.distributions(name="fleetpy"):
        for file in distribution.files or []:
            if file.name == "fleetpy-agent":
                path = os.path.normpath(str(file.locate()))
                if os.access(path, os.X_OK):
                    return path
    return None


def agent_unit(program: str | None = None) -> str:
    """The agent's unit; ExecStart= runs PROGRAM (default: this installation's agent, else
    the image's path)."""
    text = read(UNIT).decode()
    program = (program or installed_agent() or IMAGE_AGENT).replace("%", "%%")  # specifiers
    if any(c.isspace() for c in program):
        program = f'"{program}"'
    return text.replace(f"ExecStart={IMAGE_AGENT} ", f"ExecStart={program} ")
