"""`quantized admin ...`: operations through the admin RPCs of billing and catalog.

Where to connect: QUANTIZED_BILLING_ADDR / QUANTIZED_CATALOG_ADDR (or --billing-addr /
--catalog-addr), else the running dev stack's state file, else the default loopback
addresses. The admin token: QUANTIZED_ADMIN_TOKEN, else the dev stack's state file.
The token is never taken as a flag, so it does not show in process listings.

The operator's certificate (QUANTIZED_TLS_CERT_FILE, _KEY_FILE, _CA_FILE, else the
dev stack's) is presented over mutual TLS; the token is a second factor beside it.
Without a certificate the token would cross the network in clear text, so the
command refuses any address that is not loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from quantized.common.v1 import usage_pb2
from quantized_cli.state_file import read_state
from quantized_runtime import defaults
from quantized_runtime.channels import is_loopback, open_channel
from quantized_runtime.client import call
from quantized_runtime.enum_names import enum_words
from quantized_runtime.errors import ServiceError
from quantized_runtime.tls import TLS_VARIABLES, TlsFiles, tls_files_from_environment

ADMIN_CALL_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Target:
    billing_addr: str
    catalog_addr: str
    admin_token: str
    # The operator's certificate; None only for loopback addresses.
    tls: TlsFiles | None


class AdminSetupError(Exception):
    pass


def resolve_target(args: argparse.Namespace) -> Target:
    state = read_state()
    billing = (args.billing_addr or os.environ.get("QUANTIZED_BILLING_ADDR")
               or (state.billing_addr if state else defaults.BILLING_ADDR))
    catalog = (args.catalog_addr or os.environ.get("QUANTIZED_CATALOG_ADDR")
               or (state.catalog_addr if state else defaults.CATALOG_ADDR))
    token = os.environ.get("QUANTIZED_ADMIN_TOKEN") or (state.admin_token if state else "")
    if not token:
        raise AdminSetupError("no admin token: set QUANTIZED_ADMIN_TOKEN, or start a dev stack "
                              "with `quantized dev` as this user")
    tls = tls_files_from_environment() or (state.operator_tls() if state else None)
    if tls is None:
        remote = [address for address in (billing, catalog) if not is_loopback(address)]
        if remote:
            raise AdminSetupError(
                f"refusing to send the admin token in plaintext to {', '.join(remote)}: set "
                f"{', '.join(TLS_VARIABLES)} to an operator certificate")
    return Target(billing, catalog, token, tls)


def _message_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


Handler = Callable[[argparse.Namespace, Target, Any, Any], Awaitable[dict[str, Any]]]


async def _run_with_stubs(handler: Handler, args: argparse.Namespace, target: Target) -> dict[str, Any]:
    billing_channel = open_channel(target.billing_addr, tls=target.tls, peer="billing")
    catalog_channel = open_channel(target.catalog_addr, tls=target.tls, peer="catalog")
    try:
        return await handler(args, target,
                             billing_pb2_grpc.BillingAdminServiceStub(billing_channel),
                             catalog_pb2_grpc.CatalogAdminServiceStub(catalog_channel))
    finally:
        await billing_channel.close()
        await catalog_channel.close()


async def _admin_call(method: Any, request: Any, target: Target) -> Any:
    return await call(method, request, timeout=ADMIN_CALL_TIMEOUT_SECONDS,
                      metadata=[("authorization", f"Bearer {target.admin_token}")])


async def account_create(args, target, billing, _catalog) -> dict[str, Any]:
    reply = await _admin_call(billing.CreateAccount, billing_pb2.CreateAccountRequest(
        name=args.name, credits_micro_credits=args.credits or 0, unlimited=args.unlimited), target)
    return {"account_id": reply.account.account_id, "api_key": reply.api_key,
            "key_id": reply.key.key_id, "unlimited": reply.account.unlimited,
            "balance_micro_credits": reply.account.balance_micro_credits}


async def account_show(args, target, billing, _catalog) -> dict[str, Any]:
    reply = await _admin_call(billing.GetAccount,
                              billing_pb2.GetAccountRequest(account_id=args.account_id), target)
    return _message_dict(reply)


def _spending_caps(args: argparse.Namespace) -> billing_pb2.SpendingCaps | None:
    """The caps given on the command line; None when neither flag was."""
    if args.daily_cap is None and args.total_cap is None:
        return None
    return billing_pb2.SpendingCaps(daily_micro_credits=args.daily_cap, total_micro_credits=args.total_cap)


async def key_create(args, target, billing, _catalog) -> dict[str, Any]:
    reply = await _admin_call(billing.CreateApiKey, billing_pb2.CreateApiKeyRequest(
        account_id=args.account, caps=_spending_caps(args)), target)
    return {"api_key": reply.api_key, "key_id": reply.key.key_id, "prefix": reply.key.prefix,
            "caps": _message_dict(reply.key.caps)}


async def key_list(args, target, billing, _catalog) -> dict[str, Any]:
    reply = await _admin_call(billing.GetAccount,
                              billing_pb2.GetAccountRequest(account_id=args.account), target)
    return {"keys": [_message_dict(key) for key in reply.keys]}


async def key_revoke(args, target, billing, _catalog) -> dict[str, Any]:
    reply = await _admin_call(billing.RevokeApiKey,
                              billing_pb2.RevokeApiKeyRequest(key_id=args.key_id), target)
    return _message_dict(reply.key)


def _limit_setting(args: argparse.Namespace) -> billing_pb2.LimitSetting:
    return billing_pb2.LimitSetting(requests_per_minute=args.rpm, max_concurrent_requests=args.concurrency)


async def key_update(args, target, billing, _catalog) -> dict[str, Any]:
    """Rate limits and spending caps, each through its own RPC when given (with
    neither, the limits call only reads the key)."""
    caps = _spending_caps(args)
    limits_given = args.rpm is not None or args.concurrency is not None or args.use_defaults
    if limits_given or caps is None:
        key = (await _admin_call(billing.UpdateApiKeyLimits, billing_pb2.UpdateApiKeyLimitsRequest(
            key_id=args.key_id, limits=_limit_setting(args), use_defaults=args.use_defaults), target)).key
    if caps is not None:
        key = (await _admin_call(billing.UpdateApiKeyCaps, billing_pb2.UpdateApiKeyCapsRequest(
            key_id=args.key_id, caps=caps), target)).key
    return _message_dict(key)


async def account_update(args, target, billing, _catalog) -> dict[str, Any]:
    reply = await _admin_call(billing.UpdateAccountLimits, billing_pb2.UpdateAccountLimitsRequest(
        account_id=args.account_id, limits=_limit_setting(args), use_defaults=args.use_defaults), target)
    return _message_dict(reply.account)


async def credits_grant(args, target, billing, _catalog) -> dict[str, Any]:
    reply = await _admin_call(billing.GrantCredits, billing_pb2.GrantCreditsRequest(
        account_id=args.account, amount_micro_credits=args.amount), target)
    return _message_dict(reply.account)


async def provider_model_set(args, target, _billing, catalog) -> dict[str, Any]:
    reply = await _admin_call(catalog.SetProviderModelActive, catalog_pb2.SetProviderModelActiveRequest(
        provider=args.provider, model_id=args.model, is_active=args.action == "enable"), target)
    return _message_dict(reply.provider_model)


async def catalog_list(_args, target, _billing, catalog) -> dict[str, Any]:
    return _message_dict(await _admin_call(catalog.ListCatalog, catalog_pb2.ListCatalogRequest(), target))


async def catalog_reload(_args, target, _billing, catalog) -> dict[str, Any]:
    return _message_dict(await _admin_call(
        catalog.ReloadCatalog, catalog_pb2.ReloadCatalogRequest(), target))


async def catalog_audit(args, target, _billing, catalog) -> dict[str, Any]:
    return _message_dict(await _admin_call(
        catalog.ListAuditEvents, catalog_pb2.ListAuditEventsRequest(limit=args.limit), target))


# `quantized admin usage`: every page of the report, then one table, CSV or JSON.
USAGE_GROUPINGS = enum_words(usage_pb2.UsageGrouping.DESCRIPTOR)
USAGE_GROUP_COLUMNS = {"day": ["day"], "model": ["model"],
                       "key": ["key_id", "key_prefix", "daily_cap_micro_credits", "total_cap_micro_credits",
                               "spent_today_micro_credits", "spent_total_micro_credits"]}
USAGE_TOTAL_COLUMNS = ["requests", "images", "input_tokens", "output_tokens", "total_tokens",
                       "megapixels", "credits_used"]


def _bucket_value(bucket: usage_pb2.UsageBucket, column: str) -> Any:
    """A column's value; an unset cap (no cap) is None, not 0."""
    if column.endswith("_cap_micro_credits") and not bucket.HasField(column):
        return None
    return getattr(bucket, column)


