"""`quantized dev`: the four services as child processes on loopback, embedded defaults.

Each child runs `python -m quantized_cli serve NAME`, the same command a container
runs. Logs go to DATA_DIR/logs/NAME.log. Once all are healthy, a development
account is created and the base URL and its API key are printed, with each
service's Prometheus /metrics address (on loopback, its default port when free);
the addresses, the admin token and the operator's certificate are recorded in
the per-user state file for `quantized admin`.

The internal plane runs mutual TLS as in production: each start makes a new
throwaway CA and one certificate per service and for the operator, in
DATA_DIR/tls (quantized_cli.certificates). Reflection is on, for grpcurl.

A child that dies is restarted on the same address and data dir, with a growing
delay, so one crash does not take the edge and the user's session down with it;
only a child that keeps crashing stops the stack, since restarting it again would
just hide the fault.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized_cli.certificates import issue_dev_certificates, write_private
from quantized_cli.health import wait_until_serving
from quantized_cli.serve import PARENT_PID_ENV
from quantized_cli.state_file import DevStackState, read_state, remove_state, write_state, state_path
from quantized_runtime import defaults
from quantized_runtime.channels import open_channel
from quantized_runtime.client import call
from quantized_runtime.tls import TLS_VARIABLES, TlsFiles

DEV_ACCOUNT_CREDITS = 100_000_000
STARTUP_DEADLINE_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
DEFAULT_CRASH_LIMIT = 5
DEFAULT_CRASH_WINDOW_SECONDS = 60.0
FIRST_RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 5.0
# A child healthy this long has recovered: its next crash is restarted after the first delay again.
STABLE_UPTIME_SECONDS = 30.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dev", help="run the whole stack locally with embedded defaults")
    parser.add_argument("--port", type=int, default=defaults.EDGE_HTTP_PORT,
                        help="HTTP port of the edge (0 picks a free one)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where SQLite files and logs live (default: the user data dir)")
    parser.add_argument("--credits", type=int, default=DEV_ACCOUNT_CREDITS,
                        help="micro-credits given to the development account")
    parser.add_argument("--crash-limit", type=_positive_int, default=DEFAULT_CRASH_LIMIT, metavar="N",
                        help="stop the stack when one service crashes this many times within --crash-window")
    parser.add_argument("--crash-window", type=_positive_seconds, default=DEFAULT_CRASH_WINDOW_SECONDS,
                        metavar="SECONDS", help="the window --crash-limit counts crashes in")
    parser.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def run(args: argparse.Namespace) -> int:
    running = read_state()
    if running is not None:
        print(f"quantized dev: a dev stack is already running (pid {running.pid}, "
              f"{running.base_url}); stop it first", file=sys.stderr)
        return 1
    data_dir = (args.data_dir or defaults.default_data_dir() / "dev").resolve()
    crash_policy = CrashPolicy(args.crash_limit, args.crash_window)
    return asyncio.run(DevStack(data_dir, args.port, args.credits, crash_policy).run())


@dataclass(frozen=True)
class CrashPolicy:
    limit: int
    window_seconds: float


@dataclass
class Child:
    name: str
    address: str
    metrics_address: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    healthy_since: float | None = None  # event-loop time of the last time it became healthy
    restart_delay: float = FIRST_RESTART_DELAY_SECONDS
    crash_times: deque[float] = field(default_factory=deque)

    def record_crash(self, now: float, window_seconds: float) -> int:
        """Crashes within the window ending now, this one included."""
        self.crash_times.append(now)
        while self.crash_times[0] <= now - window_seconds:
            self.crash_times.popleft()
        return len(self.crash_times)

    def next_restart_delay(self, now: float) -> float:
        if self.healthy_since is not None and now - self.healthy_since >= STABLE_UPTIME_SECONDS:
            self.restart_delay = FIRST_RESTART_DELAY_SECONDS
        delay = self.restart_delay
        self.restart_delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)
        return delay


def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


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
    write_private(path, token.encode())
    return token


def _tls_environment(files: TlsFiles) -> dict[str, str]:
    return dict(zip(TLS_VARIABLES, (str(files.cert_file), str(files.key_file), str(files.ca_file)),
                    strict=True))


class DevStack:
    def __init__(self, data_dir: Path, http_port: int, credits: int, crash_policy: CrashPolicy) -> None:
        self.data_dir = data_dir
        self.http_port = _port_or_free(http_port)
        self.credits = credits
        self.crash_policy = crash_policy
        self.stop_requested = asyncio.Event()
        self.certificates: dict[str, TlsFiles] = {}
        logs = data_dir / "logs"
        self.children = {
            name: Child(name, f"127.0.0.1:{_port_or_free(_default_port(addr))}",
                        f"127.0.0.1:{_port_or_free(_default_port(metrics_addr))}", logs / f"{name}.log")
            for name, addr, metrics_addr in (
                ("catalog", defaults.CATALOG_ADDR, defaults.CATALOG_METRICS_ADDR),
                ("billing", defaults.BILLING_ADDR, defaults.BILLING_METRICS_ADDR),
                ("provider", defaults.PROVIDER_ADDR, defaults.PROVIDER_METRICS_ADDR),
                ("edge", defaults.EDGE_GRPC_ADDR, defaults.EDGE_METRICS_ADDR),
            )
        }

    def _environment(self, admin_token: str) -> dict[str, str]:
        """What every child shares; each adds its own certificate (`_child_environment`)."""
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
        for name, child in self.children.items():
            env[f"QUANTIZED_{name.upper()}_REFLECTION"] = "true"
            env[f"QUANTIZED_{name.upper()}_METRICS_LISTEN"] = child.metrics_address
        return env

    def _child_environment(self, child: Child, shared: dict[str, str]) -> dict[str, str]:
        return {**shared, **_tls_environment(self.certificates[child.name])}

    def _probe_identity(self, child: Child) -> tuple[TlsFiles | None, str | None]:
        """How to reach CHILD's gRPC port: the edge's is public (plaintext, API
        keys); the others take the operator's certificate and prove their name."""
        if child.name == "edge":
            return None, None
        return self.certificates["operator"], child.name

    async def _spawn(self, child: Child, env: dict[str, str]) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            child.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "quantized_cli", "serve", child.name,
                env=self._child_environment(child, env), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # signals reach children only through us, in order
            )

    async def _wait_healthy(self, child: Child) -> None:
        process = child.process
        assert process is not None
        tls, service = self._probe_identity(child)
        try:
            await wait_until_serving(child.address, STARTUP_DEADLINE_SECONDS,
                                     lambda: process.returncode is None, tls=tls, service=service)
        except RuntimeError as exc:
            raise RuntimeError(f"{child.name}: {exc}; see {child.log_path}\n{_tail(child.log_path)}") from None
        child.healthy_since = asyncio.get_running_loop().time()

    async def _create_dev_account(self, admin_token: str) -> str:
        channel = open_channel(self.children["billing"].address, tls=self.certificates["operator"],
                               peer="billing")
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
        self.certificates = issue_dev_certificates(self.data_dir / "tls")
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
            operator_cert_file=str(self.certificates["operator"].cert_file),
            operator_key_file=str(self.certificates["operator"].key_file),
            ca_file=str(self.certificates["operator"].ca_file),
            metrics_addrs={name: child.metrics_address for name, child in self.children.items()},
        ))
        print(f"QUANTIZED_BASE_URL={base_url}")
        print(f"QUANTIZED_API_KEY={api_key}")
        print(f"# playground: http://127.0.0.1:{self.http_port}/playground (paste the API key there)")
        print("# metrics: " + ", ".join(f"{name} http://{child.metrics_address}/metrics"
                                        for name, child in self.children.items()))
        print(f"# logs: {self.data_dir / 'logs'}; admin state: {state_path()}; Ctrl-C stops the stack",
              flush=True)
        try:
            return await self._supervise(env)
        finally:
            remove_state(os.getpid())

    async def _supervise(self, env: dict[str, str]) -> int:
        keepers = {asyncio.create_task(self._keep_alive(child, env)) for child in self.children.values()}
        stop = asyncio.create_task(self.stop_requested.wait())
        try:
            done, _ = await asyncio.wait({stop, *keepers}, return_when=asyncio.FIRST_COMPLETED)
            for keeper in done & keepers:
                keeper.result()  # a supervision bug surfaces here, after the children are stopped
            return 1 if done & keepers else 0
        finally:
            for task in (stop, *keepers):
                task.cancel()
            await asyncio.gather(stop, *keepers, return_exceptions=True)
            await self._stop_children()
            _report("stopped")

    async def _keep_alive(self, child: Child, env: dict[str, str]) -> None:
        """Restart the child whenever it exits; return once it has crashed too often."""
        loop = asyncio.get_running_loop()
        while True:
            process = child.process
            assert process is not None
            returncode = await process.wait()
            now = loop.time()
            crashes = child.record_crash(now, self.crash_policy.window_seconds)
            exited = f"{child.name} exited (pid {process.pid}, {describe_exit(returncode)})"
            if crashes >= self.crash_policy.limit:
                times = "once" if crashes == 1 else f"{crashes} times"
                _report(f"{exited}; it crashed {times} within {self.crash_policy.window_seconds:g} s, "
                        f"giving up and stopping the stack; see {child.log_path}\n{_tail(child.log_path)}")
                return
            delay = child.next_restart_delay(now)
            child.healthy_since = None
            _report(f"{exited}; restarting in {delay:g} s")
            await asyncio.sleep(delay)
            await self._spawn(child, env)
            restarted = child.process
            try:
                await self._wait_healthy(child)
            except RuntimeError:
                # An exit is reported by the next turn of the loop; a child that hangs is made to exit.
                if restarted.returncode is None:
                    _report(f"{child.name} (pid {restarted.pid}) was not healthy within "
                            f"{STARTUP_DEADLINE_SECONDS:g} s; killing it")
                    restarted.kill()
                continue
            _report(f"{child.name} is back (pid {restarted.pid}, {child.address})")

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


def _report(message: str) -> None:
    print(f"quantized dev: {message}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
