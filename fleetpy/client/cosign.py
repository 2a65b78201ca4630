"""`fleetpy sign`: a further operator's signature added to submitted units without changing
them, for agents that require several (`signatures_required`). The operator names the
unit files they vouch for: a unit is signed only if its file's contents are the record's
(the contents in etcd are never what is signed), at the version its signatures bind
(`Signer.cosign`), so that the signatures count together."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import FleetpyError, StateError, UnknownUnitError
from ..registry import UnitChange, UnitRecord
from ..registry.roles import OperatorRegistry
from ..unitfile.signing import Signer, signature_key_ids, signature_version
from ..unitfile.unit import parse_name
from .arguments import LocalUnit, check_count, is_file_arg, read_unit_file, template_beside

# Two operators signing the same unit at once: each write is guarded by the record's
# revision, but a lost race is retried by the registry with the set read before, which
# drops the other's signature; each then reads back and adds its own again if it is gone.
ATTEMPTS = 5


@dataclass(frozen=True)
class Cosigned:
    name: str
    version: int  # the version the unit's signatures bind
    key_ids: tuple[str, ...]  # every key whose signature the record now carries
    added: bool  # False: this key had signed it already


def _local(arg: str) -> tuple[str, LocalUnit]:
    """(unit name, the unit file it is signed from): a file, or an instance named beside
    its template's file (as start does)."""
    template_file = template_beside(arg)
    if template_file is not None:
        return parse_name(os.path.basename(arg)).name, read_unit_file(template_file)
    if not is_file_arg(arg):
        raise FleetpyError(
            f"{arg}: no such unit file; sign vouches for the contents of your own unit "
            "files, not for what etcd holds: give the file's path"
        )
    local = read_unit_file(arg)
    return local.name, local


def cosign(registry: OperatorRegistry, args: Sequence[str], signer: Signer) -> list[Cosigned]:
    """Add `signer`'s signature to each unit whose file `args` names; all checked before
    anything is written (a unit not submitted, or whose contents are not the file's,
    writes nothing)."""
    if not args:
        raise FleetpyError("no unit files given")
    check_count(len(args))
    wanted: dict[str, LocalUnit] = {}
    for arg in args:
        name, local = _local(arg)
        if wanted.get(name, local).hash != local.hash:
            raise StateError(f"{arg}: unit {name} is given twice with different contents")
        wanted[name] = local
    added: set[str] = set()
    for _ in range(ATTEMPTS):
        records = registry.get_units(sorted(wanted))
        changes = []
        for name, local in wanted.items():
            record = _checked(name, local, records[name])
            if not signer.has_signed(name, record.hash, record.signature):
                signature = signer.cosign(name, record.hash, record.signature)
                # The hash guards the contents: changed meanwhile, the write is refused.
                changes.append(UnitChange(name, hash=local.hash, signature=signature))
                added.add(name)
        if not changes:
            return [_outcome(name, records[name], name in added) for name in wanted]
        registry.change_units(changes, records)
    raise StateError(
        f"could not add a signature to {', '.join(sorted(added))}: other writes kept "
        f"replacing the record ({ATTEMPTS} attempts); run it again"
    )


def _checked(name: str, local: LocalUnit, record: UnitRecord | None) -> UnitRecord:
    if record is None:
        raise UnknownUnitError.not_submitted(name, None)
    if record.hash != local.hash:
        raise StateError(
            f"{local.path}: its contents (hash {local.hash[:7]}) are not those of the "
            f"submitted unit {name} (hash {record.hash[:7]}); nothing signed"
        )
    return record


def _outcome(name: str, record: UnitRecord | None, added: bool) -> Cosigned:
    assert record is not None
    ids = tuple(dict.fromkeys(signature_key_ids(record.signature)))
    return Cosigned(name, signature_version(record.signature), ids, added)


__all__ = ["Cosigned", "cosign"]
