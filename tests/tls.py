"""A small certificate authority for tests: the dev stack's certificates (one per
service, one operator's) plus any odd certificate a test needs (another CA's, an
expired one, an unknown identity)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from quantized_cli.certificates import CertificateAuthority, issue_dev_certificates
from quantized_runtime.clock import utc_now
from quantized_runtime.tls import TlsFiles


def tls_fields(files: TlsFiles) -> dict[str, Any]:
    """A service's settings fields for these files (pass them to its settings class)."""
    return {"tls_cert_file": files.cert_file, "tls_key_file": files.key_file, "tls_ca_file": files.ca_file}


@dataclass
class Pki:
    directory: Path
    authority: CertificateAuthority
    files: dict[str, TlsFiles]
    _extra: int = field(default=0)

    @classmethod
    def create(cls, directory: Path) -> Pki:
        authority = CertificateAuthority.create()
        return cls(directory, authority, issue_dev_certificates(directory / "dev", authority))

    @property
    def operator(self) -> TlsFiles:
        return self.files["operator"]

    def _next_directory(self) -> Path:
        self._extra += 1
        return self.directory / f"extra-{self._extra}"

    def from_another_ca(self, identity: str = "edge") -> TlsFiles:
        """A certificate naming IDENTITY, signed by a CA no service trusts (it
        trusts its own CA, so it can still check the server)."""
        issued = CertificateAuthority.create("another CA").write(self._next_directory(), identity, serves=True)
        return TlsFiles(issued.cert_file, issued.key_file, self.files["edge"].ca_file)

    def expired(self, identity: str = "edge") -> TlsFiles:
        """A certificate of the right CA for IDENTITY that expired an hour ago."""
        return self.issue(identity, not_before=utc_now() - timedelta(days=2),
                          not_after=utc_now() - timedelta(hours=1))

    def issue(self, identity: str, **validity: Any) -> TlsFiles:
        """Another certificate from the services' own CA."""
        return self.authority.write(self._next_directory(), identity, serves=True, **validity)
