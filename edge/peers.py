"""The edge's three peers: one long-lived grpc.aio channel each, opened on the running loop,
billing's batched Ledger stream on billing's channel, and the multiplexed GenerateStream
on provider_svc's."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from quantized.billing.v1 import billing_pb2_grpc
from quantized.catalog.v1 import catalog_pb2_grpc
from quantized.provider.v1 import provider_pb2_grpc
from quantized_runtime.channels import open_channel
from quantized_runtime.tls import TlsFiles

from edge.generate_client import GenerateClient
from edge.ledger_client import LedgerClient


@dataclass
class Peers:
    catalog: catalog_pb2_grpc.CatalogServiceStub
    billing: billing_pb2_grpc.BillingServiceStub
    ledger: LedgerClient
    provider: GenerateClient
    channels: tuple[grpc.aio.Channel, ...]

    @classmethod
    def open(cls, catalog_addr: str, billing_addr: str, provider_addr: str,
             max_message_bytes: int, tls: TlsFiles | None = None) -> Peers:
        """With `tls`, each channel presents the edge's certificate and accepts only
        the certificate of the service it means to reach."""
        catalog = open_channel(catalog_addr, max_message_bytes, tls=tls, peer="catalog")
        billing = open_channel(billing_addr, max_message_bytes, tls=tls, peer="billing")
        provider = open_channel(provider_addr, max_message_bytes, tls=tls, peer="provider")
        billing_stub = billing_pb2_grpc.BillingServiceStub(billing)
        return cls(
            catalog=catalog_pb2_grpc.CatalogServiceStub(catalog),
            billing=billing_stub,
            ledger=LedgerClient(billing_stub),
            provider=GenerateClient(provider_pb2_grpc.ProviderServiceStub(provider)),
            channels=(catalog, billing, provider),
        )

    # Opened in this order by `open`; the readiness watch probes these two.
    @property
    def billing_channel(self) -> grpc.aio.Channel:
        return self.channels[1]

    @property
    def provider_channel(self) -> grpc.aio.Channel:
        return self.channels[2]

    async def close(self) -> None:
        await self.ledger.close()
        await self.provider.close()
        for channel in self.channels:
            await channel.close()
