"""Deployments (P/deploy: what `fleetpy apply` did and does) and their git watchers
(P/watcher); every write of an apply is guarded by its deployment record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..errors import DeploymentError
from ..model.codecs import MalformedRecord
from ..model.records import DeploymentRecord, DeploymentSession
from .base import RegistryBase, TxnConflict
from .transport import Compare, TxnOp, prefix_range_end


class DeploymentKeys(RegistryBase):
    """Deployment records, the sessions guarding applies, git watchers."""

    def _guarded(
        self, compares: Sequence[Compare], ops: Sequence[TxnOp], session: DeploymentSession | None
    ) -> int:
        """Run a client transaction; with a session, only while no other apply has
        written the deployment record since this one last did (and bump it). Returns
        etcd's revision after it."""
        if session is not None:
            key = self.key("deploy", session.name)
            record = session.record
            compares = [
                *compares,
                self.txn.mod(key, record.revision) if record.revision else self.txn.version(key, 0),
            ]
            ops = [*ops, self.txn.put(key, record.to_json())]
        ok, _, revision = self._txn(compares, ops)
        if ok:
            if session is not None:
                session.record = replace(session.record, revision=revision)
            return revision
        if session is not None:
            now = self.get_deployment(session.name)
            if (now.revision if now else 0) != session.record.revision:
                running = f" (it applies {now.applying})" if now and now.applying else ""
                raise DeploymentError(
                    f"another apply of deployment {session.name} wrote since this one "
                    f"started{running}; this one stopped here"
                )
        raise TxnConflict()

    def get_deployment(self, name: str) -> DeploymentRecord | None:
        meta = self._get(self.key("deploy", name))
        if meta is None:
            return None
        try:
            return DeploymentRecord.from_json(name, meta.value, meta.mod_revision)
        except MalformedRecord as exc:
            self._skip(self.key("deploy", name), str(exc))
            return None

    def update_deployment(self, session: DeploymentSession, **fields: str) -> None:
        """Write the deployment record (commit, applying, message), guarded as above."""
        session.record = replace(session.record, **fields)  # type: ignore[arg-type]
        self._retry(lambda: self._guarded([], [], session))

    def campaign_watcher(self, deployment: str, candidate: str, lease_id: int) -> bool:
        """Be the one git watcher of a deployment (create-if-absent under a lease)."""
        key = self.key("watcher", deployment)
        ok, _, _ = self._txn(
            [self.txn.version(key, 0)], [self.txn.put(key, candidate, lease=lease_id)]
        )
        if ok:
            return True
        meta = self._get(key)
        return meta is not None and meta.value.decode("utf-8", "replace") == candidate

    def read_leader_and_deployments(self) -> tuple[str | None, dict[str, DeploymentRecord], int]:
        """The engine leader and every deployment record at ONE revision (returned, so
        watches resume exactly there): what a dashboard shows beside the ClusterView."""
        leader_key, start = self.key("engine", "leader"), self._prefix("deploy")
        _, (leader, records), revision = self._txn(
            [], [self.txn.get(leader_key), self.txn.get(start, prefix_range_end(start))]
        )
        deployments: dict[str, DeploymentRecord] = {}
        for value, meta in records:
            item = self._decoded("deploy", start, meta.key, value, meta.mod_revision)
            if item is not None:
                deployments[item[0]] = item[1]
        name = leader[0][0].decode("utf-8", "replace") if leader else None
        return name, deployments, revision
