"""A small PKI for a secure local etcd: one CA, server and peer certificates per member,
client certificates whose CN is the etcd user they act as.

etcd 3.4 with --client-cert-auth takes the user from the client certificate's CN when
the request carries no token, so a client certificate alone is a complete credential.
Keys are ECDSA P-256: instant to make (RSA 2048 takes ~0.1 s each, and a cluster makes
one per host), and both etcd (Go) and gRPC (BoringSSL) accept them.

Private keys are written mode 0600; nothing here reads settings or the environment.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 365
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate clocks a little apart


class Usage(enum.Enum):
    """What a certificate is for (its extended key usage)."""

    CLIENT = "client"  # a client of etcd: CN is its etcd user
    # etcd's client-facing server certificate is also the client certificate of its own
    # gRPC gateway (it dials itself), so it carries both usages; so do peer certificates
    # (each member is server and client of the others).
    SERVER = "server"
    PEER = "peer"


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate (what clients and servers trust) and its key."""

    cert_file: Path
    key_file: Path

    @classmethod
    def create(
        cls, directory: Path, name: str = "fleetpy-ca", days: int = DEFAULT_DAYS
    ) -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{name}.pem", directory / f"{name}-key.pem"
        _write_pair(cert_file, key_file, cert, key)
        return cls(cert_file, key_file)

    def issue(
        self,
        directory: Path,
        name: str,
        usage: Usage,
        *,
        common_name: str | None = None,
        addresses: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        days: int = DEFAULT_DAYS,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Credential:
        """A certificate signed by this CA, written as DIRECTORY/NAME.pem and NAME-key.pem.

        common_name: the etcd user of a client certificate (default: name). addresses and
        dns_names: the subject alternative names a server is reached at. not_before and
        not_after override the validity (tests make expired certificates with them).
        """
        ca_cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_file} is not an EC key made by fleetpy's PKI")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = {
            Usage.CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
            Usage.SERVER: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            Usage.PEER: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        }[usage]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - _BACKDATE)
            .not_valid_after(not_after or now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses)
        ]
        names += [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        credential = Credential(directory / f"{name}.pem", directory / f"{name}-key.pem")
        _write_pair(credential.cert_file, credential.key_file, cert, key)
        return credential


def _write_pair(
    cert_file: Path, key_file: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600, never readable by others even for a moment.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(key_file, 0o600)  # an existing file keeps its mode through O_CREAT


__all__ = ["DEFAULT_DAYS", "Authority", "Credential", "Usage"]
