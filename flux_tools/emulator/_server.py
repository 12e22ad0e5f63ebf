"""HTTP/1.1 on asyncio streams and h11: connections, routing, auth, faults, held creates.

One coroutine per connection and none per prediction, so thousands of held requests and
predictions in flight cost only sockets and small objects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import h11
import httpx2

from . import _images
from ._faults import Endpoint, Fault, FaultBook
from ._state import (
    CreateRequest,
    EditSource,
    Prediction,
    Problem,
    RecordedRequest,
    Stats,
    Store,
    parse_create,
    parse_duration,
    status_phrase,
)

logger = logging.getLogger("flux_tools.emulator")

Origin = Literal["api", "foreign"]
_MAX_BODY = 32 * 1024 * 1024  # data: URI image inputs make bodies large, but not unbounded
_READ_SIZE = 65536
_MAX_WAIT = 60
_THROTTLED = "Request was throttled. Your rate limit resets in ~30s."


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(
        cls, status: int, doc: dict[str, Any], content_type: str = "application/json"
    ) -> Reply:
        return cls(status, json.dumps(doc).encode(), content_type)

    @classmethod
    def problem(cls, problem: Problem, headers: list[tuple[str, str]] | None = None) -> Reply:
        reply = cls.json(problem.status, problem.body(), "application/problem+json")
        reply.headers = headers or []
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


def fault_reply(fault: Fault) -> Reply:
    status = fault.status or 500
    phrase = status_phrase(status)
    detail = _THROTTLED if status == 429 else f"Emulated fault: {phrase}."
    extra: dict[str, Any] = {}
    headers = []
    if fault.retry_after is not None:
        extra["retry_after"] = fault.retry_after
        headers.append(("retry-after", f"{fault.retry_after:g}"))
    return Reply.problem(Problem(status, detail, phrase, **extra), headers)


class Server:
    """Both listeners (the API's origin and the "foreign" one) and the request handlers."""

    def __init__(
        self,
        *,
        store: Store,
        stats: Stats,
        faults: FaultBook,
        prefix: str,
        token: str | None,
        honor_prefer_wait: bool,
        early_output: bool,
    ) -> None:
        self._store = store
        self._stats = stats
        self._faults = faults
        self._prefix = prefix
        self._token = token
        self._honor_prefer_wait = honor_prefer_wait
        self._early_output = early_output
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        # Held creates waiting on a prediction: a cancel wakes them before their timeout.
        self._waiters: dict[str, set[asyncio.Event]] = {}

    async def listen(self, host: str, port: int) -> tuple[int, int]:
        """Bind the API listener on ``port`` and the foreign one on a free port; their ports."""
        ports = []
        listeners: tuple[tuple[Origin, int], ...] = (("api", port), ("foreign", 0))
        for origin, wanted in listeners:
            server = await asyncio.start_server(
                partial(self._connection, origin), host, wanted, backlog=4096
            )
            self._servers.append(server)
            ports.append(int(server.sockets[0].getsockname()[1]))
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
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
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
                path = target.partition("?")[0]
                method = head.method.decode("latin-1")
                record = RecordedRequest(method, path, origin, headers, None, arrived)
                self._stats.record(record)
                return _Incoming(method, path, headers, bytes(body)), record
            else:  # ConnectionClosed, or PAUSED which a served cycle never leaves us in
                return None

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        self._write(conn, writer, reply)
        await writer.drain()

    @staticmethod
    def _write(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("server", "flux-tools-emulator"),
            *reply.headers,
        ]
        for event in (
            h11.Response(
                status_code=reply.status,
                headers=headers,
                reason=status_phrase(reply.status).encode(),
            ),
            h11.Data(data=reply.body),
            h11.EndOfMessage(),
        ):
            writer.write(conn.send(event) or b"")

    def _bad_request(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int) -> None:
        problem = Problem(status, "Malformed HTTP request.", "Bad request")
        reply = Reply.problem(problem, [("connection", "close")])
        with contextlib.suppress(h11.LocalProtocolError):  # too late to answer: just close
            self._write(conn, writer, reply)

    # routing -----------------------------------------------------------------------------------

    async def _handle(self, request: _Incoming) -> Reply | None:
        try:
            endpoint, args = self._route(request.method, request.path)
            self._stats.count(endpoint)
            if endpoint == "create":
                return await self._create(request, args[0], args[1])
            if endpoint == "get":
                return await self._get(request, args[0])
            if endpoint == "cancel":
                return await self._cancel(request, args[0])
            return await self._file(args[0], args[1])
        except Problem as problem:
            return Reply.problem(problem, problem.headers)
        except _Abort as abort:
            return abort.reply

    def _route(self, method: str, path: str) -> tuple[Endpoint, tuple[str, ...]]:
        if path.startswith("/files/"):
            parts = path[len("/files/") :].split("/")
            if len(parts) == 2 and all(parts):
                return self._allow(method, "GET", "file", parts)
        elif path.startswith(self._prefix + "/"):
            parts = path[len(self._prefix) + 1 :].split("/")
            if len(parts) == 4 and parts[0] == "models" and parts[3] == "predictions":
                if parts[1] and parts[2]:
                    return self._allow(method, "POST", "create", parts[1:3])
            elif len(parts) == 2 and parts[0] == "predictions" and parts[1]:
                return self._allow(method, "GET", "get", parts[1:])
            elif len(parts) == 3 and parts[0] == "predictions" and parts[2] == "cancel":
                return self._allow(method, "POST", "cancel", parts[1:2])
        raise Problem(404, "The requested resource could not be found.", "Not found")

    @staticmethod
    def _allow(
        method: str, allowed: str, endpoint: Endpoint, args: list[str]
    ) -> tuple[Endpoint, tuple[str, ...]]:
        if method != allowed:
            problem = Problem(405, f"Method {method} is not allowed here; use {allowed}.")
            problem.headers = [("allow", allowed)]
            raise problem
        return endpoint, tuple(args)

    # endpoints ---------------------------------------------------------------------------------

    async def _create(self, request: _Incoming, owner: str, name: str) -> Reply | None:
        # A drop must come after the server accepted: that is the ambiguous failure to emulate.
        fault = self._faults.take("create")
        drop = fault is not None and fault.action == "drop"
        if not drop:
            await self._apply(fault)
        try:
            self._authorize(request)
            created = parse_create(f"{owner}/{name}", request.body)
            deadline = self._cancel_after(request.headers)
            hold = self._prefer_wait(request.headers)
        except Problem:
            if drop:
                return None
            raise
        fault = self._store.take_create_fault(created)
        if fault is not None and fault.action == "drop":
            drop = True
        else:
            await self._apply(fault)
        source = await self._edit_source(created)
        now = time.monotonic()
        prediction = self._store.create(
            created, now=now, deadline=None if deadline is None else now + deadline, source=source
        )
        self._stats.count_created()
        if drop:
            return None
        if hold is not None:
            await self._hold(prediction, now + hold)
        now = time.monotonic()
        early = self._early_output and hold is not None
        return Reply.json(201, await self._doc(prediction, now, early_output=early))

    async def _get(self, request: _Incoming, prediction_id: str) -> Reply:
        await self._apply(self._faults.take("get"))
        self._authorize(request)
        prediction = self._lookup(prediction_id)
        await self._apply(prediction.faults.take("get"))
        return Reply.json(200, await self._doc(prediction, time.monotonic()))

    async def _cancel(self, request: _Incoming, prediction_id: str) -> Reply:
        await self._apply(self._faults.take("cancel"))
        self._authorize(request)
        prediction = self._lookup(prediction_id)
        await self._apply(prediction.faults.take("cancel"))
        now = time.monotonic()
        self._store.cancel(prediction, now)
        for event in self._waiters.get(prediction.id, ()):
            event.set()
        return Reply.json(200, await self._doc(prediction, now))

    async def _edit_source(self, created: CreateRequest) -> EditSource | None:
        """The image an edit model was given, loaded as the real model would fetch it."""
        field = created.spec.edit_field
        uri = getattr(created.validated, field, None) if field else None
        if not isinstance(uri, str) or not uri:
            return None
        try:
            if uri.startswith("data:"):
                data = base64.b64decode(uri.partition(",")[2], validate=False)
            else:
                data = await self._fetch(uri)
            size = await asyncio.to_thread(_images.source_size, data)
        except Exception as exc:  # whatever it was, the model could not read the image
            return EditSource(None, None, f"Could not load {field}: {type(exc).__name__}: {exc}")
        return EditSource(data, size, None)

    async def _fetch(self, url: str) -> bytes:
        # One of our own outputs: served from the store, like a CDN the model can reach.
        match = re.fullmatch(r"/files/([^/]+)/([^/]+)", httpx2.URL(url).path)
        if match:
            prediction = self._store.get(match.group(1))
            spec = prediction and self._store.file(prediction, match.group(2), time.monotonic())
            if spec:
                return await asyncio.to_thread(_images.render, spec)
        async with httpx2.AsyncClient(timeout=10, follow_redirects=True) as http:
            response = await http.get(url)
            response.raise_for_status()
            return response.content

    async def _file(self, prediction_id: str, name: str) -> Reply:
        # No auth: output files live on a public CDN (replicate.delivery).
        await self._apply(self._faults.take("file"))
        prediction = self._store.get(prediction_id)
        if prediction is not None:
            await self._apply(prediction.faults.take("file"))
        spec = None
        if prediction is not None:
            spec = self._store.file(prediction, name, time.monotonic())
        if spec is None:
            raise Problem(404, "The requested file does not exist or was removed.", "Not found")
        data = await asyncio.to_thread(_images.render, spec)
        mislabel = self._store.mislabel_files
        return Reply(200, data, "application/octet-stream" if mislabel else spec.content_type)

    # helpers -----------------------------------------------------------------------------------

    async def _apply(self, fault: Fault | None) -> None:
        if fault is None:
            return
        if fault.action == "slow":
            await asyncio.sleep(fault.delay)
        elif fault.action == "drop":
            raise _Abort(None)
        else:
            raise _Abort(fault_reply(fault))

    def _authorize(self, request: _Incoming) -> None:
        if self._token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self._token.encode()
        ):
            raise Problem(401, "You did not pass a valid authentication token", "Unauthenticated")

    def _lookup(self, prediction_id: str) -> Prediction:
        prediction = self._store.get(prediction_id)
        if prediction is None:
            raise Problem(404, f"Prediction {prediction_id} not found.", "Not found")
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
        self, prediction: Prediction, now: float, *, early_output: bool = False
    ) -> dict[str, Any]:
        images = None
        if self._store.output_mode == "data" and self._store.has_output(prediction, now):
            images = await asyncio.to_thread(self._store.render_outputs, prediction)
        return self._store.to_json(prediction, now, early_output=early_output, images=images)
