"""Errors a user can cause. The CLI turns each into one line on stderr."""


class FleetpyError(Exception):
    """Base of every error a user can cause; its message is shown as is."""


class UnitNameError(FleetpyError):
    """A unit name that systemd/fleet would not accept."""


class UnitParseError(FleetpyError):
    """A unit file that does not parse (message carries file:line)."""


class FleetOptionError(FleetpyError):
    """An invalid [X-Fleet] option, value or combination."""


class TemplateError(FleetpyError):
    """A Jinja unit template or its values could not be rendered."""


class RegistryError(FleetpyError):
    """etcd could not be reached or answered an error."""


class UnknownUnitError(FleetpyError):
    """A unit name that is not in the registry."""

    @classmethod
    def not_submitted(cls, name: str, template: str | None = None) -> "UnknownUnitError":
        """`name` is not submitted (nor, for an instance, its template)."""
        hint = f" (nor its template {template})" if template else ""
        return cls(f"unit {name} is not submitted{hint}")


class PartialWriteError(FleetpyError):
    """A command written in several transactions failed after some had succeeded."""


class StateError(FleetpyError):
    """A request that does not fit a unit's current state."""

    @classmethod
    def global_changes(cls, name: str, becomes_global: bool) -> "StateError":
        """New contents that flip Global=: the engine places one kind and every agent runs
        the other, so no in-place replacement is right."""
        becomes = "global" if becomes_global else "not global"
        return cls(
            f"{name}: the new contents make it {becomes} (Global=), which cannot change "
            f"in place; destroy it first"
        )

    @classmethod
    def different_contents(
        cls,
        name: str,
        stored: str,
        new: str,
        hint: str = "submit, load or start it with --replace, or destroy it first",
    ) -> "StateError":
        """New contents under a submitted unit's name, without --replace."""
        return cls(
            f"{name} is already submitted with different contents (hash {stored[:7]}, "
            f"new {new[:7]}); {hint}"
        )


class DeploymentError(FleetpyError):
    """A deployment directory that cannot be rendered, or a plan that cannot be applied."""


class MetadataError(FleetpyError):
    """Invalid machine metadata: a key or value, or an operator's change of it."""


class ConfigError(FleetpyError):
    """Bad configuration: options, environment or config file."""


class UnitFileError(FleetpyError):
    """A unit file that cannot be read (missing, unreadable, not UTF-8)."""


class FileError(FleetpyError):
    """A user's file that cannot be read or written safely (not a regular file, too big, ...)."""


class SigningError(FleetpyError):
    """A signing key that cannot be made, read or used (missing, unsafe mode, wrong type),
    or a unit that cannot be signed."""


class ContainerError(FleetpyError):
    """An invalid [Container] section: unknown key, bad value, or a clash with [Service]."""


class DrainError(FleetpyError):
    """A cordon, drain or maintenance window that cannot be asked for (an unknown or
    dead machine, a bad option), or a drain that did not finish."""
