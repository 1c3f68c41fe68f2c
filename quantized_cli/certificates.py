"""A throwaway certificate authority for `quantized dev` (and the tests): one
certificate per service and one for the operator, each naming its identity.

A service's certificate carries its identity as a URI SAN (`spiffe://quantized/edge`)
and its server name as a DNS SAN (`edge.quantized.internal`, what callers verify);
the operator's carries `spiffe://quantized/operator/NAME`. The CA's private key
is never written: a new dev stack makes a new CA.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quantized_runtime.clock import utc_now
from quantized_runtime.tls import TlsFiles, server_name, spiffe_id

SERVICE_NAMES = ("catalog", "billing", "provider", "edge")
DEV_OPERATOR = "operator/dev"
# A dev stack makes new certificates at each start; this only has to outlast one run.
DEV_VALIDITY = timedelta(days=90)
# Backdated a little, so a peer whose clock is slightly behind accepts a fresh certificate.
CLOCK_SKEW = timedelta(minutes=5)


def write_private(path: Path, data: bytes) -> None:
    """Write DATA to PATH readable by its owner only (0600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "quantized dev CA",
               valid_for: timedelta = DEV_VALIDITY) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = utc_now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, identity: str, *, serves: bool, not_before: datetime | None = None,
              not_after: datetime | None = None) -> IssuedCertificate:
        """A certificate for IDENTITY (`edge`, `operator/dev`); a service that `serves`
        also gets its server name, and may act as a TLS server as well as a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = utc_now()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(identity))]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if serves:
            names.append(x509.DNSName(server_name(identity)))
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - CLOCK_SKEW)
            .not_valid_after(not_after or self.certificate.not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))

    def write(self, directory: Path, identity: str, *, serves: bool, **validity: datetime) -> TlsFiles:
        """Issue a certificate for IDENTITY and write it, its key and this CA's
        certificate into DIRECTORY (0600 each)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        issued = self.issue(identity, serves=serves, **validity)
        stem = identity.replace("/", "-")
        files = TlsFiles(cert_file=directory / f"{stem}.crt", key_file=directory / f"{stem}.key",
                         ca_file=directory / "ca.crt")
        write_private(files.ca_file, self.certificate_pem)
        write_private(files.cert_file, issued.certificate_pem)
        write_private(files.key_file, issued.key_pem)
        return files


def issue_dev_certificates(directory: Path,
                           authority: CertificateAuthority | None = None) -> dict[str, TlsFiles]:
    """One certificate per service and one for the operator (key `operator`), from
    AUTHORITY or a new CA."""
    authority = authority or CertificateAuthority.create()
    files = {name: authority.write(directory, name, serves=True) for name in SERVICE_NAMES}
    files["operator"] = authority.write(directory, DEV_OPERATOR, serves=False)
    return files


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "certificates", help="write a throwaway CA's certificates for each service and an operator "
                             "into a directory (docker compose; use your own CA in production)")
    parser.add_argument("directory", type=Path)
    parser.set_defaults(handler=_write_certificates)


def _write_certificates(args: argparse.Namespace) -> int:
    files = issue_dev_certificates(args.directory)
    for name, written in files.items():
        print(f"{name}: {written.cert_file} {written.key_file}")
    print(f"CA: {files['operator'].ca_file} (its private key was not kept)")
    return 0
