"""Credit leases: the edge admits requests against money billing already holds for it.

Billing is the system of record, but asking it to hold money before every
request puts a round trip on every request's critical path. So billing grants
this edge a lease on an account (a hold of several worst-case quotes) and the
edge spends it down in memory: a request whose quote the lease covers is
admitted with no billing call, and its actual price goes out afterwards as a
Charge that the request waits to see written, not answered
(edge/ledger_client.py). "402 before any upstream call" still holds, because
the money of every admitted request is held at billing, in the lease.

- When the lease cannot cover a quote, billing is asked at once (AcquireLease
  or ExtendLease, one at a time per account; other requests for that account
  wait for it). When billing's share of the balance cannot give a lease of a
  few quotes, the account uses exact per-request holds (Reserve, Settle,
  Release) for a while, so its last credits are never over-spent however many
  edges race for them.
- Renewal happens off the critical path: a lease running low is extended in
  the background, a lease in use has its expiry pushed before it is near, and
  a lease idle with nothing in flight is returned.
- Local accounting, per lease: `unspent` is what billing granted minus the
  worst cases of the requests admitted on it and not finished, minus their
  charges. A finished request gives back its worst case and takes its price; a
  failed one gives back its worst case. A lease billing ended (expired) is
  dropped: requests in flight on it still charge it (billing applies them
  late, never drops them), and new requests go on a new lease.
- A request with a capped API key is admitted by billing, on an exact hold
  that billing checks against the key's caps as well as the balance (a
  lease is the account's, shared by all its keys, so it cannot keep a key
  under its cap). Every Reserve and Charge names the request's key, so
  billing counts the key's spend on either path. A Charge answer saying the
  key has a cap (put on it after this edge cached its authentication) sends
  the key's next requests to exact holds at once, for as long as that
  authentication may still be cached.
- `credits_remaining` for a caller is this edge's view: the spendable credits
  billing last reported for the account, minus the charges sent since and not
  yet answered. Under concurrency from several edges it is a snapshot.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import itertools
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from quantized.billing.v1 import billing_pb2
from quantized_runtime.clock import utc_now
from quantized_runtime.errors import Reason, ServiceError

from edge.ledger_client import LedgerClient, PendingCharge

log = logging.getLogger("quantized.edge.leases")

# How often leases are looked over for renewal, expiry and idleness.
LOOK_OVER_SECONDS = 0.25
# A lease is extended in the background once less than this part of its
# lifetime is left, and admits nothing more once less than NEAR_EXPIRY_PART
# is: a charge must reach billing while its lease is still open.
RENEW_PART_OF_LIFETIME = 0.5
NEAR_EXPIRY_PART = 0.25
# The spend rate is an exponentially decaying sum over about this window.
SPEND_RATE_WINDOW_SECONDS = 1.0
# A lease is topped up in the background once its unspent part is below half
# of its last grant or this many seconds of recent spend.
LOW_WATER_SECONDS = 1.0


class AdmissionKind(enum.Enum):
    LEASE = "lease"
    HOLD = "hold"
    UNLIMITED = "unlimited"


@dataclass(eq=False)
class _Lease:
    lease_id: str
    # What billing has set aside so far, and the part of it this edge has not committed.
    amount: int
    unspent: int
    expires_at: float
    lifetime: float
    # The last grant, for the low-water mark.
    last_grant: int
    # Requests admitted and not finished, plus charges sent and not answered.
    in_flight: int = 0
    admitted_since_extension: bool = False
    ended: bool = False

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def covers(self, amount: int, now: float) -> bool:
        return (not self.ended and self.unspent >= amount
                and self.remaining(now) > self.lifetime * NEAR_EXPIRY_PART)

    def granted(self, answer: billing_pb2.LeaseResponse) -> None:
        added = answer.amount_micro_credits - self.amount
        self.amount = answer.amount_micro_credits
        self.unspent += added
        if added:
            self.last_grant = added
        self.expires_at, self.lifetime = _expiry(answer)
        self.admitted_since_extension = False


@dataclass(eq=False)
class _Account:
    account_id: str
    lease: _Lease | None = None
    # The one AcquireLease or ExtendLease in flight for this account.
    renewal: asyncio.Task[None] | None = None
    fallback_until: float = 0.0
    spend_rate: float = 0.0
    spend_rate_at: float = 0.0
    last_use: float = 0.0
    # The last quote admitted: the unit of background extensions.
    unit: int = 0
    # Billing's last word on credits granted minus charged, and what this edge charged since.
    spendable: int | None = None
    unanswered: int = 0
    holds_in_flight: int = 0

    def note_spend(self, amount: int, now: float) -> None:
        self.spend_rate = self.rate(now) + amount / SPEND_RATE_WINDOW_SECONDS
        self.spend_rate_at = now
        self.last_use = now

    def rate(self, now: float) -> float:
        """Recent spend in micro-credits per second."""
        return self.spend_rate * math.exp(-(now - self.spend_rate_at) / SPEND_RATE_WINDOW_SECONDS)

    def credits_remaining(self) -> int | None:
        return None if self.spendable is None else self.spendable - self.unanswered

    @property
    def renewing(self) -> bool:
        return self.renewal is not None and not self.renewal.done()


@dataclass(eq=False)
class Admission:
    """Money set aside for one request: its worst case, on a lease, on a hold, or nothing (unlimited)."""

    kind: AdmissionKind
    account_id: str
    request_id: str
    amount: int
    # The caller's API key (empty for a JWT caller), named on its Reserve or Charge.
    key_id: str = ""
    _account: _Account | None = None
    _lease: _Lease | None = None
    hold_id: str = ""
    # Finished (charged or settled) or cancelled: nothing more to do for it.
    closed: bool = False


@dataclass(frozen=True)
class Charged:
    credits_used: int
    # None for unlimited accounts.
    credits_remaining: int | None


@dataclass
class LeaseSettings:
    enabled: bool
    min_quotes: int
    target_seconds: float
    idle_seconds: float
    fallback_seconds: float
    # The ceiling of one billing operation the edge waits for.
    call_timeout_seconds: float
    # How long a key billing reported capped on a Charge answer is admitted by
    # exact holds, whatever its cached authentication says: the authentication
    # cache's lifetime, after which Authenticate says so itself.
    capped_key_memory_seconds: float
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")


class CreditLeases:
    """One per edge: the leases it holds, per account."""

    def __init__(self, ledger: LedgerClient, settings: LeaseSettings) -> None:
        self._ledger = ledger
        self._settings = settings
        self._accounts: dict[str, _Account] = {}
        self._acquisitions = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._look_over: asyncio.Task[None] | None = None
        self._closed = False
        # Keys billing reported capped, until when (monotonic): see _reported_capped.
        self._capped_keys: dict[str, float] = {}
        # Requests admitted, and of those admitted locally on a lease (the hit rate).
        self.admitted = 0
        self.admitted_locally = 0

    @property
    def holder(self) -> str:
        return self._settings.holder

    # Admission.

    async def admit(self, account_id: str, unlimited: bool, quote: int, request_id: str,
                    timeout: float, *, key_id: str = "", capped: bool = False) -> Admission:
        """Set aside `quote` for a request, or raise (INSUFFICIENT_CREDITS: the 402).
        A capped key's request always takes an exact hold, whatever the account."""
        capped = capped or self._reported_capped(key_id)
        if unlimited and not capped:
            return Admission(AdmissionKind.UNLIMITED, account_id, request_id, quote, key_id)
        if self._closed:
            raise ServiceError(Reason.SERVICE_UNAVAILABLE, "the edge is stopping")
        account = self._accounts.get(account_id)
        if account is None:
            account = self._accounts[account_id] = _Account(account_id)
            self._start_looking_over()
        if capped:
            self.admitted += 1
            return await self._hold(account, quote, request_id, key_id, timeout)
        now = time.monotonic()
        account.note_spend(quote, now)
        account.unit = quote
        self.admitted += 1
        give_up = now + timeout
        while True:
            lease = account.lease
            if lease is not None and lease.covers(quote, now):
                lease.unspent -= quote
                lease.in_flight += 1
                lease.admitted_since_extension = True
                self.admitted_locally += 1
                self._top_up_if_low(account, lease, now)
                return Admission(AdmissionKind.LEASE, account_id, request_id, quote, key_id, account, lease)
            if not self._settings.enabled or account.fallback_until > now:
                return await self._hold(account, quote, request_id, key_id, give_up - now)
            await self._renewed(account, quote, give_up - now)
            now = time.monotonic()

    def _reported_capped(self, key_id: str) -> bool:
        until = self._capped_keys.get(key_id)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._capped_keys[key_id]
        return False

    async def _hold(self, account: _Account, quote: int, request_id: str, key_id: str,
                    timeout: float) -> Admission:
        """An exact hold for one request: billing's refusal (the balance or the key's cap) is the 402."""
        account.holds_in_flight += 1
        try:
            hold = await self._ledger.reserve(billing_pb2.ReserveRequest(
                account_id=account.account_id, amount_micro_credits=quote, request_id=request_id,
                key_id=key_id), _positive(timeout))
        except BaseException:
            account.holds_in_flight -= 1
            raise
        return Admission(AdmissionKind.HOLD, account.account_id, request_id, quote, key_id, account,
                         hold_id=hold.hold_id)

    async def _renewed(self, account: _Account, unit: int, timeout: float) -> None:
        """Wait for the account's lease to be acquired or extended (starting that if need be)."""
        if not account.renewing:
            account.renewal = self._spawn(self._renew(account, unit, self._settings.min_quotes * unit))
        renewal = account.renewal
        assert renewal is not None
        try:
            await asyncio.wait_for(asyncio.shield(renewal), _positive(timeout))
        except TimeoutError:
            raise ServiceError(Reason.SERVICE_UNAVAILABLE,
                               f"billing did not grant a lease within {timeout:.1f} s") from None

    def _top_up_if_low(self, account: _Account, lease: _Lease, now: float) -> None:
        low_water = max(lease.last_grant // 2, account.rate(now) * LOW_WATER_SECONDS)
        if lease.unspent < low_water and not account.renewing and account.fallback_until <= now:
            account.renewal = self._spawn(
                self._renew(account, account.unit, self._settings.min_quotes * account.unit))

    async def _renew(self, account: _Account, unit: int, minimum: int) -> None:
        """Acquire a lease, or extend the current one by at least `minimum` (zero:
        only push its expiry). A refusal for want of credits starts the fallback
        to exact holds; billing having ended the lease drops it."""
        want = minimum and max(minimum, _round_up(
            account.rate(time.monotonic()) * self._settings.target_seconds, unit))
        lease = account.lease
        timeout = self._settings.call_timeout_seconds
        try:
            if lease is None:
                answer = await self._ledger.acquire_lease(billing_pb2.AcquireLeaseRequest(
                    account_id=account.account_id, holder=self.holder,
                    request_id=f"lease-{self.holder}-{next(self._acquisitions)}",
                    min_micro_credits=minimum, want_micro_credits=want, unit_micro_credits=unit), timeout)
                expires_at, lifetime = _expiry(answer)
                lease = _Lease(answer.lease_id, answer.amount_micro_credits,
                               answer.amount_micro_credits - answer.charged_micro_credits,
                               expires_at, lifetime, answer.amount_micro_credits)
                if self._closed:
                    self._spawn(self._return(lease))
                    return
                account.lease = lease
            else:
                answer = await self._ledger.extend_lease(billing_pb2.ExtendLeaseRequest(
                    lease_id=lease.lease_id, min_micro_credits=minimum, want_micro_credits=want,
                    unit_micro_credits=unit), timeout)
                lease.granted(answer)
        except ServiceError as error:
            if error.reason is Reason.INSUFFICIENT_CREDITS:
                account.fallback_until = time.monotonic() + self._settings.fallback_seconds
                return
            if error.reason in (Reason.HOLD_CLOSED, Reason.NOT_FOUND) and lease is not None:
                log.warning("billing ended a lease this edge still held", extra={"fields": {
                    "account_id": account.account_id, "lease_id": lease.lease_id, "detail": error.message}})
                self._drop(account, lease)
                return
            raise
        if answer.HasField("spendable_micro_credits"):
            account.spendable = answer.spendable_micro_credits

    # After the upstream call.

    async def finish(self, admission: Admission, price: int, usage: billing_pb2.UsageRecord,
                     timeout: float) -> Charged:
        """Charge `price` for an admitted request. On a lease or an unlimited
        account this returns once the Charge is written to billing's stream; on a
        hold, once billing settled it. Raises with the admission still open when
        nothing was charged."""
        account = admission._account
        if admission.kind is AdmissionKind.HOLD:
            assert account is not None
            settled = await self._ledger.settle(billing_pb2.SettleRequest(
                hold_id=admission.hold_id, amount_micro_credits=price, usage=usage), timeout)
            admission.closed = True
            account.holds_in_flight -= 1
            if settled.HasField("spendable_micro_credits"):
                account.spendable = settled.spendable_micro_credits
            return Charged(settled.charged_micro_credits, account.credits_remaining())
        lease = admission._lease
        charge = self._ledger.send_charge(billing_pb2.ChargeRequest(
            account_id=admission.account_id, request_id=admission.request_id,
            lease_id=lease.lease_id if lease is not None else "", amount_micro_credits=price, usage=usage,
            key_id=admission.key_id))
        try:
            await asyncio.wait_for(asyncio.shield(charge.written), timeout)
        except (TimeoutError, asyncio.CancelledError) as stopped:
            if self._ledger.withdraw(charge):
                if isinstance(stopped, TimeoutError):
                    raise ServiceError(Reason.SERVICE_UNAVAILABLE,
                                       f"could not send a charge to billing within {timeout:.1f} s") from None
                raise
            # Already in a batch on its way: billing will see it.
            self._charged(admission, charge, price)
            if isinstance(stopped, asyncio.CancelledError):
                raise
            await asyncio.shield(charge.written)
        else:
            self._charged(admission, charge, price)
        return Charged(price, account.credits_remaining() if account is not None else None)

    def _charged(self, admission: Admission, charge: PendingCharge, price: int) -> None:
        admission.closed = True
        account, lease = admission._account, admission._lease
        if account is not None:
            account.unanswered += price
        if lease is not None:
            lease.unspent += admission.amount - price
        charge.waiter.add_done_callback(lambda waiter: self._charge_answered(admission, price, waiter))

    def _charge_answered(self, admission: Admission, price: int, waiter: asyncio.Future[Any]) -> None:
        account, lease = admission._account, admission._lease
        if lease is not None:
            lease.in_flight -= 1
        if account is not None:
            account.unanswered -= price
        if waiter.cancelled() or waiter.exception() is not None:
            return
        answer: billing_pb2.ChargeResponse = waiter.result()
        if answer.key_capped and admission.key_id:
            self._capped_keys[admission.key_id] = time.monotonic() + self._settings.capped_key_memory_seconds
        if account is not None and answer.HasField("spendable_micro_credits"):
            account.spendable = answer.spendable_micro_credits

    async def cancel(self, admission: Admission, timeout: float) -> None:
        """A request that failed after admission costs nothing."""
        if admission.closed:
            return
        if admission.kind is not AdmissionKind.HOLD:
            self._cancel_locally(admission)
        else:
            admission.closed = True
            assert admission._account is not None
            admission._account.holds_in_flight -= 1
            try:
                await self._ledger.release(billing_pb2.ReleaseRequest(hold_id=admission.hold_id), timeout)
            except Exception:
                # The hold expires on its own; the caller's error matters more than this one.
                log.exception("could not release hold", extra={"fields": {"hold_id": admission.hold_id}})

    def cancel_soon(self, admission: Admission, timeout: float) -> None:
        """cancel() for a request being cancelled: what needs billing runs in the background."""
        if admission.kind is AdmissionKind.HOLD and not admission.closed:
            self._spawn(self.cancel(admission, timeout))
        else:
            self._cancel_locally(admission)

    @staticmethod
    def _cancel_locally(admission: Admission) -> None:
        """The request's worst case goes back into its lease (nothing was charged)."""
        if not admission.closed and admission._lease is not None:
            admission._lease.unspent += admission.amount
            admission._lease.in_flight -= 1
        admission.closed = True

    # In the background.

    def _start_looking_over(self) -> None:
        if self._look_over is None and not self._closed:
            self._look_over = self._spawn(self._look_over_leases())

    async def _look_over_leases(self) -> None:
        while True:
            await asyncio.sleep(LOOK_OVER_SECONDS)
            now = time.monotonic()
            for account in list(self._accounts.values()):
                self._look_over_account(account, now)

    def _look_over_account(self, account: _Account, now: float) -> None:
        lease = account.lease
        idle = now - account.last_use >= self._settings.idle_seconds
        if lease is None:
            if idle and not account.renewing and not account.unanswered and not account.holds_in_flight:
                del self._accounts[account.account_id]
            return
        if lease.in_flight == 0 and not account.renewing and (idle or lease.remaining(now) <= 0):
            self._drop(account, lease)
            if lease.remaining(now) > 0:
                self._spawn(self._return(lease))
            return
        in_use = lease.in_flight > 0 or lease.admitted_since_extension
        if (in_use and not account.renewing and account.unit
                and lease.remaining(now) < lease.lifetime * RENEW_PART_OF_LIFETIME):
            account.renewal = self._spawn(self._renew(account, account.unit, 0))

    def _drop(self, account: _Account, lease: _Lease) -> None:
        lease.ended = True
        if account.lease is lease:
            account.lease = None

    async def _return(self, lease: _Lease) -> None:
        lease.ended = True
        try:
            answer = await self._ledger.return_lease(
                billing_pb2.ReturnLeaseRequest(lease_id=lease.lease_id), self._settings.call_timeout_seconds)
        except ServiceError as error:
            # Billing takes the lease back when it expires.
            log.warning("could not return a lease", extra={"fields": {
                "lease_id": lease.lease_id, "detail": error.message}})
            return
        log.debug("lease returned", extra={"fields": {
            "lease_id": lease.lease_id, "micro_credits": answer.returned_micro_credits}})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Background work runs in a context of its own: it serves every request
        and must not log under the request id of the one that started it."""
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._closed:
            # A background renewal that failed: the next request asks again (and hears why).
            log.warning("lease renewal failed", extra={"fields": {"detail": str(task.exception())}})

    async def close(self, timeout: float) -> None:
        """On a graceful stop, once the requests are done: wait for billing to
        answer every charge (within `timeout`), then return every lease."""
        self._closed = True
        if self._look_over is not None:
            self._look_over.cancel()
        if not await self._ledger.flush(timeout):
            log.error("billing did not answer every charge before the edge stopped")
        leases = [account.lease for account in self._accounts.values() if account.lease is not None]
        for account in self._accounts.values():
            account.lease = None
        returns = [self._spawn(self._return(lease)) for lease in leases]
        pending = [task for task in self._tasks if task not in returns]
        for task in pending:
            task.cancel()
        await asyncio.gather(*returns, *pending, return_exceptions=True)


def _expiry(answer: billing_pb2.LeaseResponse) -> tuple[float, float]:
    """The lease's expiry on this process's monotonic clock, and its lifetime from now."""
    lifetime = max((answer.expires_at.ToDatetime(tzinfo=utc_now().tzinfo) - utc_now()).total_seconds(), 0.0)
    return time.monotonic() + lifetime, lifetime


def _round_up(amount: float, unit: int) -> int:
    if unit <= 0:
        return math.ceil(amount)
    return math.ceil(amount / unit) * unit


def _positive(timeout: float) -> float:
    if timeout <= 0:
        raise ServiceError(Reason.UPSTREAM_UNAVAILABLE, "the request deadline was exceeded")
    return timeout
