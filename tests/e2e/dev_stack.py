"""Start `quantized dev` as a real subprocess, the way a user does, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from quantized_runtime.tls import server_name

STARTUP_TIMEOUT_SECONDS = 120


def isolated_environment(state_home: Path) -> dict[str, str]:
    """The caller's environment minus our settings, with a private state dir."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUANTIZED_")}
    env["XDG_STATE_HOME"] = str(state_home)
    return env


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def service_pid(parent: int, service: str) -> int | None:
    """The pid of `quantized serve SERVICE` among PARENT's children, if one is running."""
    for pid in child_pids(parent):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if argv[-3:-1] == ["serve", service] and pid_alive(pid):
            return pid
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class DevStack:
    process: subprocess.Popen
    env: dict[str, str]
    base_url: str
    api_key: str
    state: dict
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    pumps: list[threading.Thread] = field(default_factory=list)

    def grpc_channel(self, state_key: str) -> grpc.Channel:
        """A synchronous channel to a service in the state file: plaintext to the
        edge's public port, mutual TLS with the operator's certificate to the others."""
        address = self.state[state_key]
        if state_key == "edge_grpc_addr":
            return grpc.insecure_channel(address)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(self.state["ca_file"]).read_bytes(),
            private_key=Path(self.state["operator_key_file"]).read_bytes(),
            certificate_chain=Path(self.state["operator_cert_file"]).read_bytes())
        service = state_key.removesuffix("_addr")
        return grpc.secure_channel(address, credentials,
                                   options=[("grpc.ssl_target_name_override", server_name(service))])

    def admin(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "quantized_cli", "admin", *args],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait()

    def wait_for_line(self, text: str, timeout: float = 60) -> str:
        """The first line of stderr containing TEXT, waiting for it up to TIMEOUT seconds."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            for line in list(self.stderr_lines):
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} within {timeout:.0f} s:\n" + "\n".join(self.stderr_lines))

    def wait(self) -> int:
        code = self.process.wait(timeout=60)
        for pump in self.pumps:
            pump.join(10)
        self.process.stdout.close()
        self.process.stderr.close()
        return code


def _pump(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line.rstrip("\n"))


def start_dev_stack(tmp_path: Path, *options: str, settings: dict[str, str] | None = None) -> DevStack:
    """`settings` are QUANTIZED_* variables every child inherits."""
    env = {**isolated_environment(tmp_path / "state"), **(settings or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "quantized_cli", "dev", "--port", "0", "--data-dir", str(tmp_path / "data"),
         *options],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stdout_lines: list[str] = []
    stderr_lines: list[str] = []
    pumps = [threading.Thread(target=_pump, args=(process.stdout, stdout_lines), daemon=True),
             threading.Thread(target=_pump, args=(process.stderr, stderr_lines), daemon=True)]
    for pump in pumps:
        pump.start()
    give_up = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    values: dict[str, str] = {}
    while time.monotonic() < give_up and "QUANTIZED_API_KEY" not in values:
        if process.poll() is not None:
            time.sleep(0.2)
            raise AssertionError("quantized dev exited during start:\n" + "\n".join(stderr_lines))
        for line in list(stdout_lines):
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                values[key] = value
        time.sleep(0.05)
    if "QUANTIZED_API_KEY" not in values:
        process.kill()
        raise AssertionError("quantized dev printed no API key:\n" + "\n".join(stderr_lines))
    state_file = tmp_path / "state" / "quantized" / "dev-stack.json"
    return DevStack(process, env, values["QUANTIZED_BASE_URL"], values["QUANTIZED_API_KEY"],
                    json.loads(state_file.read_text()), stdout_lines, stderr_lines, pumps)
