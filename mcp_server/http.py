"""Streamable HTTP: a bearer-token check in front of the SDK's app, served by uvicorn.

On loopback the SDK's DNS-rebinding protection guards the port against web pages; on any other
interface a bearer token (``FLUX_MCP_AUTH_TOKEN``) is required, compared in constant time.

A client that drops the connection mid-call without ``notifications/cancelled`` (the TypeScript
SDK's ``abort()`` then ``close()``) ends the call as a cancel would: :class:`NoticeDisconnect`
marks each request's scope with an event that its connection's end sets, and the tool call
carried by that request is canceled when it fires (``_sdk``), so the prediction it owns is
canceled upstream, as over stdio. (Under protocol 2026-07-28 the SDK itself does the same.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from . import _sdk
from .config import Config, is_loopback
from .ops import Metrics, Operations

logger = logging.getLogger("mcp_server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MCP_PATH = "/mcp"
LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")


def http_options(config: Config) -> _sdk.HTTPOptions:
    """DNS-rebinding protection: loopback names on loopback, else the hosts given (if any)."""
    if config.allowed_hosts:
        hosts = tuple(config.allowed_hosts)
        origins = tuple(f"{scheme}://{h}" for h in hosts for scheme in ("http", "https"))
    elif is_loopback(config.host):
        hosts, origins = LOOPBACK_HOSTS, LOOPBACK_ORIGINS
    else:  # any Host header: the bearer token (required here) is what protects the server
        hosts, origins = (), ()
    return _sdk.HTTPOptions(
        host=config.host, stateless=config.stateless, allowed_hosts=hosts, allowed_origins=origins
    )


def _digest(value: bytes) -> bytes:
    # Equal-length digests: compare_digest then leaks nothing, not even the token's length.
    return hashlib.sha256(value).digest()


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = _digest(token.encode())

    def _authorized(self, scope: Scope) -> bool:
        header = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                header = value
                break
        scheme, _, credentials = header.strip().partition(b" ")
        # Always compare, so a wrong scheme takes as long as a wrong token.
        same = hmac.compare_digest(_digest(credentials.strip()), self._expected)
        return same and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._authorized(scope):
            client = scope.get("client") or ("?", 0)
            logger.warning("refused an unauthenticated request from %s", client[0])
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = json.dumps(
                {
                    "error": "unauthorized",
                    "error_description": "Missing or wrong bearer token. Send the header "
                    "'Authorization: Bearer <the value of FLUX_MCP_AUTH_TOKEN>'.",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="flux-mcp"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


class NoticeDisconnect:
    """ASGI middleware: ``scope[CLIENT_GONE_KEY]`` is an event set once the request's
    connection is gone (whoever reads ``receive`` sees ``http.disconnect``: the SSE response
    listens for it)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        gone = anyio.Event()
        scope[_sdk.CLIENT_GONE_KEY] = gone
        responded = False

        async def noticing_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect" and not responded:
                gone.set()
            return message

        async def noticing_send(message: Message) -> None:
            nonlocal responded
            await send(message)
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                responded = True  # a finished response's "disconnect" is no client going away

        await self._app(scope, noticing_receive, noticing_send)


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


async def _always_ready() -> None:
    return None


async def serve_http(
    config: Config,
    server: _sdk.SDKServer,
    *,
    ready: Callable[[], Awaitable[None]] = _always_ready,
    metrics: Metrics | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. ``on_stop`` runs at the signal, before the port closes (the
    server hands its work over); ``/healthz``, ``/readyz`` and ``/metrics`` answer outside the
    authentication (``mcp_server.ops``)."""
    import asyncio

    import uvicorn

    app: ASGIApp = NoticeDisconnect(server.http_app())
    if config.auth_token:
        app = BearerAuth(app, config.auth_token)
    ops = Operations(app, ready=ready, metrics=metrics)
    app = ops
    loop = asyncio.get_running_loop()
    draining = threading.Event()

    def stopping() -> None:
        ops.draining = True  # /readyz answers 503 from now on
        if on_stop is not None:
            on_stop()

    class Server(uvicorn.Server):
        """uvicorn's server, but a signal ends it gracefully and is not raised again after
        (uvicorn's own re-raises it, which would kill the process before it hands over)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if draining.is_set():  # a second signal: stop now
                self.should_exit = self.force_exit = True
                return
            draining.set()
            # Not ready first, then the port closes: a load balancer checking /readyz stops
            # sending new requests here before they could be refused.
            loop.call_soon_threadsafe(stopping)
            loop.call_soon_threadsafe(loop.call_later, config.drain_seconds, self._exit)

        def _exit(self) -> None:
            self.should_exit = True

    sock = _bind(config.host, config.port)
    # Listening before the address is logged: a client that connects as soon as it reads the
    # line (tests, supervisors) must not be refused. uvicorn's own listen() on it is harmless.
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    uv_config = uvicorn.Config(
        app,
        log_config=None,  # our logging: stderr only
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    logger.info(
        "FLUX MCP server listening on http://%s:%s%s (%s%s)",
        shown,
        port,
        MCP_PATH,
        "stateless" if config.stateless else "sessions",
        ", bearer token required" if config.auth_token else "",
    )
    await Server(uv_config).serve(sockets=[sock])
