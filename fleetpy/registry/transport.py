"""fleetpy's etcd v3 client: gRPC channels, endpoint failover and one watch stream.

Built on the generated stubs in ``pyetcd.etcdrpc`` (pyetcd is kept for its protobuf
files only). What it adds over pyetcd's MultiEndpointEtcd3Client:

* Every unary call (range, txn, put, delete, lease grant/revoke/keepalive, compact)
  fails over: the preferred endpoint (the last one that answered) first, then the
  others, all within ONE overall deadline (``timeout``). Each attempt gets its own
  deadline (the remaining time shared among the endpoints not tried yet, at least
  ``_MIN_ATTEMPT`` s) so a paused or blackholed member cannot eat the whole budget.
  An endpoint that failed is skipped for ``_FAILED_FOR`` s while others are left.
* Retrying is safe only because every fleetpy write is idempotent or guarded by
  compares: an attempt that timed out may still have been applied, and its retry
  then either repeats the same put or finds its compares false (the caller re-reads,
  as after any lost race). Do not send unguarded non-idempotent writes through here.
  Lease grant retried after a timeout may leave an unused lease that expires by TTL.
* Channels cap gRPC's reconnect backoff (CHANNEL_OPTIONS), so a long-lived client
  is back within about a second of etcd being reachable, however long the outage.
* All watches share one bidirectional Watch stream (as etcd's clientv3 does), read by
  one thread. When the stream breaks, each of its watches gets exactly one
  WatchEnded callback (resync from a fresh read); the next watch() opens a new
  stream, on another endpoint if needed.
* With user/password, each endpoint authenticates on first use (simple tokens are
  member-local) and once more when etcd says the token is invalid or expired. Without
  them, etcd (with --client-cert-auth) takes the user from the client certificate's CN.
* What retrying cannot fix is not retried until the deadline: a TLS handshake that
  failed on a certificate (etcd's not trusted, ours refused) marks that endpoint out
  for the call, and once every endpoint is out the call fails at once (EtcdRefused),
  each endpoint with its cause; permission denied and failed authentication likewise.

Exceptions subclass fleetpy.errors.RegistryError and carry one-line messages.
"""

from __future__ import annotations

import os

# Before grpc is first imported (pyetcd imports it too): gRPC's C core must not
# print its own connection errors on our users' terminals.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import enum
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from ..errors import RegistryError
from ..log import log_event
from .stubs import etcdrpc, kv_pb2

R = TypeVar("R")

# Why these options:
# * reconnect backoff 100 ms .. 1 s: gRPC's default grows to 120 s (1 s x 1.6 per
#   failure); after a 20 s outage long-lived channels stayed down ~5-10 s after
#   etcd was back, and a new channel in the same process reused their backed-off
#   subchannel and failed at once. Capped at 1 s, both reconnect within ~1 s.
# * keepalive 10 s / 5 s, pings without data unlimited: a paused (SIGSTOP) or
#   partitioned member keeps its TCP connection up; only HTTP/2 pings notice it,
#   and an idle watch stream sends no data (gRPC otherwise stops pinging after 2).
#   etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time), and
#   pings only go out while a call is open (etcd forbids pings without streams).
# * unlimited receive size: a full read of a big cluster exceeds gRPC's 4 MiB
#   default (etcd's clientv3 also lifts it).
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.ping_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", -1),
)

# Defragmenting rewrites the member's whole database: it may take longer than a request.
_DEFRAGMENT_TIMEOUT = 60.0
# A member without a leader answers "no leader" at once (we ask with _REQUIRE_LEADER).
# In a healthy cluster that lasts one election (etcd's --election-timeout, 1 s by
# default); for longer than this, on every member that answers, the quorum is lost.
_NO_LEADER_WINDOW = 2.0
_FAILED_FOR = 1.0  # seconds an endpoint is tried last after it failed
_MIN_ATTEMPT = 1.0  # a per-attempt deadline shorter than this fails healthy members
_ROUND_PAUSE = (0.05, 0.5)  # first and largest pause when every endpoint failed once

# etcd answers these when the member cannot serve right now, whatever the gRPC code:
# another member (or the same one a moment later) can.
_RETRY_DETAILS = (
    "no leader",
    "request timed out",
    "leader changed",
    "server stopped",
    "not capable",
    "raft: stopped",
    "proposal dropped",
)
_NO_LEADER = "no leader"  # etcd's own words, as _short_reason keeps them
_TOKEN_DETAILS = ("invalid auth token", "auth store is old", "user name is empty")

# clientv3's WithRequireLeader: the member cancels our watches when it loses its
# leader, instead of keeping a silent stream on a partitioned member.
_REQUIRE_LEADER = ("hasleader", "true")

Metadata = tuple[tuple[str, str], ...]


# ----------------------------------------------------------------------------- errors


class EtcdError(RegistryError):
    """etcd answered an error (or the call could not be made); code is gRPC's."""

    def __init__(self, code: grpc.StatusCode, details: str, endpoint: str = "") -> None:
        self.code = code
        self.details = details
        self.endpoint = endpoint
        where = f"etcd at {endpoint}" if endpoint else "etcd"
        super().__init__(f"{where}: {_one_line(details) or code.name.lower()}")


class EtcdUnavailable(EtcdError):
    """No endpoint answered within the deadline; failures names each endpoint's last error."""

    def __init__(
        self, failures: Sequence[EndpointFailure], timeout: float, what: str = "cannot reach etcd"
    ) -> None:
        self.failures = tuple(failures)
        self.timeout = timeout
        listed = ", ".join(f"{f.url} ({f.reason})" for f in self.failures)
        RegistryError.__init__(self, f"{what} at {listed} after {timeout:g}s")
        self.code = grpc.StatusCode.UNAVAILABLE
        self.details = listed
        self.endpoint = ",".join(f.url for f in self.failures)


class EtcdNoQuorum(EtcdUnavailable):
    """No member that answers has a leader for longer than an election takes: a majority
    of etcd's members is gone (or cut off). Raised then, not at the deadline."""

    def __init__(self, failures: Sequence[EndpointFailure], timeout: float) -> None:
        EtcdUnavailable.__init__(self, failures, timeout)
        listed = ", ".join(f"{f.url} ({f.reason})" for f in self.failures)
        RegistryError.__init__(
            self,
            f"etcd has lost its quorum: no member has a leader ({listed}); running units "
            "keep running, nothing can change until a majority of its members is back",
        )


class EtcdRefused(EtcdUnavailable):
    """Every endpoint failed for a reason retrying will not fix (a certificate problem):
    raised at once, not at the deadline. One line: the endpoints and each cause."""

    def __init__(self, failures: Sequence[EndpointFailure], timeout: float) -> None:
        EtcdUnavailable.__init__(self, failures, timeout)
        causes: dict[str, list[str]] = {}
        for failure in failures:
            causes.setdefault(failure.reason, []).append(failure.url)
        text = "; ".join(f"etcd at {', '.join(urls)}: {reason}" for reason, urls in causes.items())
        RegistryError.__init__(self, text)


