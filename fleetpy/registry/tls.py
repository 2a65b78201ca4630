"""TLS material for the etcd connection, checked before anything connects.

gRPC's C core aborts the whole process (SIGABRT) on a client certificate without its
key, and logs several lines for a bad CA before failing; so the combination is checked
here and every PEM file is parsed with Python's ssl module first, each problem one line.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from ..errors import FileError, RegistryError
from ..files import display_path, read_regular_file
from .transport import TlsProblem

MAX_PEM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes for grpc.ssl_channel_credentials; a None root means gRPC's default CAs.

    Also the transport's TlsDiagnosis: what a failed handshake means, in terms of the
    files the user gave (ca_name, cert_name: their paths as shown)."""

    root_certificates: bytes | None
    certificate_chain: bytes | None
    private_key: bytes | None
    ca_name: str | None = None
    cert_name: str | None = None

    @property
    def identity(self) -> str | None:
        """The client certificate's CN: the etcd user it acts as (without --username)."""
        cert = _certificate(self.certificate_chain)
        if cert is None:
            return None
        from cryptography.x509.oid import NameOID

        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None

    def explain(self, problem: TlsProblem, detail: str) -> str:
        if problem is TlsProblem.SERVER_UNTRUSTED:
            if "expired" in detail:
                return f"etcd's certificate has expired ({detail})"
            if self.ca_name:
                return f"etcd's certificate is not signed by --ca-file {self.ca_name} ({detail})"
            return (
                f"etcd's certificate is not signed by a CA this machine trusts ({detail}); "
                "give --ca-file"
            )
        if problem is TlsProblem.SERVER_NAME:
            return "etcd's certificate is not for the address in --endpoint"
        if problem is TlsProblem.NOT_TLS:
            return "the endpoint does not speak TLS (http:// instead of https://?)"
        return self._refused()

    def _refused(self) -> str:
        """etcd refused our client certificate (or its absence): say why if we can."""
        if self.certificate_chain is None:
            return "etcd requires a client certificate: give --cert-file and --key-file"
        given = f"etcd refused the client certificate --cert-file {self.cert_name or ''}".rstrip()
        cert = _certificate(self.certificate_chain)
        if cert is None:
            return given
        import datetime

        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID

        now = datetime.datetime.now(datetime.UTC)
        if cert.not_valid_after_utc < now:
            return f"{given}: it expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        if cert.not_valid_before_utc > now:
            return f"{given}: it is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
                return f"{given}: it is not a client certificate (no clientAuth usage)"
        except x509.ExtensionNotFound:
            pass
        ca = _certificate(self.root_certificates)
        if ca is not None and cert.issuer != ca.subject:
            return (
                f"{given}: it is issued by {cert.issuer.rfc4514_string()}, a CA etcd does not trust"
            )
        return f"{given}: not signed by a CA etcd trusts"


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey()


def _read(path: str, what: str) -> bytes:
    try:
        return read_regular_file(path, limit=MAX_PEM_BYTES, what=what)
    except FileError as exc:
        raise RegistryError(str(exc)) from None


def load_tls(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> TlsMaterial | None:
    """The checked material, or None when no TLS option was given."""
    if bool(cert_file) != bool(key_file):
        given, missing = (
            ("--cert-file", "--key-file") if cert_file else ("--key-file", "--cert-file")
        )
        raise RegistryError(
            f"{given} needs {missing} too: a client certificate and its key go together"
        )
    if not ca_file and not cert_file:
        return None
    ca_pem = None
    if ca_file:
        ca_pem = _read(ca_file, "CA file")
        if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise RegistryError(f"--ca-file {display_path(ca_file)} holds no PEM certificate")
        try:
            ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:
            raise RegistryError(
                f"--ca-file {display_path(ca_file)} is not a valid PEM certificate ({_reason(exc)})"
            ) from None
    cert_pem = key_pem = None
    if cert_file and key_file:
        cert_pem = _read(cert_file, "certificate file")
        key_pem = _read(key_file, "key file")
        cert_name, key_name = display_path(cert_file), display_path(key_file)
        if b"PRIVATE KEY-----" in cert_pem and b"-----BEGIN CERTIFICATE-----" in key_pem:
            raise RegistryError(
                f"--cert-file {cert_name} holds a private key and --key-file "
                f"{key_name} a certificate: swapped?"
            )
        if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
            raise RegistryError(f"--cert-file {cert_name} holds no PEM certificate")
        if b"PRIVATE KEY-----" not in key_pem:
            raise RegistryError(f"--key-file {key_name} holds no PEM private key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_cert_chain(cert_file, key_file, password=_no_password)
        except _EncryptedKey:
            raise RegistryError(
                f"--key-file {key_name} is encrypted; fleetpy needs the key without a passphrase"
            ) from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                raise RegistryError(
                    f"--cert-file {cert_name} and --key-file {key_name} do not "
                    "belong together (the key does not match the "
                    "certificate)"
                ) from None
            raise RegistryError(
                f"cannot use --cert-file {cert_name} with --key-file {key_name}: {_reason(exc)}"
            ) from None
    return TlsMaterial(
        ca_pem,
        cert_pem,
        key_pem,
        display_path(ca_file) if ca_file else None,
        display_path(cert_file) if cert_file else None,
    )


def _certificate(pem: bytes | None) -> Any:
    """The first certificate in PEM (a cryptography x509.Certificate), None if unreadable.
    Imported here: only messages need it, and the CLI starts faster without. A host
    image without cryptography still connects; its messages just say less."""
    if not pem:
        return None
    try:
        from cryptography import x509
    except ImportError:
        return None
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return " ".join(str(exc).split()) or type(exc).__name__