async def usage_report(args, target, billing, _catalog) -> dict[str, Any]:
    query = usage_pb2.UsageQuery(start=args.start or "", end=args.end or "",
                                 group_by=USAGE_GROUPINGS[args.group_by])  # type: ignore[arg-type]
    columns = USAGE_GROUP_COLUMNS[args.group_by] + USAGE_TOTAL_COLUMNS
    buckets: list[dict[str, Any]] = []
    while True:
        reply = await _admin_call(billing.GetAccountUsage, billing_pb2.GetAccountUsageRequest(
            account_id=args.account, query=query), target)
        report = reply.report
        buckets.extend({column: _bucket_value(bucket, column) for column in columns} for bucket in report.buckets)
        if not report.has_more:
            break
        query.page = report.next_page
    return {"account_id": args.account, "start": report.start, "end": report.end,
            "group_by": args.group_by, "buckets": buckets,
            "credits_remaining": (report.credits_remaining if report.HasField("credits_remaining")
                                  else None),
            "unlimited": report.unlimited}


def _print_usage(result: dict[str, Any], args: argparse.Namespace) -> None:
    """A table by default; --csv for a spreadsheet, --json for scripts."""
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    columns = USAGE_GROUP_COLUMNS[result["group_by"]] + USAGE_TOTAL_COLUMNS
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(result["buckets"])
        return
    remaining = "unlimited" if result["unlimited"] else f"{result['credits_remaining']} micro-credits"
    print(f"account {result['account_id']}: {result['start']} to {result['end']}, "
          f"by {result['group_by']}; credits remaining: {remaining}")
    rows = [columns] + [[str(bucket[column]) for column in columns] for bucket in result["buckets"]]
    widths = [max(len(row[index]) for row in rows) for index in range(len(columns))]
    for row in rows:
        print("  ".join(cell.ljust(width) if index < len(columns) - len(USAGE_TOTAL_COLUMNS)
                        else cell.rjust(width)
                        for index, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip())


def _print_result(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    for key, value in result.items():
        rendered = json.dumps(value, indent=2) if isinstance(value, dict | list) else value
        print(f"{key}: {rendered}")


Printer = Callable[[dict[str, Any], argparse.Namespace], None]


def _execute(handler: Handler, printer: Printer = _print_result) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            target = resolve_target(args)
            result = asyncio.run(_run_with_stubs(handler, args, target))
        except AdminSetupError as exc:
            print(f"quantized admin: {exc}", file=sys.stderr)
            return 2
        except ServiceError as exc:
            print(f"quantized admin: {exc.reason.value}: {exc.message}", file=sys.stderr)
            return 1
        printer(result, args)
        return 0
    return run


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number of micro-credits")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or a positive whole number of micro-credits")
    return value


def _limit_value(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero (no limit) or a positive whole number")
    return value


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=_limit_value, default=None,
                        help="requests per minute (0: no limit; omitted: unchanged)")
    parser.add_argument("--concurrency", type=_limit_value, default=None,
                        help="requests in flight at once (0: no limit; omitted: unchanged)")
    parser.add_argument("--use-defaults", action="store_true",
                        help="clear the stored limits back to billing's defaults (then apply --rpm/--concurrency)")


def _cap_arguments(parser: argparse.ArgumentParser, omitted: str) -> None:
    parser.add_argument("--daily-cap", type=_non_negative_int, default=None,
                        help=f"micro-credits the key may spend per UTC day (0: no cap; omitted: {omitted})")
    parser.add_argument("--total-cap", type=_non_negative_int, default=None,
                        help=f"micro-credits the key may spend in all (0: no cap; omitted: {omitted})")


def add_parser(commands: argparse._SubParsersAction) -> None:
    admin = commands.add_parser("admin", help="administer a running deployment or dev stack")
    admin.add_argument("--billing-addr", default=None, help="billing gRPC address")
    admin.add_argument("--catalog-addr", default=None, help="catalog gRPC address")
    groups = admin.add_subparsers(dest="group", required=True)

    def leaf(parent: argparse._SubParsersAction, name: str, handler: Handler, help_text: str):
        parser = parent.add_parser(name, help=help_text)
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=_execute(handler))
        return parser

    account = groups.add_parser("account", help="accounts").add_subparsers(dest="action", required=True)
    create = leaf(account, "create", account_create, "create an account and its first API key")
    create.add_argument("--name", required=True)
    amount = create.add_mutually_exclusive_group(required=True)
    amount.add_argument("--credits", type=_non_negative_int, help="opening balance in micro-credits")
    amount.add_argument("--unlimited", action="store_true", help="no balance limit")
    show = leaf(account, "show", account_show, "balance, holds and recent usage")
    show.add_argument("account_id")
    account_limits = leaf(account, "update", account_update, "set an account's rate limits")
    account_limits.add_argument("account_id")
    _limit_arguments(account_limits)

    key = groups.add_parser("key", help="API keys").add_subparsers(dest="action", required=True)
    key_create_parser = leaf(key, "create", key_create, "create another key for an account")
    key_create_parser.add_argument("--account", required=True)
    _cap_arguments(key_create_parser, "no cap")
    leaf(key, "list", key_list, "an account's keys with their limits, caps and spend").add_argument(
        "--account", required=True)
    leaf(key, "revoke", key_revoke, "revoke a key by id").add_argument("key_id")
    key_limits = leaf(key, "update", key_update, "set a key's rate limits and spending caps")
    key_limits.add_argument("key_id")
    _limit_arguments(key_limits)
    _cap_arguments(key_limits, "unchanged")

    credit = groups.add_parser("credits", help="credits").add_subparsers(dest="action", required=True)
    grant = leaf(credit, "grant", credits_grant, "add micro-credits to an account")
    grant.add_argument("--account", required=True)
    grant.add_argument("--amount", type=_positive_int, required=True)

    provider_model = groups.add_parser("provider-model", help="provider-model rows").add_subparsers(
        dest="action", required=True)
    for action in ("enable", "disable"):
        parser = leaf(provider_model, action, provider_model_set, f"{action} a provider-model row")
        parser.add_argument("--provider", required=True)
        parser.add_argument("--model", required=True)

    catalog = groups.add_parser("catalog", help="the model catalog").add_subparsers(dest="action", required=True)
    leaf(catalog, "list", catalog_list, "models and provider-model rows")
    leaf(catalog, "reload", catalog_reload, "re-read the catalog file without a restart")
    leaf(catalog, "audit", catalog_audit, "recent catalog changes").add_argument("--limit", type=int, default=50)

    usage = groups.add_parser("usage", help="an account's usage per day, model or API key (UTC)")
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--csv", action="store_true", help="print CSV (a header row, then one row per bucket)")
    usage.add_argument("--account", required=True)
    usage.add_argument("--start", default=None,
                       help="ISO 8601 date or date-time, inclusive (default: 30 days before --end)")
    usage.add_argument("--end", default=None,
                       help="ISO 8601 date or date-time, exclusive (default: the start of tomorrow, UTC)")
    usage.add_argument("--group-by", choices=list(USAGE_GROUPINGS), default="day")
    usage.set_defaults(handler=_execute(usage_report, _print_usage))
