"""The bare hop the router is judged against (issue 14): one Python process, an
aiohttp server that forwards each request's body to the upstream with a pooled
aiohttp client and returns the upstream's status and body. No parsing, no auth,
no money: what any Python proxy pays for one hop.

Run: python bench/passthrough_proxy.py PORT UPSTREAM_PORT; prints "ready".
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import ClientSession, TCPConnector, web


async def serve(port: int, upstream_port: int) -> None:
    upstream = f"http://127.0.0.1:{upstream_port}"
    # Same client settings as provider_svc's OpenAI adapter (docs/benchmarks.md).
    session = ClientSession(connector=TCPConnector(limit=100))

    async def forward(request: web.Request) -> web.Response:
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() in ("authorization", "content-type")}
        async with session.post(upstream + request.path, data=await request.read(), headers=headers) as reply:
            return web.Response(status=reply.status, body=await reply.read(), content_type=reply.content_type)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{path:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("upstream_port", type=int)
    args = parser.parse_args()
    # On uvloop when installed, as the router's services run (quantized_runtime.event_loop).
    try:
        import uvloop
    except ImportError:
        uvloop = None
    (uvloop.run if uvloop else asyncio.run)(serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