class EtcdPermissionDenied(EtcdError):
    """etcd's access control refused the request: this user may not touch these keys."""

    def __init__(self, endpoint: str, user: str | None, keys: str) -> None:
        who = f"user {user}" if user else "this client"
        super().__init__(
            grpc.StatusCode.PERMISSION_DENIED, f"permission denied for {who} on {keys}", endpoint
        )


class EtcdAuthFailed(EtcdError):
    """etcd did not accept who we said we are (user/password), or wants to know."""


class EtcdCompacted(EtcdError):
    """The requested revision is compacted: resync from a fresh read."""

    def __init__(self, compact_revision: int, endpoint: str = "") -> None:
        kept = f" (oldest kept: {compact_revision})" if compact_revision else ""
        super().__init__(grpc.StatusCode.OUT_OF_RANGE, f"revision compacted{kept}", endpoint)
        self.compact_revision = compact_revision


class EtcdNoSpace(EtcdError):
    """etcd's database reached its quota (--quota-backend-bytes) and raised the NOSPACE
    alarm: it refuses every write (reads, deletes and lease keepalives still work) until
    its history is compacted, the database defragmented and the alarm disarmed."""

    def __init__(self, endpoint: str = "") -> None:
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "out of space (the NOSPACE alarm: its database reached --quota-backend-bytes); "
            "`fleetpy etcd reclaim` compacts, defragments and disarms it",
            endpoint,
        )


class WatchStreamBroken(EtcdError):
    """The shared watch stream ended (endpoint died, closed, or failed over)."""

    tls: tuple[TlsProblem, str] | None = None  # it never started: a certificate problem


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class TlsCredentials(Protocol):
    """PEM bytes for the channel, read and validated by the caller (registry/tls.py's
    TlsMaterial fits). A None root means gRPC's default CAs."""

    @property
    def root_certificates(self) -> bytes | None: ...

    @property
    def certificate_chain(self) -> bytes | None: ...

    @property
    def private_key(self) -> bytes | None: ...


class TlsProblem(enum.Enum):
    """Why a TLS handshake failed, as far as gRPC's error text tells."""

    SERVER_UNTRUSTED = "server-untrusted"  # etcd's certificate did not verify against our CA
    SERVER_NAME = "server-name"  # etcd's certificate is not for the address we dialled
    CLIENT_REFUSED = "client-refused"  # etcd refused our client certificate, or its absence
    NOT_TLS = "not-tls"  # the endpoint answered, but not with TLS


class TlsDiagnosis(Protocol):
    """Turns a TLS problem into words naming the user's files (registry/tls.py's
    TlsMaterial fits), and says which etcd user our client certificate is."""

    def explain(self, problem: TlsProblem, detail: str) -> str: ...

    @property
    def identity(self) -> str | None: ...


_DEFAULT_EXPLANATIONS = {
    TlsProblem.SERVER_UNTRUSTED: "etcd's certificate is not trusted ({detail})",
    TlsProblem.SERVER_NAME: "etcd's certificate is not for this address ({detail})",
    TlsProblem.CLIENT_REFUSED: "etcd refused the client certificate (or requires one)",
    TlsProblem.NOT_TLS: "the endpoint does not speak TLS (http:// instead of https://?)",
}


@dataclass(frozen=True)
class EndpointFailure:
    url: str
    reason: str  # short: "connection refused", "timed out", "no leader", ...


@dataclass(frozen=True)
class EndpointStats:
    """Unary calls (attempts, retries included) sent to one endpoint, and the failed ones.
    Watch streams are not counted."""

    url: str
    requests: int
    errors: int


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    revision: int  # etcd's revision when it answered (the header)


@dataclass(frozen=True)
class PutResult:
    revision: int


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    revision: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    responses: tuple[RangeResult | PutResult | DeleteResult, ...]
    revision: int


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


class CompareTarget(enum.Enum):
    VERSION = "version"
    CREATE = "create"
    MOD = "mod"
    VALUE = "value"


