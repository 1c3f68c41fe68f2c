"""Mutual TLS between the services (docs/security.md).

Every internal server requires a client certificate signed by the CA in
QUANTIZED_TLS_CA_FILE; every caller presents its own. Identities live in the
certificates: a URI SAN `spiffe://quantized/NAME` says who the holder is (`edge`,
`billing`, `operator/alice`), and a service's DNS SAN `NAME.quantized.internal`
is the name its callers verify, whatever address they dial.

A server re-reads its three files when they change, at the next new connection,
so a rotated certificate or CA is used without a restart. A channel keeps the
certificate it was opened with for all its connections (grpc's channel
credentials are fixed): a caller picks up a rotated client certificate when it
restarts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("quantized.tls")

TRUST_DOMAIN = "quantized"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
SERVER_NAME_SUFFIX = f".{TRUST_DOMAIN}.internal"
# Shared by every service and the CLI, in this order: certificate, key, CA.
TLS_VARIABLES = ("QUANTIZED_TLS_CERT_FILE", "QUANTIZED_TLS_KEY_FILE", "QUANTIZED_TLS_CA_FILE")


def spiffe_id(identity: str) -> str:
    return SPIFFE_PREFIX + identity


def server_name(service: str) -> str:
    """The DNS name a service's certificate carries and its callers check."""
    return service + SERVER_NAME_SUFFIX


@dataclass(frozen=True)
class TlsMaterial:
    certificate_chain: bytes
    private_key: bytes
    root_certificates: bytes


@dataclass(frozen=True)
class TlsFiles:
    """This process's certificate and key, and the CA that signs every peer's."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def read(self) -> TlsMaterial:
        return TlsMaterial(self.cert_file.read_bytes(), self.key_file.read_bytes(),
                           self.ca_file.read_bytes())

    def version(self) -> tuple[tuple[int, int, int], ...]:
        """Changes whenever one of the files is replaced or rewritten (cheap: three stats)."""
        stamps = []
        for path in (self.cert_file, self.key_file, self.ca_file):
            status = os.stat(path)
            stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(stamps)


def tls_files_from_environment() -> TlsFiles | None:
    """The files named by QUANTIZED_TLS_CERT_FILE, _KEY_FILE and _CA_FILE, when all
    three are set (the CLI's way; services read them through their settings)."""
    paths = [os.environ.get(name, "").strip() for name in TLS_VARIABLES]
    if not all(paths):
        return None
    return TlsFiles(*(Path(path) for path in paths))


def check_material(material: TlsMaterial) -> None:
    """Raise ValueError unless the files hold a certificate, its own key and a CA."""
    try:
        certificate = x509.load_pem_x509_certificate(material.certificate_chain)
        key = serialization.load_pem_private_key(material.private_key, password=None)
        x509.load_pem_x509_certificates(material.root_certificates)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable certificate, key or CA: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (certificate.public_key().public_bytes(serialization.Encoding.DER, public)
            != key.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ValueError("the private key does not belong to the certificate")


def _server_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.certificate_chain)], material.root_certificates)


class _ReloadingServerConfiguration:
    """gRPC calls this before each new connection's handshake; it answers a new
    configuration when the files changed, else None (keep the current one)."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._version = files.version()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            version = self._files.version()
            if version == self._version:
                return None
            material = self._files.read()
            check_material(material)
        except (OSError, ValueError) as exc:
            # Half-written during a rotation, say: keep serving with the previous
            # files and look again at the next connection.
            log.warning("TLS files not reloaded", extra={"fields": {"reason": str(exc)}})
            return None
        self._version = version
        log.info("TLS files reloaded", extra={"fields": {"cert_file": str(self._files.cert_file)}})
        return _server_configuration(material)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials requiring a client certificate from the CA, re-read on change."""
    fetcher = _ReloadingServerConfiguration(files)
    material = files.read()
    check_material(material)
    return grpc.dynamic_ssl_server_credentials(_server_configuration(material), fetcher,
                                               require_client_authentication=True)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    material = files.read()
    return grpc.ssl_channel_credentials(root_certificates=material.root_certificates,
                                        private_key=material.private_key,
                                        certificate_chain=material.certificate_chain)


def caller_identity(context: Any) -> str | None:
    """The identity in the verified client certificate of this call (`edge`,
    `operator/alice`), or None when there is none in this trust domain."""
    for value in context.auth_context().get("peer_uri", ()):
        text = value.decode() if isinstance(value, bytes) else str(value)
        if text.startswith(SPIFFE_PREFIX) and len(text) > len(SPIFFE_PREFIX):
            return text.removeprefix(SPIFFE_PREFIX)
    return None
