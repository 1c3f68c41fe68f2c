"""Entry point of the `quantized` command."""

from __future__ import annotations

import argparse
import sys

from quantized_cli import admin, certificates, dev_stack, health, migrate, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantized", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(commands)
    dev_stack.add_parser(commands)
    admin.add_parser(commands)
    health.add_parser(commands)
    certificates.add_parser(commands)
    migrate.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.handler(args) or 0)
