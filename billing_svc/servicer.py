"""gRPC servicers: proto <-> domain, nothing else. Errors of unary calls are
ServiceErrors that the shared interceptor turns into google.rpc.Status; the
Ledger stream, which that interceptor does not wrap, answers each operation's
error inside its reply (a CallError) and converts its own failures. Every call
that reaches the database runs under the DatabaseGuard: a lost or refused
database connection answers SERVICE_UNAVAILABLE, never INTERNAL."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.trace import Span

from billing_svc.domain import (
    Account,
    AcquireLeaseOp,
    ApiKeyInfo,
    CapChange,
    ChargeOp,
    Charged,
    Closed,
    ExtendLeaseOp,
    Hold,
    Lease,
    LeaseReturned,
    LedgerOp,
    LedgerOutcome,
    LimitChange,
    LimitSetting,
    RateLimits,
    ReleaseOp,
    ReserveOp,
    ReturnLeaseOp,
    SettleOp,
    SpendingCaps,
    Usage,
    UsageEntry,
)
from billing_svc.idempotency import IdempotencyKeys
from billing_svc.metrics import ledger_operation_answered
from billing_svc.service import Billing
from billing_svc.storage.idempotency_store import (
    COMPLETED,
    FAILED_AFTER_GENERATION,
    RUNNING,
    TOO_LARGE,
)
from billing_svc.usage import Grouping, UsageQuery, UsageReport, UsageTotals
from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized.common.v1 import images_pb2, usage_pb2
from quantized_runtime import tracing
from quantized_runtime.admin_auth import require_admin
from quantized_runtime.call_stream import CallStreamServer
from quantized_runtime.database_health import DatabaseGuard
from quantized_runtime.errors import Reason, ServiceError, call_error_reason, to_call_error
from quantized_runtime.request_context import current_request_id, new_request_id
from quantized_runtime.server import Registrar
from quantized_runtime.stream_drain import StreamDrain

log = logging.getLogger("quantized.billing.ledger")


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _usage_from_proto(record: billing_pb2.UsageRecord) -> Usage:
    upstream = record.usage
    return Usage(
        model_id=record.model_id, provider=record.provider, images=record.images,
        input_tokens=upstream.input_tokens if upstream.HasField("input_tokens") else None,
        output_tokens=upstream.output_tokens if upstream.HasField("output_tokens") else None,
        total_tokens=upstream.total_tokens if upstream.HasField("total_tokens") else None,
        megapixels=upstream.megapixels if upstream.HasField("megapixels") else None,
        user=record.user or None)


def _usage_to_proto(usage: Usage) -> billing_pb2.UsageRecord:
    return billing_pb2.UsageRecord(
        model_id=usage.model_id, provider=usage.provider, images=usage.images,
        user=usage.user or "",
        usage=images_pb2.UpstreamUsage(input_tokens=usage.input_tokens,
                                       output_tokens=usage.output_tokens,
                                       total_tokens=usage.total_tokens,
                                       megapixels=usage.megapixels))


def _rate_limits(limits: RateLimits) -> billing_pb2.RateLimits:
    return billing_pb2.RateLimits(requests_per_minute=limits.requests_per_minute,
                                  max_concurrent_requests=limits.max_concurrent_requests)


def _limit_setting(stored: LimitSetting) -> billing_pb2.LimitSetting:
    return billing_pb2.LimitSetting(requests_per_minute=stored.requests_per_minute,
                                    max_concurrent_requests=stored.max_concurrent_requests)


def _limit_change(limits: billing_pb2.LimitSetting, use_defaults: bool) -> LimitChange:
    return LimitChange(LimitSetting(
        limits.requests_per_minute if limits.HasField("requests_per_minute") else None,
        limits.max_concurrent_requests if limits.HasField("max_concurrent_requests") else None,
    ), use_defaults)


def _spending_caps(caps: SpendingCaps) -> billing_pb2.SpendingCaps:
    return billing_pb2.SpendingCaps(daily_micro_credits=caps.daily, total_micro_credits=caps.total)


def _cap_change(caps: billing_pb2.SpendingCaps) -> CapChange:
    return CapChange(
        caps.daily_micro_credits if caps.HasField("daily_micro_credits") else None,
        caps.total_micro_credits if caps.HasField("total_micro_credits") else None)


def _account(account: Account) -> billing_pb2.Account:
    return billing_pb2.Account(
        account_id=account.account_id, name=account.name, unlimited=account.unlimited,
        balance_micro_credits=account.balance, held_micro_credits=account.held,
        created_at=_timestamp(account.created_at), limits=_limit_setting(account.limits))


def _key(key: ApiKeyInfo) -> billing_pb2.ApiKey:
    return billing_pb2.ApiKey(key_id=key.key_id, prefix=key.prefix, revoked=key.revoked,
                              created_at=_timestamp(key.created_at), limits=_limit_setting(key.limits),
                              caps=_spending_caps(key.caps),
                              spend=billing_pb2.KeySpend(total_micro_credits=key.spend.total,
                                                         today_micro_credits=key.spend.today,
                                                         held_micro_credits=key.spend.held))


def _hold(hold: Hold) -> billing_pb2.Hold:
    return billing_pb2.Hold(hold_id=hold.hold_id, amount_micro_credits=hold.amount,
                            request_id=hold.request_id, expires_at=_timestamp(hold.expires_at))


def _usage_entry(entry: UsageEntry) -> billing_pb2.UsageEntry:
    return billing_pb2.UsageEntry(time=_timestamp(entry.time), request_id=entry.request_id,
                                  usage=_usage_to_proto(entry.usage),
                                  micro_credits=entry.credits)


_GROUPINGS = {
    usage_pb2.USAGE_GROUPING_UNSPECIFIED: Grouping.DAY,
    usage_pb2.USAGE_GROUPING_DAY: Grouping.DAY,
    usage_pb2.USAGE_GROUPING_MODEL: Grouping.MODEL,
    usage_pb2.USAGE_GROUPING_KEY: Grouping.KEY,
}
_GROUPING_PROTOS = {grouping: number for number, grouping in _GROUPINGS.items() if number}


def _usage_query(query: usage_pb2.UsageQuery) -> UsageQuery:
    grouping = _GROUPINGS.get(query.group_by)
    if grouping is None:
        raise ServiceError(Reason.INVALID_REQUEST, f"group_by {query.group_by} is not a grouping",
                           field="group_by")
    return UsageQuery(start=query.start, end=query.end, grouping=grouping,
                      limit=query.limit if query.HasField("limit") else None, page=query.page)


def _utc_text(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _usage_bucket(grouping: Grouping, totals: UsageTotals) -> usage_pb2.UsageBucket:
    """The bucket's group in the field its grouping names; a key bucket is the one
    place that says what is shown of a key."""
    bucket = usage_pb2.UsageBucket(
        requests=totals.requests, images=totals.images, input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens, total_tokens=totals.total_tokens,
        megapixels=totals.megapixels, credits_used=totals.credits)
    if grouping is Grouping.DAY:
        bucket.day = totals.key
    elif grouping is Grouping.MODEL:
        bucket.model = totals.key
    else:
        bucket.key_id, bucket.key_prefix = totals.key, totals.key_prefix
        bucket.spent_today_micro_credits = totals.spend.today
        bucket.spent_total_micro_credits = totals.spend.total
        if totals.caps.daily is not None:
            bucket.daily_cap_micro_credits = totals.caps.daily
        if totals.caps.total is not None:
            bucket.total_cap_micro_credits = totals.caps.total
    return bucket


def _usage_report(report: UsageReport) -> usage_pb2.UsageReport:
    window, page = report.window, report.page
    return usage_pb2.UsageReport(
        start=_utc_text(window.start), end=_utc_text(window.end),
        group_by=_GROUPING_PROTOS[window.grouping],
        buckets=[_usage_bucket(window.grouping, totals) for totals in page.buckets],
        has_more=page.has_more, next_page=report.next_page,
        credits_remaining=page.credits_remaining, unlimited=page.unlimited)


def _operation(message: billing_pb2.LedgerOperation) -> LedgerOp | ServiceError:
    kind = message.WhichOneof("operation")
    if kind == "reserve":
        reserve = message.reserve
        return ReserveOp(reserve.account_id, reserve.amount_micro_credits, reserve.request_id,
                         reserve.key_id)
    if kind == "settle":
        settle = message.settle
        return SettleOp(settle.hold_id, settle.amount_micro_credits,
                        _usage_from_proto(settle.usage))
    if kind == "release":
        return ReleaseOp(message.release.hold_id)
    if kind == "acquire_lease":
        acquire = message.acquire_lease
        return AcquireLeaseOp(acquire.account_id, acquire.holder, acquire.request_id,
                              acquire.min_micro_credits, acquire.want_micro_credits,
                              acquire.unit_micro_credits)
    if kind == "extend_lease":
        extend = message.extend_lease
        return ExtendLeaseOp(extend.lease_id, extend.min_micro_credits,
                             extend.want_micro_credits, extend.unit_micro_credits)
    if kind == "charge":
        charge = message.charge
        return ChargeOp(charge.account_id, charge.request_id, charge.lease_id,
                        charge.amount_micro_credits, _usage_from_proto(charge.usage), charge.key_id)
    if kind == "return_lease":
        return ReturnLeaseOp(message.return_lease.lease_id)
    return ServiceError(Reason.INVALID_REQUEST,
                        "operation is required: one of reserve, settle, release, "
                        "acquire_lease, extend_lease, charge or return_lease",
                        field="operation")


def _reserve_response(hold: Hold) -> billing_pb2.ReserveResponse:
    return billing_pb2.ReserveResponse(hold_id=hold.hold_id, expires_at=_timestamp(hold.expires_at))


def _settle_response(closed: Closed) -> billing_pb2.SettleResponse:
    return billing_pb2.SettleResponse(charged_micro_credits=closed.charged,
                                      balance_micro_credits=closed.balance,
                                      spendable_micro_credits=closed.spendable)


def _release_response(closed: Closed) -> billing_pb2.ReleaseResponse:
    return billing_pb2.ReleaseResponse(balance_micro_credits=closed.balance)


def _lease_response(lease: Lease) -> billing_pb2.LeaseResponse:
    return billing_pb2.LeaseResponse(
        lease_id=lease.lease_id, amount_micro_credits=lease.amount,
        charged_micro_credits=lease.charged, expires_at=_timestamp(lease.expires_at),
        spendable_micro_credits=lease.spendable)


def _result(op: LedgerOp, outcome: LedgerOutcome) -> billing_pb2.LedgerResult:
    if isinstance(outcome, ServiceError):
        return billing_pb2.LedgerResult(error=to_call_error(outcome))
    if isinstance(outcome, Hold):
        return billing_pb2.LedgerResult(reserve=_reserve_response(outcome))
    if isinstance(outcome, Lease):
        if isinstance(op, ExtendLeaseOp):
            return billing_pb2.LedgerResult(extend_lease=_lease_response(outcome))
        return billing_pb2.LedgerResult(acquire_lease=_lease_response(outcome))
    if isinstance(outcome, Charged):
        return billing_pb2.LedgerResult(charge=billing_pb2.ChargeResponse(
            charged_micro_credits=outcome.amount, late=outcome.late,
            spendable_micro_credits=outcome.spendable, key_capped=outcome.key_capped))
    if isinstance(outcome, LeaseReturned):
        return billing_pb2.LedgerResult(return_lease=billing_pb2.ReturnLeaseResponse(
            returned_micro_credits=outcome.returned,
            spendable_micro_credits=outcome.spendable))
    if isinstance(op, SettleOp):
        return billing_pb2.LedgerResult(settle=_settle_response(outcome))
    return billing_pb2.LedgerResult(release=_release_response(outcome))


def _operation_spans(request: billing_pb2.LedgerRequest) -> list[Span | None]:
    """A server span per operation, a child of the span its traceparent names:
    the operations of one batch (one transaction) belong to different requests."""
    return [tracing.start_server_span(
        f"{LEDGER_SPAN} {message.WhichOneof('operation')}", message.traceparent,
        {**tracing.GRPC_ATTRIBUTES, "quantized.batch_id": request.batch_id,
         "quantized.batch_operations": len(request.operations)})
        for message in request.operations]


def _finish_operation_spans(spans: list[Span | None], results: list[billing_pb2.LedgerResult]) -> None:
    for span, result in zip(spans, results, strict=True):
        tracing.finish(span, call_error_reason(result.error) if result.HasField("error") else tracing.OK)


_DRAINING = billing_pb2.LedgerResponse(draining=True)
# The server span of one Ledger operation is named for the stream and the operation ("... charge").
LEDGER_SPAN = "quantized.billing.v1.BillingService/Ledger"
# One batch is one transaction: on PostgreSQL it holds its row locks, on SQLite
# the event loop and the write lock, for as long as it runs (billing.proto).
MAX_BATCH_OPERATIONS = 1024

# The stored key states and their proto enum values.
_IDEMPOTENCY_STATES = {
    RUNNING: billing_pb2.IDEMPOTENCY_STATE_RUNNING,
    COMPLETED: billing_pb2.IDEMPOTENCY_STATE_COMPLETED,
    TOO_LARGE: billing_pb2.IDEMPOTENCY_STATE_TOO_LARGE,
    FAILED_AFTER_GENERATION: billing_pb2.IDEMPOTENCY_STATE_FAILED_AFTER_GENERATION,
}
_STORED_IDEMPOTENCY_STATES = {value: name for name, value in _IDEMPOTENCY_STATES.items()}


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, billing: Billing, idempotency: IdempotencyKeys, drain: StreamDrain,
                 database: DatabaseGuard) -> None:
        self._billing = billing
        self._idempotency = idempotency
        self._drain = drain
        self._database = database

    async def Authenticate(self, request: billing_pb2.AuthenticateRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.AuthenticateResponse:
        async with self._database():
            identity = await self._billing.authenticate(request.token)
        key_limits, account_limits = self._billing.limits_in_force(identity)
        return billing_pb2.AuthenticateResponse(account_id=identity.account_id,
                                                unlimited=identity.unlimited,
                                                key_id=identity.key_id,
                                                key_limits=_rate_limits(key_limits),
                                                account_limits=_rate_limits(account_limits),
                                                key_caps=_spending_caps(identity.key_caps))

    async def GetUsage(self, request: billing_pb2.GetUsageRequest,
                       context: grpc.aio.ServicerContext) -> billing_pb2.GetUsageResponse:
        query = _usage_query(request.query)
        async with self._database():
            report = await self._billing.usage_report(request.account_id, query)
        return billing_pb2.GetUsageResponse(report=_usage_report(report))

    async def ClaimIdempotencyKey(self, request: billing_pb2.ClaimIdempotencyKeyRequest,
                                  context: grpc.aio.ServicerContext,
                                  ) -> billing_pb2.ClaimIdempotencyKeyResponse:
        async with self._database():
            record = await self._idempotency.claim(request.account_id, request.key, request.fingerprint,
                                                   request.owner, request.running_seconds)
        return billing_pb2.ClaimIdempotencyKeyResponse(
            claimed=record.claimed, state=_IDEMPOTENCY_STATES[record.state],
            fingerprint=record.fingerprint, response=record.response or b"")

    async def CompleteIdempotencyKey(self, request: billing_pb2.CompleteIdempotencyKeyRequest,
                                     context: grpc.aio.ServicerContext,
                                     ) -> billing_pb2.CompleteIdempotencyKeyResponse:
        state = _STORED_IDEMPOTENCY_STATES.get(request.state, "")
        async with self._database():
            completed = await self._idempotency.complete(request.account_id, request.key, request.owner, state,
                                                         request.response or None, request.retain_seconds)
        return billing_pb2.CompleteIdempotencyKeyResponse(completed=completed)

    async def ReleaseIdempotencyKey(self, request: billing_pb2.ReleaseIdempotencyKeyRequest,
                                    context: grpc.aio.ServicerContext,
                                    ) -> billing_pb2.ReleaseIdempotencyKeyResponse:
        async with self._database():
            released = await self._idempotency.release(request.account_id, request.key, request.owner)
        return billing_pb2.ReleaseIdempotencyKeyResponse(released=released)

    async def Ledger(self, request_iterator: AsyncIterator[billing_pb2.LedgerRequest],
                     context: grpc.aio.ServicerContext) -> None:
        """Each batch is applied by a task of its own as soon as it arrives, and
        answered when done (so possibly out of order); the stream's lifecycle is
        the runtime's (quantized_runtime.call_stream)."""
        # A batch read is applied even if the edge's stream dies meanwhile: the
        # edge may have answered its caller once the Charges in it were written.
        stream = CallStreamServer(context, self._drain, _DRAINING, finish_work_read=True)

        async def answer(request: billing_pb2.LedgerRequest) -> None:
            await stream.write(await self._apply_batch(request))

        async def on_batch(request: billing_pb2.LedgerRequest) -> None:
            stream.start(answer(request))

        await stream.serve(request_iterator, on_batch)

    async def _apply_batch(self, request: billing_pb2.LedgerRequest,
                           ) -> billing_pb2.LedgerResponse:
        # This task's own request id (the runtime's interceptor wraps unary calls
        # only): on this batch's log lines and in an INTERNAL error's message.
        request_id = new_request_id()
        current_request_id.set(request_id)
        started = time.perf_counter()
        if len(request.operations) > MAX_BATCH_OPERATIONS:
            refusal = billing_pb2.LedgerResult(error=to_call_error(ServiceError(
                Reason.INVALID_REQUEST, f"a Ledger batch holds at most {MAX_BATCH_OPERATIONS} operations; "
                                        f"this one has {len(request.operations)}")))
            return billing_pb2.LedgerResponse(batch_id=request.batch_id,
                                              results=[refusal] * len(request.operations))
        decoded = [_operation(message) for message in request.operations]
        spans = _operation_spans(request) if tracing.enabled() else None
        try:
            async with self._database():
                applied = iter(await self._billing.apply_batch(
                    [op for op in decoded if not isinstance(op, ServiceError)]))
            results = [billing_pb2.LedgerResult(error=to_call_error(op))
                       if isinstance(op, ServiceError) else _result(op, next(applied))
                       for op in decoded]
        except ServiceError as unavailable:
            # Only the database guard raises out of a batch (each operation's own
            # refusal is its outcome): the database was unreachable.
            results = [billing_pb2.LedgerResult(error=to_call_error(unavailable))] * len(decoded)
        except Exception:
            log.exception("ledger batch failed", extra={"fields": {
                "batch_id": request.batch_id, "operations": len(decoded)}})
            failure = billing_pb2.LedgerResult(error=to_call_error(ServiceError(
                Reason.INTERNAL, f"internal error (request id {request_id})")))
            results = [failure] * len(decoded)
        for message, result in zip(request.operations, results, strict=True):
            ledger_operation_answered(message.WhichOneof("operation") or "none",
                                      call_error_reason(result.error) if result.HasField("error") else "OK")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ledger batch", extra={"fields": {
                "batch_id": request.batch_id, "operations": len(results),
                "failures": sum(1 for result in results if result.HasField("error")),
                "duration_ms": round((time.perf_counter() - started) * 1000, 3)}})
        if spans is not None:
            _finish_operation_spans(spans, results)
        return billing_pb2.LedgerResponse(batch_id=request.batch_id, results=results)


