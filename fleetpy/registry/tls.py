"""TLS material for the etcd connection, checked before anything connects.

gRPC's C core aborts the whole process (SIGABRT) on a client certificate without its
key, and logs several lines for a bad CA before failing; so the combination is checked
here and every PEM file is parsed with Python's ssl module first, each problem one line.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from ..errors import FileError, RegistryError
from ..files import display_path, read_regular_file

MAX_PEM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes for grpc.ssl_channel_credentials; a None root means gRPC's default CAs."""

    root_certificates: bytes | None
    certificate_chain: bytes | None
    private_key: bytes | None


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
    return TlsMaterial(ca_pem, cert_pem, key_pem)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return " ".join(str(exc).split()) or type(exc).__name__
