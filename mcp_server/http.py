"""Streamable HTTP: authentication in front of the SDK's app, served by uvicorn.

On loopback the SDK's DNS-rebinding protection guards the port against web pages; on any other
interface a way to authenticate is required: the static bearer token (``FLUX_MCP_AUTH_TOKEN``,
compared in constant time, for scripts) and/or OAuth access tokens (``FLUX_MCP_OAUTH_ISSUER``
and ``FLUX_MCP_PUBLIC_URL``: the server is then an OAuth 2.1 resource server, see
:mod:`mcp_server.oauth`). :class:`Authenticate` is plain ASGI middleware in front of the SDK's
app, so it behaves the same under both lines of the SDK: it serves the protected-resource
metadata, answers 401/403/503 with the ``WWW-Authenticate`` challenge the MCP authorization
specification describes, and stores the verified caller's
:class:`~mcp_server.identity.Identity` in the request's scope (``IDENTITY_KEY``). A session is
bound to the identity that opened it: another caller's requests with its id are answered as
for an unknown session.

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
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio

from . import _sdk
from .config import Config, ConfigError, is_loopback
from .identity import IDENTITY_KEY, STATIC_IDENTITY, Identity
from .links import ImageLinks, ImageReader, LinkSigner
from .oauth import OAuthSettings, TokenRefused, TokenVerifier, token_hash
from .ops import ASGIApp, Message, Metrics, Operations, Receive, Scope, Send, respond

logger = logging.getLogger("mcp_server")

MCP_PATH = "/mcp"
#: After the drain, how long open calls have to answer before their connections close.
GRACE_SECONDS = 10
LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
#: Sessions remembered with their owner; past this many, the oldest are forgotten (a forgotten
#: session still works for whoever holds its id, as without OAuth).
MAX_BOUND_SESSIONS = 100_000
SESSION_HEADER = b"mcp-session-id"


def http_options(config: Config) -> _sdk.HTTPOptions:
    """DNS-rebinding protection: loopback names on loopback, else the hosts given (if any).
    The public URL's host is accepted too: a TLS proxy on this machine forwards its Host."""
    public = urlsplit(config.public_url).netloc if config.public_url else None
    if config.allowed_hosts:
        hosts = tuple(config.allowed_hosts)
        origins = tuple(f"{scheme}://{h}" for h in hosts for scheme in ("http", "https"))
    elif is_loopback(config.host):
        hosts, origins = LOOPBACK_HOSTS, LOOPBACK_ORIGINS
    else:  # any Host header: the bearer token (required here) is what protects the server
        hosts, origins = (), ()
    if hosts and public and public not in hosts:
        hosts += (public,)
        origins += tuple(f"{scheme}://{public}" for scheme in ("http", "https"))
    return _sdk.HTTPOptions(
        host=config.host, stateless=config.stateless, allowed_hosts=hosts, allowed_origins=origins
    )


def oauth_settings(config: Config) -> OAuthSettings | None:
    if config.oauth_issuer is None or config.public_url is None:
        return None
    return OAuthSettings(
        issuer=config.oauth_issuer, resource=config.public_url, scopes=config.oauth_scopes
    )


def _digest(value: bytes) -> bytes:
    # Equal-length digests: compare_digest then leaks nothing, not even the token's length.
    return hashlib.sha256(value).digest()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def _quoted(text: str) -> str:
    """A value for a quoted-string of WWW-Authenticate: no quotes, backslashes nor controls."""
    return "".join(c if c.isprintable() and c not in '"\\' else "'" for c in text)


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    await respond(send, status, json.dumps(body).encode(), "application/json", headers)