class CompareResult(enum.Enum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"


@dataclass(frozen=True)
class Compare:
    """One transaction guard, e.g. Compare.mod(key, 42): key's mod_revision == 42."""

    key: bytes
    target: CompareTarget
    value: int | bytes
    result: CompareResult = CompareResult.EQUAL
    range_end: bytes | None = None

    @classmethod
    def mod(
        cls, key: bytes | str, revision: int, result: CompareResult = CompareResult.EQUAL
    ) -> Compare:
        return cls(_b(key), CompareTarget.MOD, int(revision), result)

    @classmethod
    def version(
        cls, key: bytes | str, version: int, result: CompareResult = CompareResult.EQUAL
    ) -> Compare:
        return cls(_b(key), CompareTarget.VERSION, int(version), result)

    @classmethod
    def create(
        cls, key: bytes | str, revision: int, result: CompareResult = CompareResult.EQUAL
    ) -> Compare:
        return cls(_b(key), CompareTarget.CREATE, int(revision), result)

    @classmethod
    def value_is(
        cls, key: bytes | str, value: bytes | str, result: CompareResult = CompareResult.EQUAL
    ) -> Compare:
        return cls(_b(key), CompareTarget.VALUE, _b(value), result)


@dataclass(frozen=True)
class GetOp:
    key: bytes
    range_end: bytes | None = None
    keys_only: bool = False
    count_only: bool = False


@dataclass(frozen=True)
class PutOp:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class DeleteOp:
    key: bytes
    range_end: bytes | None = None


TxnOp = GetOp | PutOp | DeleteOp


class Access(enum.Enum):
    """What an etcd role may do with a key range (etcd's Permission.Type)."""

    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"


@dataclass(frozen=True)
class KeyPermission:
    """One grant of an etcd role: a single key (range_end None) or [key, range_end)."""

    access: Access
    key: bytes
    range_end: bytes | None = None


class EventKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class WatchEvent:
    kind: EventKind
    key: bytes
    value: bytes  # empty for a delete
    mod_revision: int


@dataclass(frozen=True)
class WatchResponse:
    events: tuple[WatchEvent, ...]
    revision: int  # the header revision


@dataclass(frozen=True)
class MemberStatus:
    """One member's answer to Maintenance.Status (or why it gave none)."""

    url: str
    member_id: int = 0
    db_size: int = 0  # bytes of its database file, free pages included
    revision: int = 0
    leader: int = 0  # the member id it follows
    version: str = ""
    error: str = ""  # it did not answer: the reason


@dataclass(frozen=True)
class Alarm:
    member_id: int
    kind: str  # etcd's name: NOSPACE, CORRUPT


@dataclass(frozen=True)
class WatchEnded:
    """The watch is over (no more callbacks): resync from a fresh read."""

    error: EtcdError

    @property
    def compacted(self) -> bool:
        return isinstance(self.error, EtcdCompacted)


WatchCallback = Callable[[WatchResponse | WatchEnded], None]


def prefix_range_end(prefix: bytes | str) -> bytes:
    """range_end that makes [prefix, end) every key starting with prefix."""
    raw = bytearray(_b(prefix))
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"  # all keys


_ACCESS_TYPES = {
    Access.READ: etcdrpc.Permission.READ,
    Access.WRITE: etcdrpc.Permission.WRITE,
    Access.READWRITE: etcdrpc.Permission.READWRITE,
}
_ACCESS_OF = {int(value): access for access, value in _ACCESS_TYPES.items()}

# ----------------------------------------------------------------------------- helpers


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _rpc_code(exc: grpc.RpcError) -> grpc.StatusCode:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _rpc_details(exc: grpc.RpcError) -> str:
    details = exc.details() if isinstance(exc, grpc.Call) else None
    return str(details or "")


def _etcd_message(details: str) -> str:
    return details.removeprefix("etcdserver: ")


def _is_retryable(code: grpc.StatusCode, details: str) -> bool:
    """Another endpoint (or this one a moment later) may serve the same request."""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    return any(text in details for text in _RETRY_DETAILS)


def _is_token_error(code: grpc.StatusCode, details: str) -> bool:
    return code == grpc.StatusCode.UNAUTHENTICATED or any(t in details for t in _TOKEN_DETAILS)


def _short_reason(code: grpc.StatusCode, details: str) -> str:
    """A few words for the one-line 'cannot reach' message."""
    lowered = details.lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timed out"
    for phrase, reason in (
        ("connection refused", "connection refused"),
        ("connection reset", "connection reset"),
        ("no route to host", "no route to host"),
        ("dns resolution failed", "name not resolved"),
        ("handshake", "TLS handshake failed"),
        ("ssl", "TLS error"),
        ("socket closed", "connection closed"),
        ("keepalive", "keepalive timed out"),
        ("ping timeout", "keepalive timed out"),
    ):
        if phrase in lowered:
            return reason
    if "etcdserver: " in details:
        return _etcd_message(details)
    return code.name.lower().replace("_", " ")


def _tls_problem(code: grpc.StatusCode, details: str) -> tuple[TlsProblem, str] | None:
    """A certificate problem in gRPC's error text (None: anything else). gRPC reports
    them as UNAVAILABLE, like a refused connection, but no retry can fix them."""
    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        return None
    if "CERTIFICATE_VERIFY_FAILED" in details:
        detail = details.split("CERTIFICATE_VERIFY_FAILED", 1)[1].strip(": ")
        detail = detail.removesuffix(": OK").strip() or "verification failed"
        return TlsProblem.SERVER_UNTRUSTED, detail
    if "Peer name" in details and "not in peer certificate" in details:
        return TlsProblem.SERVER_NAME, "its names do not include it"
    if "WRONG_VERSION_NUMBER" in details:
        return TlsProblem.NOT_TLS, ""
    # TLS 1.3: our side finished the handshake before etcd checked our certificate, so
    # etcd's alert arrives as the first record gRPC cannot decrypt.
    for marker in ("TSI_DATA_CORRUPTED", "ALERT_BAD_CERTIFICATE", "CERTIFICATE_REQUIRED"):
        if marker in details:
            return TlsProblem.CLIENT_REFUSED, ""
    for marker in ("ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_EXPIRED"):
        if marker in details:
            return TlsProblem.CLIENT_REFUSED, ""
    return None


def _describe_keys(ranges: Sequence[tuple[bytes, bytes | None]]) -> str:
    """'/p/unit/a', '/p/unit/*' (a prefix), or 'one of A, B, C and 2 more' for a request
    over several keys (etcd does not say which one it refused)."""

    def one(key: bytes, end: bytes | None) -> str:
        text = key.decode("utf-8", "replace")
        if not end:
            return text
        if end == prefix_range_end(key):
            return text + "*"
        return f"[{text}, {end.decode('utf-8', 'replace')})"

    names = list(dict.fromkeys(one(k, e) for k, e in ranges))
    if len(names) == 1:
        return names[0]
    shown = ", ".join(names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"one of {shown}{more}"


def _txn_keys(
    compares: Sequence[Compare], ops: Sequence[TxnOp]
) -> list[tuple[bytes, bytes | None]]:
    keys: list[tuple[bytes, bytes | None]] = [(c.key, c.range_end) for c in compares]
    for op in ops:
        keys.append((op.key, op.range_end if isinstance(op, (GetOp, DeleteOp)) else None))
    return keys


def _kv(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _range_result(response: Any) -> RangeResult:
    return RangeResult(
        kvs=tuple(_kv(kv) for kv in response.kvs),
        count=int(response.count),
        more=bool(response.more),
        revision=int(response.header.revision),
    )


def _compare_message(compare: Compare) -> Any:
    message = etcdrpc.Compare()
    message.key = compare.key
    if compare.range_end is not None:
        message.range_end = compare.range_end
    message.result = {
        CompareResult.EQUAL: etcdrpc.Compare.EQUAL,
        CompareResult.NOT_EQUAL: etcdrpc.Compare.NOT_EQUAL,
        CompareResult.LESS: etcdrpc.Compare.LESS,
        CompareResult.GREATER: etcdrpc.Compare.GREATER,
    }[compare.result]
    if compare.target is CompareTarget.VALUE:
        message.target = etcdrpc.Compare.VALUE
        message.value = _b(compare.value) if not isinstance(compare.value, int) else b""
    elif isinstance(compare.value, int):
        if compare.target is CompareTarget.MOD:
            message.target = etcdrpc.Compare.MOD
            message.mod_revision = compare.value
        elif compare.target is CompareTarget.VERSION:
            message.target = etcdrpc.Compare.VERSION
            message.version = compare.value
        else:
            message.target = etcdrpc.Compare.CREATE
            message.create_revision = compare.value
    else:
        raise ValueError(f"compare on {compare.target.value} needs an int, got bytes")
    return message


def _range_request(
    key: bytes,
    range_end: bytes | None,
    keys_only: bool = False,
    count_only: bool = False,
    limit: int = 0,
    revision: int = 0,
    serializable: bool = False,
) -> Any:
    return etcdrpc.RangeRequest(
        key=key,
        range_end=range_end or b"",
        keys_only=keys_only,
        count_only=count_only,
        limit=limit,
        revision=revision,
        serializable=serializable,
    )


def _op_message(op: TxnOp) -> Any:
    if isinstance(op, GetOp):
        return etcdrpc.RequestOp(
            request_range=_range_request(
                op.key, op.range_end, keys_only=op.keys_only, count_only=op.count_only
            )
        )
    if isinstance(op, PutOp):
        return etcdrpc.RequestOp(
            request_put=etcdrpc.PutRequest(key=op.key, value=op.value, lease=op.lease)
        )
    return etcdrpc.RequestOp(
        request_delete_range=etcdrpc.DeleteRangeRequest(key=op.key, range_end=op.range_end or b"")
    )


def _txn_result(response: Any) -> TxnResult:
    results: list[RangeResult | PutResult | DeleteResult] = []
    revision = int(response.header.revision)
    for item in response.responses:
        kind = item.WhichOneof("response")
        if kind == "response_range":
            results.append(_range_result(item.response_range))
        elif kind == "response_put":
            results.append(PutResult(revision))
        elif kind == "response_delete_range":
            results.append(DeleteResult(int(item.response_delete_range.deleted), revision))
        else:  # nested transactions are never sent
            raise EtcdError(grpc.StatusCode.INTERNAL, f"unexpected txn response {kind}")
    return TxnResult(bool(response.succeeded), tuple(results), revision)


def _safe_callback(callback: WatchCallback, item: WatchResponse | WatchEnded) -> None:
    try:
        callback(item)
    except Exception as exc:
        log_event("watch_callback_failed", error=repr(exc))


# ----------------------------------------------------------------------------- members


class _Member:
    """One endpoint: its channel (made on first use), stubs, auth token, failure mark."""

    def __init__(
        self, index: int, endpoint: Endpoint, url: str, credentials: grpc.ChannelCredentials | None
    ) -> None:
        self.index = index
        self.endpoint = endpoint
        self.url = url
        self._credentials = credentials
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self.kv: Any = None
        self.lease: Any = None
        self.watch: Any = None
        self.auth: Any = None
        self.maintenance: Any = None
        self.token: str | None = None
        self.failed_until = 0.0  # monotonic; guarded by the transport lock
        # Unary calls sent here and how many failed, for metrics; guarded by the
        # transport lock, which every call takes anyway (no extra lock, no allocation).
        self.requests = 0
        self.errors = 0

    def connect(self) -> None:
        with self._lock:
            if self._channel is not None:
                return
            if self._credentials is not None:
                channel = grpc.secure_channel(
                    self.endpoint.target, self._credentials, options=CHANNEL_OPTIONS
                )
            else:
                channel = grpc.insecure_channel(self.endpoint.target, options=CHANNEL_OPTIONS)
            self.kv = etcdrpc.KVStub(channel)
            self.lease = etcdrpc.LeaseStub(channel)
            self.watch = etcdrpc.WatchStub(channel)
            self.auth = etcdrpc.AuthStub(channel)
            self.maintenance = etcdrpc.MaintenanceStub(channel)
            self._channel = channel

    def close(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()


class _Attempt:
    """What an operation gets for one try on one member."""

    def __init__(self, member: _Member, timeout: float, metadata: Metadata) -> None:
        self.member = member
        self.timeout = timeout
        self.metadata = metadata


# ----------------------------------------------------------------------------- watches


class _Watch:
    def __init__(self, callback: WatchCallback) -> None:
        self.callback = callback
        # Held while the callback runs: cancel() from another thread waits for it, so
        # no callback runs after cancel() returns. Reentrant: cancel from the callback.
        self.lock = threading.RLock()
        self.done = False  # no more callbacks (cancelled or ended)
        self.watch_id: int | None = None
        self.settled = threading.Event()  # the create request was answered or failed
        self.failure: EtcdError | None = None

    def deliver(self, item: WatchResponse | WatchEnded) -> None:
        with self.lock:
            if self.done:
                return
            if isinstance(item, WatchEnded):
                self.done = True
            _safe_callback(self.callback, item)


class _WatchStream:
    """One Watch RPC on one member, multiplexing every watch of the transport."""

    def __init__(self, member: _Member, metadata: Metadata) -> None:
        self.member = member
        self.requests: queue.Queue[Any] = queue.Queue()
        self.pending: deque[_Watch] = deque()  # create requests in flight, in order
        self.active: dict[int, _Watch] = {}
        self.broken = False
        self.error: EtcdError | None = None
        self.orphans: list[_Watch] = []  # watches to tell the stream ended
        self.silent = False  # closing: end without callbacks
        self.call: Any = member.watch.Watch(
            self._request_iterator(), metadata=(*metadata, _REQUIRE_LEADER)
        )
        self.thread = threading.Thread(
            target=self._consume, daemon=True, name=f"etcd-watch-{member.endpoint.target}"
        )
        self._lock: threading.Lock | None = None

    def start(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.thread.start()

    def _request_iterator(self) -> Iterator[Any]:
        while True:
            request = self.requests.get()
            if request is None:
                return
            yield request

    def break_locked(self, error: EtcdError, silent: bool = False) -> None:
        """Mark broken (caller holds the transport lock); the consumer tells the watches."""
        if self.broken:
            return
        self.broken = True
        self.error = error
        self.silent = silent
        self.orphans = list(self.active.values())
        self.active.clear()
        for watch in self.pending:
            watch.failure = error
            watch.settled.set()
        self.pending.clear()
        self.requests.put(None)  # ends gRPC's request-sending thread

    def _consume(self) -> None:
        assert self._lock is not None
        error: EtcdError
        try:
            for response in self.call:
                self._handle(response)
            error = WatchStreamBroken(
                grpc.StatusCode.UNAVAILABLE, "watch stream ended", self.member.url
            )
        except grpc.RpcError as exc:
            code, details = _rpc_code(exc), _rpc_details(exc)
            error = WatchStreamBroken(
                code, f"watch stream ended: {_short_reason(code, details)}", self.member.url
            )
            error.tls = _tls_problem(code, details)
        except Exception as exc:
            error = WatchStreamBroken(
                grpc.StatusCode.UNKNOWN, f"watch stream ended: {exc!r}", self.member.url
            )
        with self._lock:
            self.break_locked(error)
            orphans, self.orphans = self.orphans, []
            silent = self.silent
            final = self.error or error
        self.call.cancel()
        if not silent:
            for watch in orphans:
                watch.deliver(WatchEnded(final))

    def _handle(self, response: Any) -> None:
        assert self._lock is not None
        ended: EtcdError | None = None
        with self._lock:
            if self.broken:
                return
            if response.created:
                if not self.pending:
                    return  # cannot happen: etcd answers creates in order
                watch = self.pending.popleft()
                if response.canceled:
                    reason = response.cancel_reason or "watch refused"
                    code = (
                        grpc.StatusCode.UNAUTHENTICATED
                        if _is_token_error(grpc.StatusCode.UNKNOWN, reason)
                        else grpc.StatusCode.FAILED_PRECONDITION
                    )
                    watch.failure = EtcdError(code, reason, self.member.url)
                    watch.settled.set()
                    return
                watch.watch_id = int(response.watch_id)
                self.active[watch.watch_id] = watch
                watch.settled.set()
            watch_or_none = self.active.get(int(response.watch_id))
            if watch_or_none is None:
                return  # a watch we cancelled: leftovers
            watch = watch_or_none
            if response.compact_revision:
                ended = EtcdCompacted(int(response.compact_revision), self.member.url)
                self.active.pop(int(response.watch_id), None)
            elif response.canceled:
                ended = EtcdError(
                    grpc.StatusCode.UNAVAILABLE,
                    response.cancel_reason or "watch cancelled by etcd",
                    self.member.url,
                )
                self.active.pop(int(response.watch_id), None)
        if ended is not None:
            watch.deliver(WatchEnded(ended))
            return
        if response.events:
            events = tuple(
                WatchEvent(
                    EventKind.DELETE if event.type == kv_pb2.Event.DELETE else EventKind.PUT,
                    bytes(event.kv.key),
                    bytes(event.kv.value),
                    int(event.kv.mod_revision),
                )
                for event in response.events
            )
            watch.deliver(WatchResponse(events, int(response.header.revision)))


# ----------------------------------------------------------------------------- transport


class EtcdTransport:
    """A thread-safe etcd v3 client over several endpoints (see the module docstring).

    endpoints: members in order of preference; tls: PEM bytes, then every endpoint
    uses TLS (https); user/password: etcd auth. timeout: the overall deadline of each call.
    diagnosis: words for TLS problems and the client certificate's user (for messages).
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        timeout: float = 5.0,
        tls: TlsCredentials | None = None,
        user: str | None = None,
        password: str | None = None,
        diagnosis: TlsDiagnosis | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if (user is None) != (password is None):
            raise ValueError("etcd user and password go together")
        credentials = None
        if tls is not None:
            if (tls.certificate_chain is None) != (tls.private_key is None):
                # gRPC's C core aborts the process on one without the other
                raise ValueError("a client certificate and its key go together")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.root_certificates,
                private_key=tls.private_key,
                certificate_chain=tls.certificate_chain,
            )
        scheme = "https" if tls is not None else "http"
        self._secure = tls is not None
        self.timeout = float(timeout)
        self._user = user
        self._password = password
        self._diagnosis = diagnosis
        self._members = [
            _Member(i, endpoint, f"{scheme}://{endpoint.target}", credentials)
            for i, endpoint in enumerate(endpoints)
        ]
        self._lock = threading.Lock()  # member failure marks, preferred, watch stream
        self._stream_lock = threading.Lock()  # one stream opened at a time
        self._preferred = 0
        self._stream: _WatchStream | None = None
        self._closed = False

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(member.url for member in self._members)

    # -- key-value

    def range(
        self,
        key: bytes | str,
        range_end: bytes | None = None,
        *,
        keys_only: bool = False,
        count_only: bool = False,
        limit: int = 0,
        revision: int = 0,
        serializable: bool = False,
    ) -> RangeResult:
        request = _range_request(
            _b(key), range_end, keys_only, count_only, limit, revision, serializable
        )
        return self._unary(
            lambda a: _range_result(
                a.member.kv.Range(request, timeout=a.timeout, metadata=a.metadata)
            ),
            lambda: _describe_keys([(_b(key), range_end)]),
        )

    def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0) -> PutResult:
        request = etcdrpc.PutRequest(key=_b(key), value=_b(value), lease=lease)
        return self._unary(
            lambda a: PutResult(
                int(
                    a.member.kv.Put(request, timeout=a.timeout, metadata=a.metadata).header.revision
                )
            ),
            lambda: _describe_keys([(_b(key), None)]),
        )

    def delete(self, key: bytes | str, range_end: bytes | None = None) -> DeleteResult:
        request = etcdrpc.DeleteRangeRequest(key=_b(key), range_end=range_end or b"")

        def call(a: _Attempt) -> DeleteResult:
            response = a.member.kv.DeleteRange(request, timeout=a.timeout, metadata=a.metadata)
            return DeleteResult(int(response.deleted), int(response.header.revision))

        return self._unary(call, lambda: _describe_keys([(_b(key), range_end)]))

    def txn(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        request = etcdrpc.TxnRequest(
            compare=[_compare_message(c) for c in compares],
            success=[_op_message(op) for op in success],
            failure=[_op_message(op) for op in failure],
        )
        return self._unary(
            lambda a: _txn_result(a.member.kv.Txn(request, timeout=a.timeout, metadata=a.metadata)),
            lambda: _describe_keys(_txn_keys(compares, [*success, *failure])),
        )

    def compact(self, revision: int, physical: bool = False) -> None:
        """Drop the history before REVISION. Compacting at or below the revision already
        compacted is done (a retry after a timed-out attempt that did it finds it so)."""
        request = etcdrpc.CompactionRequest(revision=revision, physical=physical)
        try:
            self._unary(
                lambda a: a.member.kv.Compact(request, timeout=a.timeout, metadata=a.metadata)
            )
        except EtcdCompacted:
            pass

    # -- maintenance: each member answers for itself

    def member_status(self) -> list[MemberStatus]:
        """Every member's status, in endpoint order; one that does not answer within
        the timeout is listed with the reason."""

        def call(a: _Attempt) -> MemberStatus:
            response = a.member.maintenance.Status(
                etcdrpc.StatusRequest(), timeout=a.timeout, metadata=a.metadata
            )
            return MemberStatus(
                url=a.member.url,
                member_id=int(response.header.member_id),
                db_size=int(response.dbSize),
                revision=int(response.header.revision),
                leader=int(response.leader),
                version=str(response.version),
            )

        statuses = []
        for member in self._members:
            try:
                statuses.append(self._on_member(member, call))
            except EtcdError as exc:
                statuses.append(MemberStatus(url=member.url, error=_one_line(exc.details)))
        return statuses

    def defragment(self, url: str) -> None:
        """Give the member at URL's free pages back to its filesystem (it blocks reads
        and writes on that member while it runs: one member at a time)."""
        member = next(m for m in self._members if m.url == url)
        self._on_member(
            member,
            lambda a: a.member.maintenance.Defragment(
                etcdrpc.DefragmentRequest(),
                timeout=max(a.timeout, _DEFRAGMENT_TIMEOUT),
                metadata=a.metadata,
            ),
        )

    def alarms(self) -> list[Alarm]:
        request = etcdrpc.AlarmRequest(action=etcdrpc.AlarmRequest.GET)
        response = self._unary(
            lambda a: a.member.maintenance.Alarm(request, timeout=a.timeout, metadata=a.metadata)
        )
        return [
            Alarm(int(alarm.memberID), etcdrpc.AlarmType.Name(alarm.alarm))
            for alarm in response.alarms
        ]

    def disarm(self, alarm: Alarm) -> None:
        request = etcdrpc.AlarmRequest(
            action=etcdrpc.AlarmRequest.DEACTIVATE,
            memberID=alarm.member_id,
            alarm=etcdrpc.AlarmType.Value(alarm.kind),
        )
        self._unary(
            lambda a: a.member.maintenance.Alarm(request, timeout=a.timeout, metadata=a.metadata)
        )

    def _on_member(self, member: _Member, operation: Callable[[_Attempt], R]) -> R:
        """OPERATION on this member only, within the timeout: no failover."""
        try:
            # A member's own status needs no leader: it says whether it has one.
            return self._attempt(
                member, operation, time.monotonic() + self.timeout, require_leader=False
            )
        except grpc.RpcError as exc:
            code, details = _rpc_code(exc), _rpc_details(exc)
            problem = self._tls_failure(code, details)
            if problem is not None:
                raise EtcdError(code, problem, member.url) from None
            if _is_retryable(code, details):
                raise EtcdError(code, self._reason(code, details), member.url) from None
            raise self._rpc_error(member, exc) from None

    # -- leases

    def lease_grant(self, ttl: int) -> Lease:
        request = etcdrpc.LeaseGrantRequest(TTL=int(ttl))

        def call(a: _Attempt) -> Lease:
            response = a.member.lease.LeaseGrant(request, timeout=a.timeout, metadata=a.metadata)
            if response.error:
                raise EtcdError(grpc.StatusCode.UNKNOWN, response.error, a.member.url)
            return Lease(int(response.ID), int(response.TTL))

        return self._unary(call)

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease; one that no longer exists counts as revoked (a retry after a
        timed-out attempt that did revoke it finds it gone)."""
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        try:
            self._unary(
                lambda a: a.member.lease.LeaseRevoke(
                    request, timeout=a.timeout, metadata=a.metadata
                ),
                lambda: f"the keys attached to lease {lease_id:x}",
            )
        except EtcdError as exc:
            if "lease not found" not in exc.details:
                raise

    def lease_keepalive_once(self, lease_id: int) -> int:
        """One round on a LeaseKeepAlive stream; the remaining TTL, <= 0 if expired."""
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def call(a: _Attempt) -> int:
            stream = a.member.lease.LeaseKeepAlive(
                iter((request,)), timeout=a.timeout, metadata=(*a.metadata, _REQUIRE_LEADER)
            )
            try:
                for response in stream:
                    return int(response.TTL)
            finally:
                stream.cancel()
            return 0  # stream closed without an answer: etcd knows no such lease

        return self._unary(call)

    # -- access control: users and roles (the caller acts as etcd's root user)

    def user_add(self, name: str, password: str | None = None) -> bool:
        """Add a user (None: no password, so only a client certificate with its name as
        CN can act as it). False if it existed already (its password is left alone)."""
        request = etcdrpc.AuthUserAddRequest(name=name, password=password or "")
        if password is None:
            # options.no_password (etcd 3.4's field 3, UserAddOptions field 1): pyetcd's
            # generated messages predate it, so it goes in as an encoded unknown field.
            request.MergeFromString(b"\x1a\x02\x08\x01")
        return self._auth_add(lambda a: a.member.auth.UserAdd, request, f"user {name}")

    def role_add(self, name: str) -> bool:
        """Add a role; False if it existed already."""
        request = etcdrpc.AuthRoleAddRequest(name=name)
        return self._auth_add(lambda a: a.member.auth.RoleAdd, request, f"role {name}")

    def user_grant_role(self, user: str, role: str) -> None:
        request = etcdrpc.AuthUserGrantRoleRequest(user=user, role=role)
        self._auth_add(lambda a: a.member.auth.UserGrantRole, request, f"role {role} of {user}")

    def role_permissions(self, role: str) -> list[KeyPermission]:
        request = etcdrpc.AuthRoleGetRequest(role=role)

        def call(a: _Attempt) -> list[KeyPermission]:
            response = a.member.auth.RoleGet(request, timeout=a.timeout, metadata=a.metadata)
            return [
                KeyPermission(_ACCESS_OF[int(p.permType)], bytes(p.key), bytes(p.range_end) or None)
                for p in response.perm
            ]

        return self._unary(call, lambda: f"role {role}")

    def role_grant(self, role: str, permission: KeyPermission) -> None:
        """Grant (or change the access of) one key range; etcd keeps one grant per range."""
        perm = etcdrpc.Permission(
            permType=_ACCESS_TYPES[permission.access],
            key=permission.key,
            range_end=permission.range_end or b"",
        )
        request = etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)
        self._unary(
            lambda a: a.member.auth.RoleGrantPermission(
                request, timeout=a.timeout, metadata=a.metadata
            ),
            lambda: f"role {role}",
        )

    def role_revoke(self, role: str, key: bytes, range_end: bytes | None) -> None:
        request = etcdrpc.AuthRoleRevokePermissionRequest(
            role=role,
            key=key.decode("utf-8", "surrogateescape"),
            range_end=(range_end or b"").decode("utf-8", "surrogateescape"),
        )
        try:
            self._unary(
                lambda a: a.member.auth.RoleRevokePermission(
                    request, timeout=a.timeout, metadata=a.metadata
                ),
                lambda: f"role {role}",
            )
        except EtcdError as exc:
            if "permission is not granted" not in exc.details:  # a retry found it revoked
                raise

    def auth_enable(self) -> None:
        """Turn etcd's access control on (needs the root user with the root role; etcd
        treats enabling it again as success)."""
        request = etcdrpc.AuthEnableRequest()
        self._unary(
            lambda a: a.member.auth.AuthEnable(request, timeout=a.timeout, metadata=a.metadata),
            lambda: "auth enable",
        )

    def _auth_add(self, method: Callable[[_Attempt], Any], request: Any, what: str) -> bool:
        try:
            self._unary(
                lambda a: method(a)(request, timeout=a.timeout, metadata=a.metadata),
                lambda: what,
            )
        except EtcdError as exc:
            # Also what a retry after a timed-out attempt that did add it finds.
            if "already exists" in exc.details or "already granted" in exc.details:
                return False
            raise
        return True

    # -- watches

    def watch(
        self,
        key: bytes | str,
        range_end: bytes | None,
        start_revision: int | None,
        callback: WatchCallback,
    ) -> Callable[[], None]:
        """Watch [key, range_end) from start_revision (None: from now); returns cancel().

        Returns once etcd confirmed the watch. callback gets WatchResponse batches and
        at most one WatchEnded (stream broken, member lost, revision compacted), after
        which the watch is over. Callbacks run on the stream's thread one at a time: keep
        them short and never call watch() from one. After cancel() returns no callback
        runs (cancel waits for one in progress on another thread: do not cancel while
        holding a lock your callback takes). Raises EtcdUnavailable if no endpoint
        confirmed the watch within the timeout.
        """
        create = etcdrpc.WatchCreateRequest(
            key=_b(key), range_end=range_end or b"", start_revision=start_revision or 0
        )
        request = etcdrpc.WatchRequest(create_request=create)
        with self._lock:
            stream_now = self._stream
        if stream_now is not None and threading.current_thread() is stream_now.thread:
            raise RuntimeError("watch() called from a watch callback would wait for itself")
        deadline = time.monotonic() + self.timeout
        failures: dict[int, str] = {}
        refused: dict[int, str] = {}
        reauthed: set[int] = set()
        pause = _ROUND_PAUSE[0]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable(failures)
            if len(failures) >= len(self._members) and self._all_failed():
                time.sleep(min(pause, remaining))  # every endpoint failed: do not spin
                pause = min(pause * 2, _ROUND_PAUSE[1])
            stream = self._open_stream(deadline, failures, refused)
            member = stream.member
            watch = _Watch(callback)
            with self._lock:
                if not stream.broken:
                    stream.pending.append(watch)
                    stream.requests.put(request)
                else:  # broke while opening (e.g. connection refused)
                    watch.failure = stream.error
                    watch.settled.set()
            untried = max(1, len(self._members) - len(failures))
            attempt = min(remaining, max(_MIN_ATTEMPT, remaining / untried))
            if not watch.settled.wait(attempt):
                failures[member.index] = "timed out"
                with self._lock:
                    self._mark_failed_locked(member)
                    self._drop_stream_locked(
                        stream,
                        WatchStreamBroken(
                            grpc.StatusCode.DEADLINE_EXCEEDED, "watch stream timed out", member.url
                        ),
                    )
                continue
            failure = watch.failure
            if failure is None:
                return self._canceller(stream, watch)
            if failure.code == grpc.StatusCode.UNAUTHENTICATED and member.index not in reauthed:
                reauthed.add(member.index)
                member.token = None  # the next stream authenticates afresh
                with self._lock:
                    self._drop_stream_locked(stream, failure)
                continue
            if isinstance(failure, WatchStreamBroken) and failure.tls is not None:
                refused[member.index] = failures[member.index] = self._tls_reason(*failure.tls)
                with self._lock:
                    self._mark_failed_locked(member)
                    self._drop_stream_locked(stream, failure)
                if len(refused) == len(self._members):
                    raise self._refused(refused)
                continue
            if isinstance(failure, WatchStreamBroken) or _is_retryable(
                failure.code, failure.details
            ):
                failures[member.index] = _short_reason(failure.code, failure.details)
                with self._lock:
                    self._mark_failed_locked(member)
                    self._drop_stream_locked(stream, failure)
                continue
            if "permission denied" in failure.details:
                raise EtcdPermissionDenied(
                    member.url, self.identity, _describe_keys([(_b(key), range_end)])
                )
            raise failure

    def _all_failed(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return all(member.failed_until > now for member in self._members)

    def _drop_stream_locked(self, stream: _WatchStream, error: EtcdError) -> None:
        """Break stream (its watches get WatchEnded) and forget it: the next watch()
        opens a new one."""
        stream.break_locked(error)
        if self._stream is stream:
            self._stream = None
        stream.call.cancel()

    def _canceller(self, stream: _WatchStream, watch: _Watch) -> Callable[[], None]:
        def cancel() -> None:
            with watch.lock:  # waits for a callback running on the stream's thread
                watch.done = True
            with self._lock:
                if stream.broken or watch.watch_id is None:
                    return
                if stream.active.pop(watch.watch_id, None) is None:
                    return
                stream.requests.put(
                    etcdrpc.WatchRequest(
                        cancel_request=etcdrpc.WatchCancelRequest(watch_id=watch.watch_id)
                    )
                )

        return cancel

    def _open_stream(
        self, deadline: float, failures: dict[int, str], refused: dict[int, str]
    ) -> _WatchStream:
        with self._stream_lock:
            with self._lock:
                if self._closed:
                    raise EtcdError(grpc.StatusCode.CANCELLED, "etcd client closed")
                if self._stream is not None and not self._stream.broken:
                    return self._stream
                order = self._order_locked(refused)
            for position, member in enumerate(order):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                attempt = min(remaining, max(_MIN_ATTEMPT, remaining / (len(order) - position)))
                try:
                    metadata = self._metadata(member, attempt)
                except grpc.RpcError as exc:
                    code, details = _rpc_code(exc), _rpc_details(exc)
                    problem = self._tls_failure(code, details)
                    if problem is not None:
                        refused[member.index] = failures[member.index] = problem
                        with self._lock:
                            self._mark_failed_locked(member)
                        continue
                    if not _is_retryable(code, details):
                        raise self._rpc_error(member, exc) from None
                    failures[member.index] = self._reason(code, details)
                    with self._lock:
                        self._mark_failed_locked(member)
                    continue
                stream = _WatchStream(member, metadata)
                with self._lock:
                    if self._closed:
                        stream.break_locked(EtcdError(grpc.StatusCode.CANCELLED, "closed"), True)
                        stream.call.cancel()
                        raise EtcdError(grpc.StatusCode.CANCELLED, "etcd client closed")
                    self._stream = stream
                    stream.start(self._lock)
                return stream
            if len(refused) == len(self._members):
                raise self._refused(refused)
            raise self._unavailable(failures)

    # -- lifecycle

    def close(self) -> None:
        """End the watch stream (no callbacks) and close every channel, silently."""
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.break_locked(
                    WatchStreamBroken(grpc.StatusCode.CANCELLED, "etcd client closed"), silent=True
                )
        if stream is not None:
            stream.call.cancel()
            if threading.current_thread() is not stream.thread and stream.thread.is_alive():
                stream.thread.join(timeout=5)
        for member in self._members:
            member.close()

    def __enter__(self) -> EtcdTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- failover machinery

    def _order_locked(self, refused: Mapping[int, str] | None = None) -> list[_Member]:
        """Healthy members from the preferred one on, then failed ones (oldest failure
        first); never those that refused this call for good."""
        now = time.monotonic()
        count = len(self._members)
        rotated = [self._members[(self._preferred + i) % count] for i in range(count)]
        if refused:
            rotated = [m for m in rotated if m.index not in refused]
        healthy = [m for m in rotated if m.failed_until <= now]
        failed = sorted((m for m in rotated if m.failed_until > now), key=lambda m: m.failed_until)
        return healthy + failed

    @staticmethod
    def _count_locked(member: _Member, *, failed: bool) -> None:
        member.requests += 1
        member.errors += failed

    def stats(self) -> tuple[EndpointStats, ...]:
        """Calls sent to each endpoint so far, and the failed ones (for metrics)."""
        with self._lock:
            return tuple(EndpointStats(m.url, m.requests, m.errors) for m in self._members)

    def _mark_failed_locked(self, member: _Member) -> None:
        member.failed_until = time.monotonic() + _FAILED_FOR
        if self._preferred == member.index:
            self._preferred = (member.index + 1) % len(self._members)
        stream = self._stream
        # Our watches sit on a member that just failed a call: move them now (another
        # endpoint exists) rather than wait for keepalive to notice a hung member.
        if (
            stream is not None
            and stream.member is member
            and len(self._members) > 1
            and not stream.broken
        ):
            self._drop_stream_locked(
                stream,
                WatchStreamBroken(
                    grpc.StatusCode.UNAVAILABLE, "watch stream's endpoint failed", member.url
                ),
            )

    def _metadata(self, member: _Member, timeout: float) -> Metadata:
        """Connect and, with auth, get this member's token (raises grpc.RpcError)."""
        member.connect()
        if self._user is None:
            return ()
        token = member.token
        if token is None:
            response = member.auth.Authenticate(
                etcdrpc.AuthenticateRequest(name=self._user, password=self._password),
                timeout=timeout,
            )
            token = member.token = str(response.token)
        return (("token", token),)

    def _unary(
        self, operation: Callable[[_Attempt], R], keys: Callable[[], str] | None = None
    ) -> R:
        """Run operation with failover (see the module docstring); keys describes the
        keys it touches, for a permission-denied message."""
        deadline = time.monotonic() + self.timeout
        failures: dict[int, str] = {}
        refused: dict[int, str] = {}
        pause = _ROUND_PAUSE[0]
        leaderless_since: float | None = None
        while True:
            with self._lock:
                if self._closed:
                    raise EtcdError(grpc.StatusCode.CANCELLED, "etcd client closed")
                order = self._order_locked(refused)
            for position, member in enumerate(order):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                attempt = min(remaining, max(_MIN_ATTEMPT, remaining / (len(order) - position)))
                try:
                    result = self._attempt(member, operation, time.monotonic() + attempt)
                except grpc.RpcError as exc:
                    code, details = _rpc_code(exc), _rpc_details(exc)
                    problem = self._tls_failure(code, details)
                    if problem is not None:
                        refused[member.index] = failures[member.index] = problem
                        with self._lock:
                            self._count_locked(member, failed=True)
                            self._mark_failed_locked(member)
                        continue
                    if not _is_retryable(code, details):
                        with self._lock:
                            self._count_locked(member, failed=True)
                        raise self._rpc_error(member, exc, keys) from None
                    failures[member.index] = self._reason(code, details)
                    with self._lock:
                        self._count_locked(member, failed=True)
                        self._mark_failed_locked(member)
                    continue
                except EtcdError:
                    with self._lock:  # an error in an answer (a lease etcd would not grant)
                        self._count_locked(member, failed=True)
                    raise
                with self._lock:
                    self._count_locked(member, failed=False)
                    self._preferred = member.index
                    member.failed_until = 0.0
                return result
            if len(refused) == len(self._members):
                raise self._refused(refused)
            now = time.monotonic()
            if _NO_LEADER in failures.values():
                leaderless_since = leaderless_since or now
                if now - leaderless_since >= _NO_LEADER_WINDOW:
                    raise self._no_quorum(failures)
            else:
                leaderless_since = None
            remaining = deadline - now
            if remaining <= 0:
                raise self._unavailable(failures)
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _ROUND_PAUSE[1])

    def _attempt(
        self,
        member: _Member,
        operation: Callable[[_Attempt], R],
        attempt_deadline: float,
        require_leader: bool = True,
    ) -> R:
        """One try on one member; re-authenticates once if etcd rejects the token."""
        for tries_left in (1, 0):
            timeout = max(0.001, attempt_deadline - time.monotonic())
            metadata = self._metadata(member, timeout)
            if require_leader:
                metadata = (*metadata, _REQUIRE_LEADER)
            timeout = max(0.001, attempt_deadline - time.monotonic())
            try:
                return operation(_Attempt(member, timeout, metadata))
            except grpc.RpcError as exc:
                if (
                    tries_left
                    and self._user is not None
                    and _is_token_error(_rpc_code(exc), _rpc_details(exc))
                ):
                    member.token = None
                    continue
                raise
        raise AssertionError("unreachable")

    @property
    def identity(self) -> str | None:
        """The etcd user we act as: --username, else our client certificate's CN."""
        if self._user is not None:
            return self._user
        return self._diagnosis.identity if self._diagnosis is not None else None

    def _reason(self, code: grpc.StatusCode, details: str) -> str:
        """_short_reason, with a hint when the scheme may be wrong: an endpoint that
        closes the connection at once may speak the other protocol (or be going down,
        so this is retried like any refused connection)."""
        reason = _short_reason(code, details)
        if "Socket closed" not in details:
            return reason
        if self._secure and reason == "TLS handshake failed":
            return "TLS handshake failed: the endpoint closed the connection, no TLS there?"
        if not self._secure and reason == "connection closed":
            return "connection closed: does etcd want TLS? https:// and --ca-file"
        return reason

    def _tls_failure(self, code: grpc.StatusCode, details: str) -> str | None:
        """The reason to give up on an endpoint for this call (a certificate problem)."""
        if not self._secure:
            return None
        problem = _tls_problem(code, details)
        return None if problem is None else self._tls_reason(*problem)

    def _tls_reason(self, problem: TlsProblem, detail: str) -> str:
        if self._diagnosis is not None:
            text = self._diagnosis.explain(problem, detail)
        else:
            text = _DEFAULT_EXPLANATIONS[problem].format(detail=detail)
        return f"TLS handshake failed: {text}"

    def _rpc_error(
        self, member: _Member, exc: grpc.RpcError, keys: Callable[[], str] | None = None
    ) -> EtcdError:
        code, details = _rpc_code(exc), _rpc_details(exc)
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return EtcdCompacted(0, member.url)
        message = _etcd_message(details)
        if "database space exceeded" in message:
            return EtcdNoSpace(member.url)
        if code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in message:
            return EtcdPermissionDenied(member.url, self.identity, keys() if keys else "its keys")
        if "invalid user ID or password" in message:
            return EtcdAuthFailed(
                code,
                f"authentication failed for user {self._user}: wrong user name or password",
                member.url,
            )
        if "password was given for no password user" in message:
            return EtcdAuthFailed(
                code,
                f"user {self._user} has no password: it authenticates with its client "
                "certificate alone (leave out --username and --password)",
                member.url,
            )
        if "user name is empty" in message:
            return EtcdAuthFailed(
                code,
                "etcd requires authentication: a client certificate (--cert-file, "
                "--key-file) or --username and --password",
                member.url,
            )
        return EtcdError(code, message or code.name.lower(), member.url)

    def _refused(self, refused: Mapping[int, str]) -> EtcdRefused:
        return EtcdRefused(
            [EndpointFailure(m.url, refused[m.index]) for m in self._members if m.index in refused],
            self.timeout,
        )

    def _no_quorum(self, failures: dict[int, str]) -> EtcdNoQuorum:
        return EtcdNoQuorum(
            [EndpointFailure(m.url, failures.get(m.index, "not tried")) for m in self._members],
            self.timeout,
        )

    def _unavailable(self, failures: dict[int, str]) -> EtcdUnavailable:
        return EtcdUnavailable(
            [EndpointFailure(m.url, failures.get(m.index, "not tried")) for m in self._members],
            self.timeout,
        )


__all__ = [
    "CHANNEL_OPTIONS",
    "Access",
    "Alarm",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteOp",
    "DeleteResult",
    "Endpoint",
    "EndpointFailure",
    "EndpointStats",
    "EtcdAuthFailed",
    "EtcdCompacted",
    "EtcdError",
    "EtcdNoQuorum",
    "EtcdNoSpace",
    "EtcdPermissionDenied",
    "EtcdRefused",
    "EtcdTransport",
    "EtcdUnavailable",
    "EventKind",
    "GetOp",
    "KeyPermission",
    "KeyValue",
    "Lease",
    "MemberStatus",
    "PutOp",
    "PutResult",
    "RangeResult",
    "TlsCredentials",
    "TlsDiagnosis",
    "TlsProblem",
    "TxnOp",
    "TxnResult",
    "WatchCallback",
    "WatchEnded",
    "WatchEvent",
    "WatchResponse",
    "WatchStreamBroken",
    "prefix_range_end",
]
