"""Small fake catalog, billing and provider servicers, served by a real grpc.aio server.

Each fake records the requests it receives and is configured by plain attributes,
so a test states the peer behaviour it needs and then asserts on the calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from functools import partial
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from billing_svc.domain import lease_size
from provider_svc.servicer import image_chunks, is_chunked
from quantized.billing.v1 import billing_pb2, billing_pb2_grpc
from quantized.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from quantized.common.v1 import images_pb2 as common_pb2
from quantized.provider.v1 import provider_pb2, provider_pb2_grpc
from quantized_runtime.call_stream import CallStreamServer
from quantized_runtime.clock import utc_now
from quantized_runtime.errors import Reason, ServiceError, to_call_error
from quantized_runtime.server import RunningServer, create_server
from quantized_runtime.stream_drain import StreamDrain

VALID_KEY = "sk-quantized-test-key"
UNLIMITED_KEY = "sk-quantized-unlimited"
POOR_KEY = "sk-quantized-poor"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

DALL_E_3_PRICE = 640_000


def route(provider: str, model_id: str, priority: int = 1,
          watermark: int = common_pb2.WATERMARK_NONE) -> catalog_pb2.Route:
    return catalog_pb2.Route(provider=provider, model_id=model_id, upstream_model_id=f"up-{model_id}",
                             region="us-east-1" if provider == "bedrock" else "", priority=priority,
                             watermark=watermark)


def image(data: bytes = PNG_BYTES, **fields: Any) -> common_pb2.GeneratedImage:
    return common_pb2.GeneratedImage(image_data=data, mime_type="image/png", **fields)


def flagged_image() -> common_pb2.GeneratedImage:
    return common_pb2.GeneratedImage(flagged=True, flag_reason="content policy")


class FakeCatalog(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self) -> None:
        self.routes: dict[str, list[catalog_pb2.Route]] = {
            "dall-e-3": [route("openai", "dall-e-3")],
            "gpt-image-1": [route("openai", "gpt-image-1", watermark=common_pb2.WATERMARK_C2PA)],
            "amazon.nova-canvas-v1:0": [
                route("bedrock", "amazon.nova-canvas-v1:0", 1, common_pb2.WATERMARK_PROVENANCE),
                route("sandbox", "amazon.nova-canvas-v1:0", 2, common_pb2.WATERMARK_PROVENANCE),
            ],
        }
        self.errors: dict[str, ServiceError] = {
            "gpt-4o": ServiceError(Reason.MODALITY_MISMATCH, "model 'gpt-4o' does not produce images"),
            "dall-e-2": ServiceError(Reason.NO_ACTIVE_PROVIDERS, "model 'dall-e-2' has no active providers"),
        }
        self.quotes: dict[str, catalog_pb2.QuotePriceResponse] = {
            "gpt-image-1": catalog_pb2.QuotePriceResponse(
                max_micro_credits=3_360_000, usage_priced=True,
                usage_price=catalog_pb2.UsagePriceCard(
                    input_per_million_tokens="80000000", output_per_million_tokens="640000000",
                    worst_case_output_per_image="3000000", worst_case_input="360000")),
        }
        self.models = [
            common_pb2.Model(id="gpt-image-1", created=1700000000, owned_by="openai",
                             supported_features=["image_generation"], input_modalities=["text"],
                             output_modalities=["image"], watermark=common_pb2.WATERMARK_C2PA,
                             cost=_struct({"per_token": {"input": 0.000005, "output": 0.00004}}),
                             constraints=common_pb2.ModelConstraints(max_n=1, quality_values=["low", "high"]),
                             providers=["openai"], active=True,
                             options=["background", "output_format", "quality"],
                             output_formats=["jpeg", "png"]),
            common_pb2.Model(id="gpt-4o", created=1700000001, owned_by="openai",
                             supported_features=["chat"], input_modalities=["text"],
                             output_modalities=["text"], providers=["openai"], active=True),
        ]
        self.calls: list[tuple[str, Any]] = []

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def requests(self, method: str) -> list[Any]:
        return [request for name, request in self.calls if name == method]

    async def ResolveRoute(self, request: Any, context: Any) -> Any:
        self.calls.append(("ResolveRoute", request))
        model = request.model
        pinned = bool(request.provider_override)
        provider = request.provider_override
        if "/" in model:
            provider, model = model.split("/", 1)
            pinned = True
        if model in self.errors:
            raise self.errors[model]
        if model not in self.routes:
            raise ServiceError(Reason.MODEL_NOT_FOUND, f"model '{model}' does not exist")
        routes = self.routes[model]
        if pinned:
            routes = [r for r in routes if r.provider == provider]
            if not routes:
                raise ServiceError(Reason.PROVIDER_NOT_OFFERED,
                                   f"provider '{provider}' does not offer model '{model}'")
        return catalog_pb2.ResolveRouteResponse(model_id=model, routes=routes, pinned=pinned)

    async def QuotePrice(self, request: Any, context: Any) -> Any:
        self.calls.append(("QuotePrice", request))
        quote = self.quotes.get(request.model_id)
        if quote is not None:
            return quote
        return catalog_pb2.QuotePriceResponse(max_micro_credits=DALL_E_3_PRICE * request.n,
                                              per_image_micro_credits=DALL_E_3_PRICE)

    async def ListModels(self, request: Any, context: Any) -> Any:
        self.calls.append(("ListModels", request))
        return catalog_pb2.ListModelsResponse(models=self.models)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    holder = struct_pb2.Struct()
    holder.update(value)
    return holder


@dataclass
class Account:
    """`balance` is what the account can still spend (holds and leases already
    taken out, as in billing); `held` what they set aside."""

    account_id: str
    balance: int
    unlimited: bool = False
    held: int = 0
    # What billing's Authenticate hands the edge (0: no limit).
    key_id: str = ""
    key_limits: billing_pb2.RateLimits = field(default_factory=billing_pb2.RateLimits)
    account_limits: billing_pb2.RateLimits = field(default_factory=billing_pb2.RateLimits)

    @property
    def spendable(self) -> int | None:
        return None if self.unlimited else self.balance + self.held


@dataclass
class FakeLease:
    account: Account
    amount: int
    charged: int = 0
    open: bool = True

    @property
    def unspent(self) -> int:
        return self.amount - self.charged


class FakeBilling(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, drain: StreamDrain) -> None:
        self.drain = drain
        self.accounts = {
            VALID_KEY: Account("acct_valid", 100_000_000),
            UNLIMITED_KEY: Account("acct_unlimited", 0, unlimited=True),
            POOR_KEY: Account("acct_poor", 10),
        }
        self.holds: dict[str, tuple[Account, int]] = {}
        self.leases: dict[str, FakeLease] = {}
        # Charges applied, by (account id, request id): the first answer, as billing keeps it.
        self.charges: dict[tuple[str, str], billing_pb2.ChargeResponse] = {}
        self.lease_ttl_seconds = 30.0
        self.lease_share = Fraction(1, 2)
        self.calls: list[tuple[str, Any]] = []
        self._ids = itertools.count(1)
        # Ledger stream behaviour: a pause before each answer, an event each
        # answer waits for when set, and a batch count after which the stream is
        # aborted instead of answered.
        self.ledger_delay_seconds = 0.0
        self.ledger_gate: asyncio.Event | None = None
        self.ledger_abort_after_batches: int | None = None
        self.ledger_streams_opened = 0
        # Ledger streams whose caller closed its side.
        self.ledger_streams_closed = 0
        # When set, every Settle is refused with it (and writes nothing).
        self.settle_error: ServiceError | None = None

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def requests(self, method: str) -> list[Any]:
        return [request for name, request in self.calls if name == method]

    async def Authenticate(self, request: Any, context: Any) -> Any:
        self.calls.append(("Authenticate", request))
        account = self.accounts.get(request.token)
        if account is None:
            raise ServiceError(Reason.UNAUTHENTICATED, "invalid API key")
        return billing_pb2.AuthenticateResponse(account_id=account.account_id, unlimited=account.unlimited,
                                                key_id=account.key_id, key_limits=account.key_limits,
                                                account_limits=account.account_limits)

    def _account(self, account_id: str) -> Account:
        return next(a for a in self.accounts.values() if a.account_id == account_id)

    async def Reserve(self, request: Any, context: Any) -> Any:
        self.calls.append(("Reserve", request))
        account = self._account(request.account_id)
        if not account.unlimited and request.amount_micro_credits > account.balance:
            raise ServiceError(Reason.INSUFFICIENT_CREDITS, "insufficient credits for this request")
        if not account.unlimited:
            account.balance -= request.amount_micro_credits
            account.held += request.amount_micro_credits
        hold_id = f"hold_{next(self._ids)}"
        self.holds[hold_id] = (account, request.amount_micro_credits)
        return billing_pb2.ReserveResponse(hold_id=hold_id)

    async def Settle(self, request: Any, context: Any) -> Any:
        self.calls.append(("Settle", request))
        if self.settle_error is not None:
            raise self.settle_error
        account, held = self.holds.pop(request.hold_id)
        charged = min(request.amount_micro_credits, held)
        if account.unlimited:
            return billing_pb2.SettleResponse(charged_micro_credits=charged)
        account.balance += held - charged
        account.held -= held
        return billing_pb2.SettleResponse(charged_micro_credits=charged, balance_micro_credits=account.balance,
                                          spendable_micro_credits=account.spendable)

    async def Release(self, request: Any, context: Any) -> Any:
        self.calls.append(("Release", request))
        account, held = self.holds.pop(request.hold_id)
        if not account.unlimited:
            account.balance += held
            account.held -= held
        return billing_pb2.ReleaseResponse()

    # Credit leases, sized by billing's own rule (billing_svc.domain.lease_size).

    def _grant(self, account: Account, minimum: int, want: int, unit: int) -> int:
        size = lease_size(None if account.unlimited else account.balance, self.lease_share, minimum, want, unit)
        if size is None:
            raise ServiceError(Reason.INSUFFICIENT_CREDITS, "insufficient credits for a lease")
        if not account.unlimited:
            account.balance -= size
            account.held += size
        return size

    def _lease_response(self, lease_id: str) -> billing_pb2.LeaseResponse:
        lease = self.leases[lease_id]
        expires = timestamp_pb2.Timestamp()
        expires.FromDatetime(utc_now() + timedelta(seconds=self.lease_ttl_seconds))
        return billing_pb2.LeaseResponse(lease_id=lease_id, amount_micro_credits=lease.amount,
                                         charged_micro_credits=lease.charged, expires_at=expires,
                                         spendable_micro_credits=lease.account.spendable)

    async def AcquireLease(self, request: Any) -> Any:
        self.calls.append(("AcquireLease", request))
        account = self._account(request.account_id)
        size = self._grant(account, request.min_micro_credits, request.want_micro_credits,
                           request.unit_micro_credits)
        lease_id = f"lease_{next(self._ids)}"
        self.leases[lease_id] = FakeLease(account, size)
        return self._lease_response(lease_id)

    async def ExtendLease(self, request: Any) -> Any:
        self.calls.append(("ExtendLease", request))
        lease = self.leases[request.lease_id]
        if not lease.open:
            raise ServiceError(Reason.HOLD_CLOSED, "lease closed")
        if request.want_micro_credits:
            lease.amount += self._grant(lease.account, request.min_micro_credits, request.want_micro_credits,
                                        request.unit_micro_credits)
        return self._lease_response(request.lease_id)

    async def Charge(self, request: Any) -> Any:
        self.calls.append(("Charge", request))
        account = self._account(request.account_id)
        key = (request.account_id, request.request_id)
        if key not in self.charges:
            lease = self.leases.get(request.lease_id)
            amount = request.amount_micro_credits
            from_lease = (lease is not None and lease.open and lease.account is account
                          and lease.unspent >= amount)
            if from_lease:
                lease.charged += amount
                account.held -= amount
            elif not account.unlimited:
                account.balance -= amount
            self.charges[key] = billing_pb2.ChargeResponse(
                charged_micro_credits=amount, late=not from_lease and amount > 0 and bool(request.lease_id))
        answer = billing_pb2.ChargeResponse()
        answer.CopyFrom(self.charges[key])
        if account.spendable is not None:
            answer.spendable_micro_credits = account.spendable
        return answer

    async def ReturnLease(self, request: Any) -> Any:
        self.calls.append(("ReturnLease", request))
        lease = self.leases[request.lease_id]
        if not lease.open:
            raise ServiceError(Reason.HOLD_CLOSED, "lease closed")
        lease.open = False
        if not lease.account.unlimited:
            lease.account.balance += lease.unspent
            lease.account.held -= lease.unspent
        return billing_pb2.ReturnLeaseResponse(returned_micro_credits=lease.unspent,
                                               spendable_micro_credits=lease.account.spendable)

    def open_leases(self) -> list[FakeLease]:
        return [lease for lease in self.leases.values() if lease.open]

    async def Ledger(self, request_iterator: Any, context: Any) -> Any:
        """Each batched operation through its handler above (named after the
        operation, not an RPC: billing serves these on Ledger only), in order; the
        stream's lifecycle is billing's (quantized_runtime.call_stream)."""
        stream = CallStreamServer(context, self.drain, billing_pb2.LedgerResponse(draining=True))

        async def on_batch(batch: Any) -> None:
            self.calls.append(("Ledger", batch))
            if self.ledger_abort_after_batches is not None and self.count("Ledger") > self.ledger_abort_after_batches:
                self.ledger_abort_after_batches = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "billing went away")
            stream.start(self._answer_batch(batch, stream))

        def closed() -> None:
            self.ledger_streams_closed += 1

        self.ledger_streams_opened += 1
        await stream.serve(_until_closed(request_iterator, closed), on_batch)

    async def _answer_batch(self, batch: Any, stream: CallStreamServer[Any, Any]) -> None:
        await asyncio.sleep(self.ledger_delay_seconds)
        if self.ledger_gate is not None:
            await self.ledger_gate.wait()
        handlers = {"reserve": partial(self.Reserve, context=None), "settle": partial(self.Settle, context=None),
                    "release": partial(self.Release, context=None), "acquire_lease": self.AcquireLease,
                    "extend_lease": self.ExtendLease, "charge": self.Charge, "return_lease": self.ReturnLease}
        results = []
        for operation in batch.operations:
            kind = operation.WhichOneof("operation")
            try:
                answer = await handlers[kind](getattr(operation, kind))
            except ServiceError as error:
                results.append(billing_pb2.LedgerResult(error=to_call_error(error)))
            else:
                results.append(billing_pb2.LedgerResult(**{kind: answer}))
        await stream.write(billing_pb2.LedgerResponse(batch_id=batch.batch_id, results=results))


async def _until_closed(requests: AsyncIterator[Any], closed: Callable[[], None]) -> AsyncIterator[Any]:
    """The stream's requests; `closed()` runs once the caller has closed its side."""
    async for message in requests:
        yield message
    closed()