class Authenticate:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``, the static
    token or (with ``oauth``) an access token ``verifier`` accepts. With OAuth it also serves
    the protected-resource metadata, to anyone (browsers included: CORS)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None = None,
        verifier: TokenVerifier | None = None,
        local_path: str = MCP_PATH,
    ) -> None:
        if token is None and verifier is None:
            raise ValueError("Authenticate needs a static token, a verifier, or both")
        self._app = app
        self._expected = _digest(token.encode()) if token is not None else None
        self._verifier = verifier
        self._oauth = verifier.settings if verifier is not None else None
        self._metadata_paths = (
            self._oauth.metadata_paths(local_path) if self._oauth is not None else frozenset()
        )
        #: session id -> the (issuer, subject) of the caller that opened it.
        self._sessions: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # -- the challenge -------------------------------------------------------------------------

    def _challenge(self, refused: TokenRefused | None) -> bytes:
        if self._oauth is None:
            return b'Bearer realm="flux-mcp"'
        parts = []
        if refused is not None and refused.status != 503:
            parts += [
                f'error="{refused.error}"',
                f'error_description="{_quoted(refused.description)}"',
            ]
        parts.append(f'resource_metadata="{self._oauth.metadata_url}"')
        if self._oauth.scopes:
            parts.append(f'scope="{" ".join(self._oauth.scopes)}"')
        return ("Bearer " + ", ".join(parts)).encode()

    def _missing_description(self) -> str:
        if self._oauth is None:
            return (
                "Missing or wrong bearer token. Send the header "
                "'Authorization: Bearer <the value of FLUX_MCP_AUTH_TOKEN>'."
            )
        also = (
            " (or the server's static token, FLUX_MCP_AUTH_TOKEN)"
            if self._expected is not None
            else ""
        )
        return (
            f"Sign in: this server accepts OAuth access tokens from {self._oauth.issuer}{also}. "
            "MCP clients find how in the WWW-Authenticate header and at "
            f"{self._oauth.metadata_url}."
        )

    async def _refuse(self, scope: Scope, send: Send, refused: TokenRefused | None) -> None:
        client = (scope.get("client") or ("?", 0))[0]
        if refused is None:
            logger.info("refused an unauthenticated request from %s", client)
        else:
            logger.warning(
                "refused a request from %s: %s (token %s)",
                client,
                refused.description,
                scope.get("flux_mcp.token_hash", "?"),
            )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        status = refused.status if refused is not None else 401
        error = refused.error if refused is not None else "unauthorized"
        description = refused.description if refused is not None else self._missing_description()
        headers = [(b"www-authenticate", self._challenge(refused))]
        if refused is not None and refused.retry_after:
            headers.append((b"retry-after", str(refused.retry_after).encode()))
        await _respond(send, status, {"error": error, "error_description": description}, headers)

    # -- who is calling ------------------------------------------------------------------------

    async def _identify(self, scope: Scope) -> Identity | None:
        """The caller's identity; None without a bearer token. Raises TokenRefused."""
        header = _header(scope, b"authorization") or b""
        scheme, _, credentials = header.strip().partition(b" ")
        credentials = credentials.strip()
        bearer = scheme.lower() == b"bearer" and bool(credentials)
        if self._expected is not None:
            # Always compare, so a wrong scheme takes as long as a wrong token.
            same = hmac.compare_digest(_digest(credentials), self._expected)
            if same and bearer:
                return STATIC_IDENTITY
        if not bearer:
            return None
        scope["flux_mcp.token_hash"] = token_hash(credentials)
        if self._verifier is None:
            raise TokenRefused(401, "invalid_token", self._missing_description())
        try:
            token = credentials.decode("ascii")
        except UnicodeDecodeError:
            raise TokenRefused(
                401, "invalid_token", "The bearer token is not a JWT access token."
            ) from None
        return await self._verifier.verify(token)

    # -- the metadata --------------------------------------------------------------------------

    async def _metadata(self, scope: Scope, send: Send) -> None:
        assert self._oauth is not None
        cors = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", b"GET, OPTIONS"),
            (b"access-control-allow-headers", b"mcp-protocol-version, authorization"),
        ]
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [*cors, (b"access-control-max-age", b"86400")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if method not in ("GET", "HEAD"):
            await _respond(
                send,
                405,
                {"error": "method_not_allowed", "error_description": "GET the metadata."},
                [(b"allow", b"GET, HEAD, OPTIONS"), *cors],
            )
            return
        data = json.dumps(self._oauth.metadata()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"cache-control", b"public, max-age=300"),
                    *cors,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data if method == "GET" else b""})

    # -- sessions ------------------------------------------------------------------------------

    def _owner_mismatch(self, scope: Scope, identity: Identity) -> bool:
        session = _header(scope, SESSION_HEADER)
        if session is None:
            return False
        owner = self._sessions.get(session.decode("latin-1"))
        return owner is not None and owner != identity.key

    def _track_sessions(self, scope: Scope, identity: Identity, send: Send) -> Send:
        """``send``, noting the session a response opens (bound to ``identity``) or ends."""
        asked = _header(scope, SESSION_HEADER)
        ending = scope.get("method") == "DELETE" and asked is not None

        async def tracking_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 500))
                if ending and asked is not None and status < 300:
                    self._sessions.pop(asked.decode("latin-1"), None)
                elif asked is None and status < 300:
                    opened = dict(message.get("headers", [])).get(SESSION_HEADER)
                    if opened:
                        self._sessions[bytes(opened).decode("latin-1")] = identity.key
                        while len(self._sessions) > MAX_BOUND_SESSIONS:
                            self._sessions.popitem(last=False)
            await send(message)

        return tracking_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        if self._oauth is not None and scope.get("path") in self._metadata_paths:
            await self._metadata(scope, send)
            return
        try:
            identity = await self._identify(scope)
        except TokenRefused as refused:
            await self._refuse(scope, send, refused)
            return
        if identity is None:
            await self._refuse(scope, send, None)
            return
        if self._owner_mismatch(scope, identity):
            # Someone else's session: as for a session that does not exist (its id is no proof).
            logger.warning("refused a request for another caller's session (%s)", identity)
            await _respond(
                send,
                404,
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": "Session not found"},
                },
                [],
            )
            return
        scope[IDENTITY_KEY] = identity
        logger.debug("request from %s", identity)
        await self._app(scope, receive, self._track_sessions(scope, identity, send))


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


