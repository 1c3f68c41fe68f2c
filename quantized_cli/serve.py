"""`quantized serve NAME`: run one service in the foreground (what each container runs)."""

from __future__ import annotations

import argparse
import importlib

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


def run(args: argparse.Namespace) -> int:
    # Imported lazily so each service process loads only its own code.
    importlib.import_module(SERVICE_MODULES[args.service]).main()
    return 0