ProviderBehaviour = provider_pb2.GenerateResponse | ServiceError | Callable[[Any], Any]


@dataclass
class FakeProvider(provider_pb2_grpc.ProviderServiceServicer):
    """GenerateStream, answering each call through `behaviour`."""

    # GenerateStream tells the caller when the server stops, as provider_svc's does.
    drain: StreamDrain

    # Keyed by provider slug; the default answers with `n` images.
    behaviour: dict[str, ProviderBehaviour] = field(default_factory=dict)
    calls: list[Any] = field(default_factory=list)
    # The time each call had left when it arrived (the propagated deadline).
    time_remaining: list[float] = field(default_factory=list)
    # GenerateStream call ids whose cancel arrived while the call was running.
    cancelled: list[int] = field(default_factory=list)
    streams_opened: int = 0
    # GenerateStreams whose caller closed its side.
    streams_closed: int = 0
    # A count of stream calls after which the next one aborts its stream instead.
    stream_abort_after_calls: int | None = None

    async def GenerateStream(self, request_iterator: Any, context: Any) -> None:
        """A task per call; a cancel stops it; the stream's lifecycle is
        provider_svc's (quantized_runtime.call_stream)."""
        stream = CallStreamServer(context, self.drain, provider_pb2.GenerateStreamResponse(draining=True))
        running: dict[int, asyncio.Task[None]] = {}

        async def on_message(message: Any) -> None:
            if message.cancel:
                if message.call_id in running:
                    running[message.call_id].cancel()
                return
            if self.stream_abort_after_calls is not None and len(self.calls) >= self.stream_abort_after_calls:
                self.stream_abort_after_calls = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "provider_svc went away")
            self.calls.append(message.request)
            self.time_remaining.append(message.timeout_seconds)
            task = running[message.call_id] = stream.start(self._answer_call(message, stream))
            task.add_done_callback(lambda _, call_id=message.call_id: running.pop(call_id, None))

        def closed() -> None:
            self.streams_closed += 1

        self.streams_opened += 1
        await stream.serve(_until_closed(request_iterator, closed), on_message)

    async def _answer_call(self, message: Any, stream: CallStreamServer[Any, Any]) -> None:
        try:
            answers = _stream_answers(message.call_id, await self._answer(message.request))
        except asyncio.CancelledError:
            self.cancelled.append(message.call_id)
            raise
        except ServiceError as error:
            answers = [provider_pb2.GenerateStreamResponse(call_id=message.call_id, error=to_call_error(error))]
        except Exception:
            answers = [provider_pb2.GenerateStreamResponse(call_id=message.call_id, error=to_call_error(
                ServiceError(Reason.INTERNAL, "internal error (request id fake)")))]
        for answer in answers:
            await stream.write(answer)

    async def _answer(self, request: Any) -> provider_pb2.GenerateResponse:
        behaviour = self.behaviour.get(request.provider)
        if callable(behaviour):
            behaviour = await behaviour(request)
        if isinstance(behaviour, ServiceError):
            raise behaviour
        if behaviour is not None:
            return behaviour
        return provider_pb2.GenerateResponse(
            created=1777975004,
            images=[image(revised_prompt="revised: " + request.params.prompt, watermark=request.watermark)
                    for _ in range(request.params.n)])


