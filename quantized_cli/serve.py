"""`quantized serve NAME`: run one service in the foreground (what each container runs)."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import signal
import sys

# Set by `quantized dev` for its children: the pid that must outlive this process.
PARENT_PID_ENV = "QUANTIZED_DEV_PARENT_PID"
_PR_SET_PDEATHSIG = 1

SERVICE_MODULES = {
    "edge": "edge.main",
    "catalog": "catalog_svc.main",
    "billing": "billing_svc.main",
    "provider": "provider_svc.main",
}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run one service until SIGTERM/SIGINT")
    parser.add_argument("service", choices=sorted(SERVICE_MODULES))
    parser.set_defaults(handler=run)


def stop_with_parent() -> None:
    """Under `quantized dev`, ask Linux for SIGTERM when the dev process dies, even
    by SIGKILL, so no service is left running without it."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before the request took effect.
    if os.getppid() != int(expected):
        sys.exit(f"the process that started this service ({expected}) is gone")


def run(args: argparse.Namespace) -> int:
    stop_with_parent()
    # Imported lazily so each service process loads only its own code.
    importlib.import_module(SERVICE_MODULES[args.service]).main()
    return 0
