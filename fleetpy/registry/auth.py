"""etcd's users, roles and auth switch, as etcd's root user (the roles are access.py's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import RegistryError
from ..model.codecs import MACHINE_ID
from .access import roles
from .base import RegistryBase


class AccessControl(RegistryBase):
    """fleetpy's etcd roles and users."""

    def ensure_access(
        self, machines: Sequence[str] = (), passwords: Mapping[str, str] | None = None
    ) -> list[str]:
        """Make fleetpy's etcd roles for this prefix and these machines' agents, a user
        of the same name holding each, mark the prefix, and turn etcd's auth on.

        Idempotent: run again with more machines to add theirs (once auth is on, as the
        root user: a client certificate with CN root). Each role ends up with exactly
        the grants access.py lists. Users get no password (only a client certificate
        whose CN is their name acts as them) unless `passwords` gives one. Returns what
        it made or changed, for a log.
        """
        for machine in machines:
            if not MACHINE_ID.fullmatch(machine):
                raise RegistryError(f"invalid machine id {machine!r}")
        secrets = dict(passwords or {})
        done: list[str] = []
        if self._etcd.user_add("root", secrets.get("root")):
            done.append("user root")
        self._etcd.user_grant_role("root", "root")
        for role in roles(self.prefix, machines):
            if self._etcd.role_add(role.name):
                done.append(f"role {role.name}")
            current = {(p.key, p.range_end): p for p in self._etcd.role_permissions(role.name)}
            wanted = {(p.key, p.range_end): p for p in role.permissions}
            for where, permission in wanted.items():
                if current.get(where) != permission:
                    self._etcd.role_grant(role.name, permission)
                    done.append(f"grant {role.name} {permission.access.value} {where[0]!r}")
            for key, range_end in current.keys() - wanted.keys():
                self._etcd.role_revoke(role.name, key, range_end)
                done.append(f"revoke {role.name} {key!r}")
            if self._etcd.user_add(role.name, secrets.get(role.name)):
                done.append(f"user {role.name}")
            self._etcd.user_grant_role(role.name, role.name)
        # Agents may not mark the prefix (nor scan it for nested ones): do it for them.
        self.ensure_layout()
        self._etcd.auth_enable()
        return done