def _copy(response: provider_pb2.GenerateResponse) -> provider_pb2.GenerateResponse:
    copy = provider_pb2.GenerateResponse()
    copy.CopyFrom(response)
    return copy


def _stream_answers(call_id: int, response: provider_pb2.GenerateResponse) -> list[Any]:
    """As provider_svc answers: the chunks of large images, then the response without their bytes."""
    answers = []
    response = _copy(response)  # the configured behaviour may answer again
    for index, generated in enumerate(response.images):
        if is_chunked(generated.image_data):
            answers += image_chunks(call_id, index, generated.image_data)
            generated.image_data = b""
    answers.append(provider_pb2.GenerateStreamResponse(call_id=call_id, response=response))
    return answers


@dataclass
class Peers:
    catalog: FakeCatalog
    billing: FakeBilling
    provider: FakeProvider
    server: RunningServer
    drain: StreamDrain

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


async def start_fake_peers(address: str = "127.0.0.1:0") -> Peers:
    """`address` may be another running peers' own: their server then shares its port."""
    drain = StreamDrain()
    catalog, billing, provider = FakeCatalog(), FakeBilling(drain), FakeProvider(drain)
    server = await create_server(
        address,
        [lambda s: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(catalog, s),
         lambda s: billing_pb2_grpc.add_BillingServiceServicer_to_server(billing, s),
         lambda s: provider_pb2_grpc.add_ProviderServiceServicer_to_server(provider, s)],
        ["quantized.catalog.v1.CatalogService", "quantized.billing.v1.BillingService",
         "quantized.provider.v1.ProviderService"],
        64 * 1024 * 1024,
        drainers=[drain.drain],
    )
    return Peers(catalog, billing, provider, server, drain)