class BillingAdminServicer(billing_pb2_grpc.BillingAdminServiceServicer):
    """Every call checks the admin token before anything else."""

    def __init__(self, billing: Billing, admin_token: str, database: DatabaseGuard) -> None:
        self._billing = billing
        self._admin_token = admin_token
        self._database = database

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        require_admin(context.invocation_metadata(), self._admin_token)

    async def CreateAccount(self, request: billing_pb2.CreateAccountRequest,
                            context: grpc.aio.ServicerContext,
                            ) -> billing_pb2.CreateAccountResponse:
        self._authorize(context)
        async with self._database():
            account, issued = await self._billing.create_account(
                request.name, request.credits_micro_credits, request.unlimited)
        return billing_pb2.CreateAccountResponse(account=_account(account),
                                                 api_key=issued.secret, key=_key(issued.info))

    async def CreateApiKey(self, request: billing_pb2.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.CreateApiKeyResponse:
        self._authorize(context)
        async with self._database():
            issued = await self._billing.create_key(request.account_id, _cap_change(request.caps))
        return billing_pb2.CreateApiKeyResponse(api_key=issued.secret, key=_key(issued.info))

    async def RevokeApiKey(self, request: billing_pb2.RevokeApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.RevokeApiKeyResponse:
        self._authorize(context)
        async with self._database():
            revoked = await self._billing.revoke_key(request.key_id)
        return billing_pb2.RevokeApiKeyResponse(key=_key(revoked))

    async def GrantCredits(self, request: billing_pb2.GrantCreditsRequest,
                           context: grpc.aio.ServicerContext) -> billing_pb2.GrantCreditsResponse:
        self._authorize(context)
        async with self._database():
            account = await self._billing.grant(request.account_id, request.amount_micro_credits)
        return billing_pb2.GrantCreditsResponse(account=_account(account))

    async def UpdateApiKeyLimits(self, request: billing_pb2.UpdateApiKeyLimitsRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> billing_pb2.UpdateApiKeyLimitsResponse:
        self._authorize(context)
        key = await self._billing.update_key_limits(
            request.key_id, _limit_change(request.limits, request.use_defaults))
        return billing_pb2.UpdateApiKeyLimitsResponse(key=_key(key))

    async def UpdateApiKeyCaps(self, request: billing_pb2.UpdateApiKeyCapsRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> billing_pb2.UpdateApiKeyCapsResponse:
        self._authorize(context)
        async with self._database():
            key = await self._billing.update_key_caps(request.key_id, _cap_change(request.caps))
        return billing_pb2.UpdateApiKeyCapsResponse(key=_key(key))

    async def UpdateAccountLimits(self, request: billing_pb2.UpdateAccountLimitsRequest,
                                  context: grpc.aio.ServicerContext,
                                  ) -> billing_pb2.UpdateAccountLimitsResponse:
        self._authorize(context)
        account = await self._billing.update_account_limits(
            request.account_id, _limit_change(request.limits, request.use_defaults))
        return billing_pb2.UpdateAccountLimitsResponse(account=_account(account))

    async def GetAccount(self, request: billing_pb2.GetAccountRequest,
                         context: grpc.aio.ServicerContext) -> billing_pb2.GetAccountResponse:
        self._authorize(context)
        async with self._database():
            view = await self._billing.account_view(request.account_id)
        return billing_pb2.GetAccountResponse(
            account=_account(view.account), keys=[_key(k) for k in view.keys],
            holds=[_hold(h) for h in view.open_holds],
            recent_usage=[_usage_entry(u) for u in view.recent_usage])


    async def GetAccountUsage(self, request: billing_pb2.GetAccountUsageRequest,
                              context: grpc.aio.ServicerContext) -> billing_pb2.GetAccountUsageResponse:
        self._authorize(context)
        query = _usage_query(request.query)
        async with self._database():
            report = await self._billing.usage_report(request.account_id, query)
        return billing_pb2.GetAccountUsageResponse(report=_usage_report(report))


def registrars(billing: Billing, idempotency: IdempotencyKeys, admin_token: str, drain: StreamDrain,
               database: DatabaseGuard) -> list[Registrar]:
    public = BillingServicer(billing, idempotency, drain, database)
    admin = BillingAdminServicer(billing, admin_token, database)
    return [
        lambda server: billing_pb2_grpc.add_BillingServiceServicer_to_server(public, server),
        lambda server: billing_pb2_grpc.add_BillingAdminServiceServicer_to_server(admin, server),
    ]


SERVICE_NAMES = (
    billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
    billing_pb2.DESCRIPTOR.services_by_name["BillingAdminService"].full_name,
)
