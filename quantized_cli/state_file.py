"""The per-user record of a running dev stack, so `quantized admin` finds it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quantized_runtime.tls import TlsFiles


def state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "quantized" / "dev-stack.json"


@dataclass(frozen=True)
class DevStackState:
    pid: int
    base_url: str
    edge_grpc_addr: str
    catalog_addr: str
    billing_addr: str
    provider_addr: str
    admin_token: str
    data_dir: str
    # The operator's certificate, key and the dev CA, for `quantized admin`.
    operator_cert_file: str
    operator_key_file: str
    ca_file: str
    # Each service's Prometheus /metrics address (host:port), by service name.
    metrics_addrs: dict[str, str] = field(default_factory=dict)

    def operator_tls(self) -> TlsFiles:
        return TlsFiles(Path(self.operator_cert_file), Path(self.operator_key_file), Path(self.ca_file))


def write_state(state: DevStackState) -> Path:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start: the admin token must never be readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(state), handle, indent=2)
    os.chmod(path, 0o600)
    return path


def read_state() -> DevStackState | None:
    """The state of a dev stack that is still running, or None."""
    path = state_path()
    try:
        state = DevStackState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return state if _alive(state.pid) else None


def remove_state(pid: int) -> None:
    path = state_path()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
