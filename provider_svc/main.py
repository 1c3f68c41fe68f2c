"""provider_svc entry point: `start` for tests and embedding, `main` for the process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from provider_svc.adapters import build_adapters
from provider_svc.service import Dispatcher
from provider_svc.servicer import SERVICE_NAMES, registrars
from provider_svc.settings import ProviderSettings
from quantized_runtime.event_loop import run_service
from quantized_runtime.logging import configure_logging
from quantized_runtime.metrics import metrics_served
from quantized_runtime.server import RunningServer, create_server, serve_until_signal
from quantized_runtime.settings import load_settings
from quantized_runtime.tracing import tracing_session
from quantized_runtime.stream_drain import StreamDrain


@dataclass
class RunningProvider:
    server: RunningServer
    dispatcher: Dispatcher

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace_seconds: float) -> None:
        await self.server.stop(grace_seconds)
        await self.dispatcher.close()


async def start(settings: ProviderSettings) -> RunningProvider:
    """Build the adapters (no credentials needed), start serving, return the handle."""
    dispatcher = Dispatcher(build_adapters(settings), settings)
    drain = StreamDrain()
    try:
        server = await create_server(
            settings.listen,
            registrars(dispatcher, drain),
            SERVICE_NAMES,
            settings.max_message_bytes,
            drainers=[drain.drain],
            tls=settings.tls_files(),
            reflection_enabled=settings.reflection,
            health_address=settings.health_listen,
        )
    except BaseException:
        await dispatcher.close()
        raise
    return RunningProvider(server, dispatcher)


async def _serve(settings: ProviderSettings) -> None:
    with metrics_served(settings.metrics_listen, "provider_svc"):
        running = await start(settings)
        await serve_until_signal(running.server, settings.shutdown_grace_seconds,
                                 on_stop=running.dispatcher.close, name="provider_svc")


# Client libraries that log every upstream request at INFO; the service logs one line per RPC.
_CHATTY_LOGGERS = ("httpx", "httpcore", "google_genai", "botocore", "urllib3")


def main() -> None:
    settings = load_settings(ProviderSettings)
    configure_logging(settings.log_level)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    with tracing_session("quantized-provider", settings):
        run_service(_serve(settings))


if __name__ == "__main__":
    main()
