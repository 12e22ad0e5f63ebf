"""Streamable HTTP: a bearer-token check in front of the SDK's app, served by uvicorn.

On loopback the SDK's DNS-rebinding protection guards the port against web pages; on any other
interface a bearer token (``FLUX_MCP_AUTH_TOKEN``) is required, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import _sdk
from .config import Config, is_loopback

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


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


async def serve_http(config: Config, server: _sdk.SDKServer) -> None:
    import uvicorn

    app: ASGIApp = server.http_app()
    if config.auth_token:
        app = BearerAuth(app, config.auth_token)
    sock = _bind(config.host, config.port)
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
    await uvicorn.Server(uv_config).serve(sockets=[sock])
