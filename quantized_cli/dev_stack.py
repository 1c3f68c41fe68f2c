"""`quantized dev`: the four services as child processes on loopback, embedded defaults.

Each child runs `python -m quantized_cli serve NAME`, the same command a container
runs. Logs go to DATA_DIR/logs/NAME.log. Once all are healthy, a development
account is created and the base URL and its API key are printed; the addresses
and the admin token are recorded in the per-user state file for `quantized admin`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_cli.health import wait_until_serving
from quantized_cli.serve import PARENT_PID_ENV
from quantized_cli.state_file import DevStackState, read_state, remove_state, write_state, state_path
from quantized_runtime import defaults
from quantized_runtime.channels import open_channel
from quantized_runtime.client import call

DEV_ACCOUNT_CREDITS = 100_000_000
STARTUP_DEADLINE_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dev", help="run the whole stack locally with embedded defaults")
    parser.add_argument("--port", type=int, default=defaults.EDGE_HTTP_PORT,
                        help="HTTP port of the edge (0 picks a free one)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where SQLite files and logs live (default: the user data dir)")
    parser.add_argument("--credits", type=int, default=DEV_ACCOUNT_CREDITS,
                        help="micro-credits given to the development account")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    running = read_state()
    if running is not None:
        print(f"quantized dev: a dev stack is already running (pid {running.pid}, "
              f"{running.base_url}); stop it first", file=sys.stderr)
        return 1
    data_dir = (args.data_dir or defaults.default_data_dir() / "dev").resolve()
    return asyncio.run(DevStack(data_dir, args.port, args.credits).run())


@dataclass
class Child:
    name: str
    address: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_or_free(port: int) -> int:
    """The documented default port when it is free, else any free one (recorded in the state file)."""
    if port == 0:
        return _free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return _free_port()
    return port


def _default_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _admin_token(data_dir: Path) -> str:
    """One admin token per data dir, kept 0600 so restarts keep working with old scripts."""
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


class DevStack:
    def __init__(self, data_dir: Path, http_port: int, credits: int) -> None:
        self.data_dir = data_dir
        self.http_port = _port_or_free(http_port)
        self.credits = credits
        self.stop_requested = asyncio.Event()
        logs = data_dir / "logs"
        self.children = {
            name: Child(name, f"127.0.0.1:{_port_or_free(_default_port(addr))}", logs / f"{name}.log")
            for name, addr in (
                ("catalog", defaults.CATALOG_ADDR),
                ("billing", defaults.BILLING_ADDR),
                ("provider", defaults.PROVIDER_ADDR),
                ("edge", defaults.EDGE_GRPC_ADDR),
            )
        }

    def _environment(self, admin_token: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "QUANTIZED_DATA_DIR": str(self.data_dir),
            "QUANTIZED_ADMIN_TOKEN": admin_token,
            "QUANTIZED_CATALOG_ENABLE_SANDBOX": "true",
            "QUANTIZED_CATALOG_LISTEN": self.children["catalog"].address,
            "QUANTIZED_BILLING_LISTEN": self.children["billing"].address,
            "QUANTIZED_PROVIDER_LISTEN": self.children["provider"].address,
            "QUANTIZED_EDGE_GRPC_LISTEN": self.children["edge"].address,
            "QUANTIZED_EDGE_HOST": "127.0.0.1",
            "QUANTIZED_EDGE_PORT": str(self.http_port),
            "QUANTIZED_CATALOG_ADDR": self.children["catalog"].address,
            "QUANTIZED_BILLING_ADDR": self.children["billing"].address,
            "QUANTIZED_PROVIDER_ADDR": self.children["provider"].address,
            PARENT_PID_ENV: str(os.getpid()),
        })
        return env

    async def _spawn(self, child: Child, env: dict[str, str]) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(child.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with the stack
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "quantized_cli", "serve", child.name,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,  # signals reach children only through us, in order
        )
        log.close()

    async def _wait_healthy(self, child: Child) -> None:
        process = child.process
        assert process is not None
        try:
            await wait_until_serving(child.address, STARTUP_DEADLINE_SECONDS,
                                     lambda: process.returncode is None)
        except RuntimeError as exc:
            raise RuntimeError(f"{child.name}: {exc}; see {child.log_path}\n{_tail(child.log_path)}") from None

    async def _create_dev_account(self, admin_token: str) -> str:
        channel = open_channel(self.children["billing"].address)
        try:
            stub = billing_pb2_grpc.BillingAdminServiceStub(channel)
            reply = await call(stub.CreateAccount,
                               billing_pb2.CreateAccountRequest(name="dev", credits_micro_credits=self.credits),
                               timeout=10, metadata=[("authorization", f"Bearer {admin_token}")])
        finally:
            await channel.close()
        return reply.api_key

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        admin_token = _admin_token(self.data_dir)
        env = self._environment(admin_token)
        try:
            backends = [self.children[name] for name in ("catalog", "billing", "provider")]
            for child in backends:
                await self._spawn(child, env)
            await asyncio.gather(*(self._wait_healthy(child) for child in backends))
            await self._spawn(self.children["edge"], env)
            await self._wait_healthy(self.children["edge"])
            api_key = await self._create_dev_account(admin_token)
        except Exception as exc:  # noqa: BLE001 - any start failure stops the whole stack
            print(f"quantized dev: start failed: {exc}", file=sys.stderr)
            await self._stop_children()
            return 1
        base_url = f"http://127.0.0.1:{self.http_port}/v1"
        write_state(DevStackState(
            pid=os.getpid(), base_url=base_url,
            edge_grpc_addr=self.children["edge"].address,
            catalog_addr=self.children["catalog"].address,
            billing_addr=self.children["billing"].address,
            provider_addr=self.children["provider"].address,
            admin_token=admin_token, data_dir=str(self.data_dir),
        ))
        print(f"QUANTIZED_BASE_URL={base_url}")
        print(f"QUANTIZED_API_KEY={api_key}")
        print(f"# logs: {self.data_dir / 'logs'}; admin state: {state_path()}; Ctrl-C stops the stack",
              flush=True)
        try:
            return await self._supervise()
        finally:
            remove_state(os.getpid())

    async def _supervise(self) -> int:
        waits = {asyncio.ensure_future(child.process.wait()): child
                 for child in self.children.values() if child.process is not None}
        stop = asyncio.ensure_future(self.stop_requested.wait())
        done, _ = await asyncio.wait({stop, *waits}, return_when=asyncio.FIRST_COMPLETED)
        exit_code = 0
        for task in done:
            if task in waits:
                child = waits[task]
                print(f"quantized dev: {child.name} exited unexpectedly with code {task.result()}; "
                      f"see {child.log_path}\n{_tail(child.log_path)}", file=sys.stderr, flush=True)
                exit_code = 1
        stop.cancel()
        await self._stop_children()
        for task in waits:
            task.cancel()
        print("quantized dev: stopped", file=sys.stderr, flush=True)
        return exit_code

    async def _stop_children(self) -> None:
        # The edge first, so no new request reaches a backend that is going away.
        for group in (["edge"], ["catalog", "billing", "provider"]):
            processes = [self.children[name].process for name in group]
            running = [p for p in processes if p is not None and p.returncode is None]
            for process in running:
                process.send_signal(signal.SIGTERM)
            for process in running:
                try:
                    await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS + 5)
                except TimeoutError:
                    process.kill()
                    await process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