def listen(config: Config) -> socket.socket:
    """The server's socket, listening: before the address is logged, so a client that connects
    as soon as it reads the line (tests, supervisors) is not refused (uvicorn's own listen() on
    it is harmless). A port in use is a :class:`ConfigError`, said in one line."""
    host, port = config.host, config.port
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another program (or "
            "another flux-mcp) uses it: choose another with --port or FLUX_MCP_PORT."
        ) from None
    sock.listen(2048)
    return sock


async def _always_ready() -> None:
    return None


async def serve_http(
    config: Config,
    server: _sdk.SDKServer,
    sock: socket.socket,
    *,
    ready: Callable[[], Awaitable[None]] = _always_ready,
    metrics: Metrics | None = None,
    on_stop: Callable[[], None] | None = None,
    links: tuple[LinkSigner, ImageReader] | None = None,
) -> None:
    """Serve on ``sock`` (:func:`listen`) until SIGINT/SIGTERM. ``on_stop`` runs at the signal,
    before the port closes (the server hands its work over); ``/healthz``, ``/readyz`` and
    ``/metrics`` answer outside the authentication (``mcp_server.ops``), and so do ``links`` to
    images (``/images/...``, signed: ``mcp_server.links``)."""
    import asyncio

    import uvicorn

    app: ASGIApp = NoticeDisconnect(server.http_app())
    settings = oauth_settings(config)
    verifier = TokenVerifier(settings) if settings is not None else None
    if config.auth_token or verifier is not None:
        app = Authenticate(app, token=config.auth_token, verifier=verifier)
    if links is not None:  # a browser's click carries no token: the signature is the credential
        app = ImageLinks(app, *links)
    ops = Operations(app, ready=ready, metrics=metrics)
    app = ops
    loop = asyncio.get_running_loop()
    draining = threading.Event()

    def stopping() -> None:
        ops.draining = True  # /readyz answers 503 from now on
        logger.info(
            "stopping: not ready from now on, the port closes in %g s; calls still waiting "
            "answer with their prediction id",
            config.drain_seconds,
        )
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

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    uv_config = uvicorn.Config(
        app,
        log_config=None,  # our logging: stderr only
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    required = [
        *(["the static bearer token"] if config.auth_token else []),
        *([f"OAuth access tokens from {settings.issuer}"] if settings is not None else []),
    ]
    logger.info(
        "FLUX MCP server listening on http://%s:%s%s (%s%s)",
        shown,
        port,
        MCP_PATH,
        "stateless" if config.stateless else "sessions",
        f", accepting {' or '.join(required)}" if required else "",
    )
    if settings is not None:
        logger.info(
            "OAuth resource %s: tokens must be issued for it by %s%s; metadata at %s",
            settings.resource,
            settings.issuer,
            f" with scope {' '.join(settings.scopes)}" if settings.scopes else "",
            settings.metadata_url,
        )
    try:
        async with anyio.create_task_group() as background:
            if verifier is not None:
                # Keys fetched in the background: an unreachable issuer delays nothing.
                background.start_soon(verifier.warm_up)
            await Server(uv_config).serve(sockets=[sock])
            background.cancel_scope.cancel()
    finally:
        if verifier is not None:
            with anyio.CancelScope(shield=True):
                await verifier.aclose()
