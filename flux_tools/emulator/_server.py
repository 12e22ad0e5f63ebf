"""HTTP/1.1 on asyncio streams and h11: connections, routing, auth, limits, faults, held creates.

One coroutine per connection and none per prediction, so thousands of held requests and
predictions in flight cost only sockets and small objects.

Routes (``{prefix}`` is ``/v1`` unless configured; the official Python client always uses
``/v1`` on the origin it is given, the npm client the base it is given):

    POST {prefix}/models/{owner}/{name}/predictions   create (the official models' form)
    POST {prefix}/predictions                         create by ``version``
    GET  {prefix}/predictions                         list, newest first, paginated
    GET  {prefix}/predictions/{id}                    get
    POST {prefix}/predictions/{id}/cancel             cancel
    GET  {prefix}/models, {prefix}/models/{o}/{n}     models, with latest_version.openapi_schema
    GET  {prefix}/models/{o}/{n}/versions[/{id}]      versions
    GET  {prefix}/account                             accounts.current
    POST {prefix}/files, GET {prefix}/files[/{id}]    the Files API (uploaded inputs), DELETE
    GET  {prefix}/webhooks/default/secret             the key webhooks are signed with
    GET  /v1/files/stream/{id}                        server-sent events (urls.stream, no auth)
    GET  /files/{id}/{name}                           output files (no auth, like a CDN)
    GET  /p/{id}                                      urls.web: a small HTML page
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import html
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode

import h11
import httpx2

from . import _catalog, _images, _uploads, _webhooks
from ._faults import LIST_ACTIONS, Endpoint, Fault, FaultBook
from ._ratelimit import Bucket, Decision, Limiter, throttled_detail
from ._state import (
    STREAM_PATH,
    TERMINAL,
    WEB_PATH,
    CreateRequest,
    InputImages,
    Prediction,
    Problem,
    RecordedRequest,
    Stats,
    Store,
    parse_body,
    parse_create,
    parse_duration,
    parse_input,
    status_phrase,
)

logger = logging.getLogger("flux_tools.emulator")

Origin = Literal["api", "foreign"]
_MAX_BODY = 32 * 1024 * 1024  # data: URI image inputs make bodies large, but not unbounded
_READ_SIZE = 65536
_MAX_WAIT = 60
_PAGE_SIZE = 100
_STREAM_TICK = 0.25  # how often a stream looks at its prediction while nothing is due
_UNAUTHENTICATED = "You did not pass a valid authentication token"
#: Who ``GET /v1/account`` says the token belongs to.
ACCOUNT = {
    "type": "user",
    "username": "flux-emulator",
    "name": "flux-tools emulator",
    "github_url": None,
    "avatar_url": None,
}


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: A streamed body (server-sent events): chunks sent as they come, ``body`` is ignored.
    stream: AsyncGenerator[bytes, None] | None = None

    @classmethod
    def json(
        cls, status: int, doc: dict[str, Any], content_type: str = "application/json"
    ) -> Reply:
        return cls(status, json.dumps(doc).encode(), content_type)

    @classmethod
    def problem(cls, problem: Problem, headers: list[tuple[str, str]] | None = None) -> Reply:
        reply = cls.json(problem.status, problem.body(), "application/problem+json")
        reply.headers = list(headers or [])
        return reply


class _Abort(Exception):
    """Ends a request early: with ``reply``, or with no answer at all (reply None: drop)."""

    def __init__(self, reply: Reply | None) -> None:
        super().__init__()
        self.reply = reply


@dataclass
class _Incoming:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, list[str]] = field(default_factory=dict)
    #: Headers every answer to this request carries (the rate limit's), errors included.
    extra_headers: list[tuple[str, str]] = field(default_factory=list)


def fault_reply(fault: Fault) -> Reply:
    status = fault.status or 500
    extra: dict[str, Any] = {}
    headers = []
    if fault.retry_after is not None:
        extra["retry_after"] = fault.retry_after
        headers.append(("retry-after", f"{fault.retry_after:g}"))
    if status == 429:
        detail = throttled_detail(fault.retry_after if fault.retry_after is not None else 30)
    else:
        detail = f"Emulated fault: {status_phrase(status)}."
    return Reply.problem(Problem(status, detail, **extra), headers)


def _sse(event: str, data: str, event_id: int) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\nid: {event_id}\n{lines}\n".encode()


class Server:
    """Both listeners (the API's origin and the "foreign" one) and the request handlers."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: _catalog.Catalog,
        stats: Stats,
        faults: FaultBook,
        limiter: Limiter,
        prefix: str,
        token: str | None,
        honor_prefer_wait: bool,
        early_output: bool,
        blocking_answers: Literal["replicate", "final"],
        model_endpoint: bool = True,
        page_size: int = _PAGE_SIZE,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._stats = stats
        self._faults = faults
        self._limiter = limiter
        self._prefix = prefix
        self._token = token
        self._honor_prefer_wait = honor_prefer_wait
        self._early_output = early_output
        self._blocking_answers = blocking_answers
        self._model_endpoint = model_endpoint
        self._page_size = page_size
        #: Set before listening for HTTPS.
        self.ssl_context: ssl.SSLContext | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._uploads = _uploads.Uploads()
        self.signer = _webhooks.Signer()
        self.deliveries = _webhooks.Deliveries()
        # Held creates and streams waiting on a prediction: a cancel wakes them.
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.started_at = ""  # the versions' created_at, set once listening

    async def listen(self, host: str, port: int) -> tuple[int, int]:
        """Bind the API listener on ``port`` and the foreign one on a free port; their ports."""
        ports = []
        listeners: tuple[tuple[Origin, int], ...] = (("api", port), ("foreign", 0))
        for origin, wanted in listeners:
            server = await asyncio.start_server(
                partial(self._connection, origin), host, wanted, backlog=4096, ssl=self.ssl_context
            )
            self._servers.append(server)
            ports.append(int(server.sockets[0].getsockname()[1]))
        self.started_at = self._store.stamp(time.monotonic())
        return ports[0], ports[1]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    # connections -------------------------------------------------------------------------------

    async def _connection(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                incoming = await self._read_request(conn, reader, writer, origin)
                if incoming is None:
                    return
                request, record = incoming
                reply = await self._handle(request)
                record.status = reply.status if reply is not None else None
                logger.info(
                    "%s %s %s -> %s (%.3fs)",
                    origin,
                    request.method,
                    request.path,
                    record.status or "dropped",
                    time.monotonic() - record.time,
                )
                if reply is None:
                    return  # drop: close without a word, as a crashed gateway would
                await self._send(conn, writer, reply)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            self._bad_request(conn, writer, exc.error_status_hint)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels us. Ending quietly matters on 3.11, whose stream callback
            # calls task.exception() on the finished handler and would log the cancellation.
            pass
        except Exception:
            logger.exception("emulator connection failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        origin: Origin,
    ) -> tuple[_Incoming, RecordedRequest] | None:
        head: h11.Request | None = None
        arrived = 0.0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                    )
                conn.receive_data(await reader.read(_READ_SIZE))
            elif isinstance(event, h11.Request):
                head, arrived = event, time.monotonic()
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise h11.RemoteProtocolError("body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                headers: dict[str, str] = {}
                for name, value in head.headers:
                    key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                target = head.target.decode("latin-1")
                path, _, query = target.partition("?")
                method = head.method.decode("latin-1")
                record = RecordedRequest(method, path, origin, headers, None, arrived)
                self._stats.record(record)
                return _Incoming(method, path, headers, bytes(body), parse_qs(query)), record
            else:  # ConnectionClosed, or PAUSED which a served cycle never leaves us in
                return None

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.stream is None:
            self._write(conn, writer, reply)
            await writer.drain()
            return
        headers = [
            ("content-type", reply.content_type),
            ("cache-control", "no-store"),
            ("server", "flux-tools-emulator"),
            *reply.headers,
        ]
        response = h11.Response(
            status_code=reply.status, headers=headers, reason=status_phrase(reply.status).encode()
        )
        writer.write(conn.send(response) or b"")
        await writer.drain()
        try:
            async for chunk in reply.stream:
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
        finally:
            await reply.stream.aclose()  # the client may have gone: stop watching at once
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    @staticmethod
    def _write(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        empty = reply.status == 204  # No Content: no body, no body headers
        headers = [
            *([] if empty else [("content-type", reply.content_type)]),
            *([] if empty else [("content-length", str(len(reply.body)))]),
            ("server", "flux-tools-emulator"),
            *reply.headers,
        ]
        response = h11.Response(
            status_code=reply.status, headers=headers, reason=status_phrase(reply.status).encode()
        )
        events = [response, h11.EndOfMessage()]
        if not empty:
            events.insert(1, h11.Data(data=reply.body))
        for event in events:
            writer.write(conn.send(event) or b"")

    def _bad_request(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int) -> None:
        problem = Problem(status, "Malformed HTTP request.")
        reply = Reply.problem(problem, [("connection", "close")])
        with contextlib.suppress(h11.LocalProtocolError):  # too late to answer: just close
            self._write(conn, writer, reply)

    # routing -----------------------------------------------------------------------------------

    async def _handle(self, request: _Incoming) -> Reply | None:
        try:
            endpoint, handler, args = self._route(request.method, request.path)
            self._stats.count(endpoint)
            reply: Reply | None = await handler(request, *args)
        except Problem as problem:
            reply = Reply.problem(problem, problem.headers)
        except _Abort as abort:
            reply = abort.reply
        if reply is not None:
            reply.headers.extend(request.extra_headers)
        return reply

    def _route(self, method: str, path: str) -> tuple[Endpoint, Any, tuple[str, ...]]:
        """The endpoint, its handler and its path arguments; a problem for anything else."""
        parts = path.strip("/").split("/")
        if path.startswith(STREAM_PATH) and len(parts) == 4 and parts[3]:
            return self._allow(method, {"GET": ("stream", self._stream)}, parts[3:])
        if path.startswith("/files/") and len(parts) == 3 and all(parts):
            return self._allow(method, {"GET": ("file", self._file)}, parts[1:])
        if path.startswith(WEB_PATH) and len(parts) == 2 and parts[1]:
            return self._allow(method, {"GET": ("web", self._web)}, parts[1:])
        if path.startswith(self._prefix + "/"):
            api = path[len(self._prefix) + 1 :].rstrip("/").split("/")
            route = self._api_route(api)
            if route is not None:
                return self._allow(method, route[0], route[1])
        raise Problem(
            404,
            f"No such endpoint: {method} {path}. The emulator serves, under {self._prefix or '/'}:"
            " /models/{owner}/{name}/predictions, /predictions[/{id}[/cancel]], "
            "/models[/{owner}/{name}[/versions[/{id}]]], /account.",
        )

    def _api_route(
        self, api: list[str]
    ) -> tuple[dict[str, tuple[Endpoint, Any]], list[str]] | None:
        n = len(api)
        if not all(api):
            return None
        if api[0] == "predictions":
            if n == 1:
                return {"GET": ("list", self._list), "POST": ("create", self._create_version)}, []
            if n == 2:
                return {"GET": ("get", self._get)}, api[1:]
            if n == 3 and api[2] == "cancel":
                return {"POST": ("cancel", self._cancel)}, api[1:2]
        elif api[0] == "models":
            if not self._model_endpoint and not (n == 4 and api[3] == "predictions"):
                return None  # a gateway that re-sells only the predictions API
            if n == 1:
                return {"GET": ("model", self._models)}, []
            if n == 3:
                return {"GET": ("model", self._model)}, api[1:3]
            if n == 4 and api[3] == "predictions":
                return {"POST": ("create", self._create_model)}, api[1:3]
            if n == 4 and api[3] == "versions":
                return {"GET": ("model", self._versions)}, api[1:3]
            if n == 5 and api[3] == "versions":
                return {"GET": ("model", self._version)}, [api[1], api[2], api[4]]
        elif api == ["account"]:
            return {"GET": ("account", self._account)}, []
        elif api == ["webhooks", "default", "secret"]:
            return {"GET": ("account", self._webhook_secret)}, []
        elif api[0] == "files":
            if n == 1:
                return {"GET": ("upload", self._list_uploads), "POST": ("upload", self._upload)}, []
            if n == 2:
                return {
                    "GET": ("upload", self._get_upload),
                    "DELETE": ("upload", self._delete_upload),
                }, api[1:]
        return None

    @staticmethod
    def _allow(
        method: str, handlers: dict[str, tuple[Endpoint, Any]], args: list[str]
    ) -> tuple[Endpoint, Any, tuple[str, ...]]:
        if method not in handlers:
            allowed = ", ".join(handlers)
            problem = Problem(405, f"Method {method} is not allowed here; use {allowed}.")
            problem.headers = [("allow", allowed)]
            raise problem
        endpoint, handler = handlers[method]
        return endpoint, handler, tuple(args)

    # access control ----------------------------------------------------------------------------

    def _authorize(self, request: _Incoming) -> str:
        """The bearer token of the request (any non-empty one unless one is pinned), or 401."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Problem(401, _UNAUTHENTICATED)
        if self._token is not None and not hmac.compare_digest(
            value.encode(), self._token.encode()
        ):
            raise Problem(401, _UNAUTHENTICATED)
        return value

    def _admit(self, request: _Incoming, bucket: Bucket) -> None:
        """Authenticate, then spend from the account's bucket: 401 or 429 when not allowed."""
        account = self._authorize(request)
        decision = self._limiter.take(account, bucket, time.monotonic())
        if decision is None:
            return
        request.extra_headers.extend(decision.headers()[:2])
        if not decision.allowed:
            self._stats.count_throttled()
            raise _Abort(self._throttled(decision))

    @staticmethod
    def _throttled(decision: Decision) -> Reply:
        reply = Reply.json(429, decision.body(), "application/problem+json")
        reply.headers.append(("retry-after", str(decision.retry_after)))
        return reply

    # creates -----------------------------------------------------------------------------------

    async def _create_model(self, request: _Incoming, owner: str, name: str) -> Reply | None:
        model = f"{owner}/{name}"
        return await self._create(request, lambda: parse_create(model, request.body, self._catalog))

    async def _create_version(self, request: _Incoming) -> Reply | None:
        def parse() -> CreateRequest:
            payload = parse_body(request.body)
            version = payload.get("version") if isinstance(payload, dict) else None
            spec = self._resolve_version(version)
            created = parse_input(spec, payload)
            created.version = spec.version
            return created

        return await self._create(request, parse)

    def _resolve_version(self, version: Any) -> _catalog.ServedModel:
        """The model a create's ``version`` names: an id, ``owner/name`` or ``owner/name:id``."""
        if version is None:
            fields = [
                {"type": "required", "field": "version", "description": "version is required"}
            ]
            raise Problem(
                422,
                "- version: version is required",
                "Input validation failed",
                invalid_fields=fields,
            )
        text = str(version)
        model, colon, wanted = text.partition(":")
        if "/" in model:
            spec = self._catalog.find(model)
            if spec is not None and (not colon or wanted == spec.version):
                return spec
        else:
            spec = self._catalog.by_version(text)
            if spec is not None:
                return spec
        raise Problem(
            422,
            f"The specified version {text} does not exist (or perhaps you don't have "
            "permission to use it?)",
            "Invalid version",
        )

    async def _create(self, request: _Incoming, parse: Any) -> Reply | None:
        # A drop must come after the server accepted: that is the ambiguous failure to emulate.
        fault = self._faults.take("create")
        drop = fault is not None and fault.action == "drop"
        if not drop:
            await self._apply(fault)
        try:
            self._admit(request, "creates")
            created: CreateRequest = parse()
            hook = _webhooks.parse_hook(json.loads(request.body))
            deadline = self._cancel_after(request.headers)
            hold = self._prefer_wait(request.headers)
        except (Problem, _Abort):
            if drop:
                return None
            raise
        fault = self._store.take_create_fault(created)
        if fault is not None and fault.action == "drop":
            drop = True
        else:
            await self._apply(fault)
        source = await self._input_images(created)
        now = time.monotonic()
        prediction = self._store.create(
            created, now=now, deadline=None if deadline is None else now + deadline, source=source
        )
        self._stats.count_created()
        if hook is not None:
            self._spawn(self._deliver(prediction, hook))
        if drop:
            return None
        if hold is None:
            return Reply.json(201, await self._doc(prediction, time.monotonic()))
        await self._hold(prediction, now + hold)
        now = time.monotonic()
        status = prediction.status(now)
        if self._blocking_answers == "final" and not self._early_output:
            doc = await self._doc(prediction, now)
        elif status == "succeeded":
            # Replicate answers a finished prediction "processing" with its output set.
            doc = await self._doc(prediction, now, early_output=True)
        elif status in TERMINAL:
            doc = await self._doc(prediction, now)
        else:
            # The wait ran out: Replicate answers "starting", whatever it is doing by now.
            doc = await self._doc(prediction, now, as_created=True)
        return Reply.json(201, doc)

    # reads -------------------------------------------------------------------------------------

    async def _get(self, request: _Incoming, prediction_id: str) -> Reply:
        await self._apply(self._faults.take("get"))
        self._admit(request, "reads")
        prediction = self._lookup(prediction_id)
        await self._apply(prediction.faults.take("get"))
        return Reply.json(200, await self._doc(prediction, time.monotonic()))

    async def _cancel(self, request: _Incoming, prediction_id: str) -> Reply:
        await self._apply(self._faults.take("cancel"))
        self._admit(request, "reads")
        prediction = self._lookup(prediction_id)
        await self._apply(prediction.faults.take("cancel"))
        now = time.monotonic()
        self._store.cancel(prediction, now)
        for event in self._waiters.get(prediction.id, ()):
            event.set()
        return Reply.json(200, await self._doc(prediction, now))

    async def _list(self, request: _Incoming) -> Reply:
        """Newest first, ``page_size`` a page, with ``next``/``previous`` cursor URLs."""
        fault = self._faults.take("list")
        if fault is None or fault.action not in LIST_ACTIONS:
            await self._apply(fault)
        self._admit(request, "reads")
        if fault is not None and fault.action == "empty":
            return Reply.json(200, {"next": None, "previous": None, "results": []})
        after = self._time_filter(request, "created_after")
        before = self._time_filter(request, "created_before")
        cursor = (request.query.get("cursor") or [""])[0]
        below = self._cursor(cursor)
        now = time.monotonic()

        def created(p: Prediction) -> float:  # as its created_at says (milliseconds)
            return self._parse_time(self._store.stamp(p.created))

        matching = [
            p
            for p in self._store.newest_first()
            if (after is None or created(p) > after) and (before is None or created(p) < before)
        ]
        start = 0
        if below is not None:
            start = next((i for i, p in enumerate(matching) if p.seq < below), len(matching))
        page = matching[start : start + self._page_size]
        results = []
        for prediction in page:
            doc = self._store.to_json(prediction, now)
            doc.pop("logs", None)  # the list leaves out logs, as Replicate's does
            results.append(doc)
        more = start + self._page_size < len(matching)

        def link(seq: int) -> str:
            query = {k: v[0] for k, v in request.query.items() if k != "cursor" and v}
            query["cursor"] = base64.urlsafe_b64encode(f"before:{seq}".encode()).decode()
            return f"{self._store.api_base}/predictions?{urlencode(query)}"

        previous = None
        if start > 0:
            back = max(0, start - self._page_size)
            previous = link(matching[back - 1].seq) if back > 0 else link(matching[0].seq + 1)
        cut = fault is not None and fault.action == "cut"
        doc = {
            "next": link(page[-1].seq) if more and page and not cut else None,
            "previous": previous,
            "results": results,
        }
        return Reply.json(200, doc)

    @staticmethod
    def _cursor(cursor: str) -> int | None:
        if not cursor:
            return None
        try:
            kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
            if kind == "before":
                return int(value)
        except ValueError:
            pass
        raise Problem(400, f"Invalid cursor {cursor!r}: use the next or previous URL as given.")

    @staticmethod
    def _parse_time(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    @staticmethod
    def _time_filter(request: _Incoming, name: str) -> float | None:
        values = request.query.get(name)
        if not values:
            return None
        try:
            return Server._parse_time(values[0])
        except ValueError:
            raise Problem(400, f"{name}={values[0]!r} is not an ISO 8601 date-time.") from None

    async def _models(self, request: _Incoming) -> Reply:
        await self._apply(self._faults.take("model"))
        self._admit(request, "reads")
        results = [self._model_doc(spec) for spec in self._catalog.all()]
        return Reply.json(200, {"next": None, "previous": None, "results": results})

    async def _model(self, request: _Incoming, owner: str, name: str) -> Reply:
        await self._apply(self._faults.take("model"))
        self._admit(request, "reads")
        return Reply.json(200, self._model_doc(self._known_model(owner, name)))

    async def _versions(self, request: _Incoming, owner: str, name: str) -> Reply:
        await self._apply(self._faults.take("model"))
        self._admit(request, "reads")
        version = _catalog.version_doc(self._known_model(owner, name), self.started_at)
        return Reply.json(200, {"next": None, "previous": None, "results": [version]})

    async def _version(self, request: _Incoming, owner: str, name: str, version: str) -> Reply:
        await self._apply(self._faults.take("model"))
        self._admit(request, "reads")
        spec = self._known_model(owner, name)
        if version != spec.version:
            raise Problem(404, f"Version {version} of {spec.name} does not exist.")
        return Reply.json(200, _catalog.version_doc(spec, self.started_at))

    def _known_model(self, owner: str, name: str) -> _catalog.ServedModel:
        spec = self._catalog.find(f"{owner}/{name}")
        if spec is None:
            raise Problem(
                404, f"Model {owner}/{name} does not exist or you do not have access to it."
            )
        return spec

    def _model_doc(self, spec: _catalog.ServedModel) -> dict[str, Any]:
        return _catalog.model_doc(
            spec,
            api_base=self._store.api_base,
            started_at=self.started_at,
            run_count=self._store.run_count(spec.name),
        )

    async def _webhook_secret(self, request: _Incoming) -> Reply:
        await self._apply(self._faults.take("account"))
        self._admit(request, "reads")
        return Reply.json(200, {"key": self.signer.secret})

    async def _account(self, request: _Incoming) -> Reply:
        await self._apply(self._faults.take("account"))
        self._admit(request, "reads")
        return Reply.json(200, dict(ACCOUNT))

    # webhooks ----------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, prediction: Prediction, hook: _webhooks.Hook) -> None:
        """Send the events the hook asked for as they happen: start, logs, output, completed."""
        if hook.events & {"start", "logs"}:
            await self._until(prediction, started=True)
            now = time.monotonic()
            if prediction.status(now) == "processing":
                for event in ("start", "logs"):
                    if event in hook.events:
                        await self._post(prediction, hook, event, now)
        await self._until(prediction, started=False)
        now = time.monotonic()
        if "output" in hook.events and prediction.status(now) == "succeeded":
            await self._post(prediction, hook, "output", now)
        if "completed" in hook.events:
            await self._post(prediction, hook, "completed", now)

    async def _until(self, prediction: Prediction, *, started: bool) -> None:
        """Wait until the prediction started (or ended), or ended; a cancel wakes us."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(prediction.id, set())
        waiters.add(event)
        try:
            while True:
                line = prediction.timeline()
                due = line.completed
                if started and line.started is not None:
                    due = min(due, line.started)
                remaining = due - time.monotonic()
                if remaining <= 0:
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, 3600))
                event.clear()
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(prediction.id, None)

    async def _post(
        self, prediction: Prediction, hook: _webhooks.Hook, event: str, now: float
    ) -> None:
        body = json.dumps(await self._doc(prediction, now))
        headers = self.signer.headers(body)
        status: int | None = None
        try:
            async with httpx2.AsyncClient(timeout=10, trust_env=False) as http:
                response = await http.post(hook.url, content=body, headers=headers)
                status = response.status_code
        except httpx2.HTTPError as exc:
            logger.info("webhook %s to %s failed: %s", event, hook.url, exc)
        self.deliveries.add(
            _webhooks.Delivery(prediction.id, event, hook.url, status, headers, body)
        )

    # the Files API -----------------------------------------------------------------------------

    async def _upload(self, request: _Incoming) -> Reply:
        await self._apply(self._faults.take("upload"))
        self._admit(request, "reads")
        name, content_type, data, metadata = _uploads.parse_multipart(
            request.headers.get("content-type", ""), request.body
        )
        upload = self._uploads.add(name, content_type, data, metadata, time.monotonic())
        return Reply.json(201, self._upload_doc(upload))

    async def _list_uploads(self, request: _Incoming) -> Reply:
        await self._apply(self._faults.take("upload"))
        self._admit(request, "reads")
        results = [self._upload_doc(u) for u in self._uploads.newest_first()]
        return Reply.json(200, {"next": None, "previous": None, "results": results})

    async def _get_upload(self, request: _Incoming, file_id: str) -> Reply:
        await self._apply(self._faults.take("upload"))
        self._admit(request, "reads")
        upload = self._uploads.get(file_id)
        if upload is None:
            raise Problem(404, f"File {file_id} not found.")
        return Reply.json(200, self._upload_doc(upload))

    async def _delete_upload(self, request: _Incoming, file_id: str) -> Reply:
        await self._apply(self._faults.take("upload"))
        self._admit(request, "reads")
        if not self._uploads.remove(file_id):
            raise Problem(404, f"File {file_id} not found.")
        return Reply(204, b"", "application/json")

    def _upload_doc(self, upload: _uploads.Upload) -> dict[str, Any]:
        return _uploads.file_doc(upload, api_base=self._store.api_base, stamp=self._store.stamp)

    # stream, files, web page -------------------------------------------------------------------

    async def _stream(self, request: _Incoming, prediction_id: str) -> Reply:
        """Server-sent events: ``logs`` lines, each ``output``, then ``done`` (or ``error``).

        No auth, like Replicate's stream URLs (the npm client sends no token there).
        """
        await self._apply(self._faults.take("stream"))
        prediction = self._lookup(prediction_id)
        await self._apply(prediction.faults.take("stream"))
        return Reply(200, b"", "text/event-stream", stream=self._events(prediction))

    async def _events(self, prediction: Prediction) -> AsyncGenerator[bytes, None]:
        event_id = 0
        sent_logs = ""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(prediction.id, set())
        waiters.add(event)
        try:
            while True:
                now = time.monotonic()
                doc = await self._doc(prediction, now)
                logs = str(doc.get("logs") or "")
                if logs.startswith(sent_logs) and len(logs) > len(sent_logs):
                    for line in logs[len(sent_logs) :].splitlines():
                        event_id += 1
                        yield _sse("logs", line, event_id)
                    sent_logs = logs
                status = doc["status"]
                if status in TERMINAL:
                    if status == "succeeded":
                        outputs = doc["output"]
                        for output in outputs if isinstance(outputs, list) else [outputs]:
                            if output is not None:
                                event_id += 1
                                yield _sse("output", str(output), event_id)
                        done: dict[str, Any] = {}
                    elif status == "failed":
                        event_id += 1
                        yield _sse("error", str(doc.get("error") or "failed"), event_id)
                        done = {"reason": "error"}
                    else:
                        done = {"reason": "canceled"}
                    event_id += 1
                    yield _sse("done", json.dumps(done), event_id)
                    return
                timeline = prediction.timeline()
                due = [
                    t for t in (timeline.started, timeline.completed) if t is not None and t > now
                ]
                delay = min([_STREAM_TICK, *(t - now for t in due)])
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), max(0.0, delay))
                event.clear()
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(prediction.id, None)

    async def _file(self, request: _Incoming, prediction_id: str, name: str) -> Reply:
        # No auth: output files live on a public CDN (replicate.delivery).
        await self._apply(self._faults.take("file"))
        prediction = self._store.get(prediction_id)
        if prediction is not None:
            await self._apply(prediction.faults.take("file"))
        spec = None
        if prediction is not None:
            spec = self._store.file(prediction, name, time.monotonic())
        if spec is None:
            raise Problem(404, "The requested file does not exist or was removed.")
        data = await asyncio.to_thread(_images.render, spec)
        mislabel = self._store.mislabel_files
        return Reply(200, data, "application/octet-stream" if mislabel else spec.content_type)

    async def _web(self, request: _Incoming, prediction_id: str) -> Reply:
        prediction = self._lookup(prediction_id)
        doc = self._store.to_json(prediction, time.monotonic())
        outputs = doc["output"] if isinstance(doc["output"], list) else [doc["output"]]
        links = "".join(
            f'<li><a href="{html.escape(str(o))}">{html.escape(str(o)[:80])}</a></li>'
            for o in outputs
            if o
        )
        page = (
            f"<!doctype html><title>Prediction {html.escape(prediction.id)}</title>"
            f"<h1>{html.escape(prediction.model)}</h1><p>Status: {html.escape(doc['status'])}</p>"
            f"<ul>{links}</ul>"
        )
        return Reply(200, page.encode(), "text/html; charset=utf-8")

    # helpers -----------------------------------------------------------------------------------

    async def _input_images(self, created: CreateRequest) -> InputImages | None:
        """The images the model was given, fetched as the real model would fetch them."""
        spec, validated = created.spec, created.validated
        fields = _catalog.image_fields(spec.input_model)
        edit: bytes | None = None
        references: list[bytes] = []
        size: tuple[int, int] | None = None
        for name in fields:
            value = getattr(validated, name, None)
            if isinstance(value, str) and value and name == spec.edit_field:
                uris, target = [value], "edit"
            elif isinstance(value, list | tuple) and value:
                uris, target = [str(v) for v in value], "references"
            else:
                continue
            for index, uri in enumerate(uris):
                label = name if target == "edit" else f"{name}[{index}]"
                try:
                    data = await self._load(uri)
                    found = await asyncio.to_thread(_images.source_size, data)
                except Exception as exc:  # whatever it was, the model could not read the image
                    return InputImages(error=f"Could not load {label}: {type(exc).__name__}: {exc}")
                size = size or found
                if target == "edit":
                    edit = data
                else:
                    references.append(data)
        if edit is None and not references:
            return None
        return InputImages(edit, tuple(references), size)

    async def _load(self, uri: str) -> bytes:
        if uri.startswith("data:"):
            return base64.b64decode(uri.partition(",")[2], validate=False)
        return await self._fetch(uri)

    async def _fetch(self, url: str) -> bytes:
        path = httpx2.URL(url).path
        # An uploaded input (urls.get of the Files API): what the model reads it from.
        upload = re.fullmatch(re.escape(self._prefix) + r"/files/([^/]+)", path)
        if upload:
            found = self._uploads.get(upload.group(1))
            if found is None:
                raise LookupError(f"no uploaded file {upload.group(1)}")
            return found.data
        # One of our own outputs: served from the store, like a CDN the model can reach.
        match = re.fullmatch(r"/files/([^/]+)/([^/]+)", path)
        if match:
            prediction = self._store.get(match.group(1))
            spec = prediction and self._store.file(prediction, match.group(2), time.monotonic())
            if spec:
                return await asyncio.to_thread(_images.render, spec)
        async with httpx2.AsyncClient(timeout=10, follow_redirects=True) as http:
            response = await http.get(url)
            response.raise_for_status()
            return response.content

    async def _apply(self, fault: Fault | None) -> None:
        if fault is None:
            return
        if fault.action == "slow":
            await asyncio.sleep(fault.delay)
        elif fault.action == "drop":
            raise _Abort(None)
        else:
            raise _Abort(fault_reply(fault))

    def _lookup(self, prediction_id: str) -> Prediction:
        prediction = self._store.get(prediction_id)
        if prediction is None:
            raise Problem(404, f"Prediction {prediction_id} not found.")
        return prediction

    def _prefer_wait(self, headers: dict[str, str]) -> float | None:
        """Seconds a create may be held (``Prefer: wait`` or ``wait=N``), None to answer now."""
        value = headers.get("prefer")
        if not value or not self._honor_prefer_wait:
            return None  # a gateway ignores the header altogether
        for preference in value.split(","):
            key, eq, arg = preference.split(";")[0].strip().partition("=")
            if key.strip().lower() != "wait":
                continue
            if not eq:
                return float(_MAX_WAIT)
            arg = arg.strip().strip('"')
            if not arg.isdigit() or not 1 <= int(arg) <= _MAX_WAIT:
                raise Problem(
                    422,
                    f"Prefer: {value}: wait=N needs N between 1 and {_MAX_WAIT} seconds.",
                    "Invalid Prefer header",
                )
            return float(arg)
        return None

    @staticmethod
    def _cancel_after(headers: dict[str, str]) -> float | None:
        value = headers.get("cancel-after")
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError:
            raise Problem(
                422,
                f"Cancel-After: {value!r} is not a duration; use e.g. 30s, 5m, 1h30m or 500ms.",
                "Invalid Cancel-After header",
            ) from None

    async def _hold(self, prediction: Prediction, until: float) -> None:
        """Wait until the prediction is terminal, ``until`` passes, or a cancel wakes us."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(prediction.id, set())
        waiters.add(event)
        try:
            while True:
                end = min(until, prediction.timeline().completed)
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
                event.clear()  # a cancel moved ``completed`` to now: the loop returns
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(prediction.id, None)

    async def _doc(
        self,
        prediction: Prediction,
        now: float,
        *,
        early_output: bool = False,
        as_created: bool = False,
    ) -> dict[str, Any]:
        images = None
        if (
            not as_created
            and self._store.output_mode == "data"
            and self._store.has_output(prediction, now)
        ):
            images = await asyncio.to_thread(self._store.render_outputs, prediction)
        return self._store.to_json(
            prediction, now, early_output=early_output, images=images, as_created=as_created
        )
