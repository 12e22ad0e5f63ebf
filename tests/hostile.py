"""A hostile fake predictions API on loopback, scripted per test.

The emulator plays a well-behaved provider; this plays a gateway nobody here controls. It is a
plain ``http.server`` in two threads, one per port: the API origin, and a second port acting as
*another origin* (to check that no credentials go off-origin). Every request to either port is
recorded with its headers.

    gw = HostileGateway().start()        # or the ``hostile`` fixture of tests/conftest.py
    gw.base_url                          # http://127.0.0.1:P/v1   (give it to the client)
    gw.origin, gw.other_origin           # http://127.0.0.1:P, http://127.0.0.1:Q
    ...
    gw.stop()

**By default it behaves**: a create answers a prediction ``succeeded`` with one small PNG output
on the API origin; a get answers the same; a cancel answers ``canceled``; ``GET /files/...``
on either port serves a small PNG. Then each test makes it hostile:

- ``gw.prediction``: the fields of every prediction answer (a dict; merged over the defaults).
  String values may say ``{api}`` and ``{other}`` (replaced by the two origins) and ``{id}``
  (the id with every character but ``[A-Za-z0-9]`` made ``_``, so default URLs stay URLs
  whatever the id). Set a field to ``MISSING`` to leave it out. E.g.
  ``gw.prediction.update(id="/../../x", output=["{other}/files/a.png"] * 300)``.
- ``gw.states``: a list of overrides, one per answer: the create answers ``states[0]``, each
  get the next one (the last repeats). E.g. ``[{"status": "starting"}, {"status": "weird"}]``.
- ``gw.cancel_state``: the override of a cancel's answer (``{"status": "succeeded"}`` for a
  cancel that reports success).
- ``gw.on(method, path, answer, origin="api")``: any other answer, checked before the defaults.
  ``path`` is an exact path (query ignored) or a compiled regex (``fullmatch`` on the path);
  ``method`` may be ``"*"``; ``answer`` is an :class:`Answer`, a list of them (served in turn,
  the last repeats), or a function of the :class:`Seen` request returning one.
- :class:`Answer` builders: ``Answer.json(obj)``, ``Answer.image(fmt, size)``,
  ``Answer.raw(data, content_type)``, ``Answer.huge(n)`` (n bytes, declared or not),
  ``Answer.endless(prefix)`` (never ends), ``Answer.trickle(data, every, forever)`` (a byte at
  a time), ``Answer.redirect(location)``, ``Answer.status(code)``. Stream bodies have no
  ``Content-Length`` and end when the connection closes (or never).
- Shortcuts: ``gw.prediction_json(override)`` (the JSON a prediction answer would carry, e.g.
  for ``Answer.json(...)`` in a scripted sequence); ``Answer.endless_json()`` (a prediction
  whose ``logs`` never end); ``tiny_png()``; ``wait_for(predicate)`` (poll the gateway's state).
  The default routes' kinds: ``"create"`` (POST under /v1), ``"get"`` (GET /v1/predictions/...),
  ``"cancel"`` (POST .../cancel), ``"file"`` (GET /files/... on either port).

What it saw: ``gw.requests`` (a list of :class:`Seen`: origin ``"api"``/``"other"``, method,
path, lower-cased headers, the first 64 KiB of the body, ``sent`` = body bytes it managed to
send, ``completed``, ``cut``), ``gw.authorizations(origin)`` (the ``Authorization`` header of
each request to that origin, ``None`` when absent), ``gw.seen(kind)`` / ``gw.count(kind)``
(requests of one default kind), ``gw.sent_bytes(origin=None)``.

Loopback only; stopping is bounded (endless and trickling bodies notice it). Safety valves:
an endless answer stops after ``gw.max_stream_bytes`` (128 MiB) or ``gw.max_stream_seconds``
(30 s), marking ``Seen.cut``: a client that is not bounded then fails a test instead of
eating the machine.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

__all__ = [
    "MISSING",
    "Answer",
    "HostileGateway",
    "Seen",
    "fan_out_schema",
    "tiny_png",
    "wait_for",
]

#: A field value meaning "leave this field out of the answer".
MISSING: Any = object()

_PNG_1x1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def tiny_png() -> bytes:
    """A valid 1x1 PNG (no Pillow needed)."""
    return _PNG_1x1


@dataclass
class Seen:
    """One request as the gateway received it."""

    origin: str  # "api" or "other"
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    #: Body bytes of the answer written to the socket (a client that stops reading stops this).
    sent: int = 0
    #: True once the whole answer was written (False for an endless one cut by the client).
    completed: bool = False
    #: True when the gateway's own safety valve ended an endless answer (the client did not).
    cut: bool = False

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Answer:
    """One scripted answer. ``body`` is bytes, or a function returning an iterator of chunks
    (a stream: no Content-Length unless ``content_length`` says one, ended by closing)."""

    status_code: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Callable[[], Iterator[bytes]] = b""
    #: Seconds to wait before each chunk of a stream.
    every: float = 0.0
    #: A Content-Length to declare (even a lie); None: the true one for bytes, none for streams.
    content_length: int | None = None

    @classmethod
    def json(cls, obj: Any, status: int = 200, **headers: str) -> Answer:
        return cls(
            status, {"Content-Type": "application/json", **headers}, json.dumps(obj).encode()
        )

    @classmethod
    def raw(cls, data: bytes, content_type: str = "application/octet-stream") -> Answer:
        return cls(200, {"Content-Type": content_type}, data)

    @classmethod
    def image(cls, fmt: str = "png", size: tuple[int, int] = (8, 8)) -> Answer:
        """A real image made with Pillow (``fmt``: png, jpeg, webp, gif)."""
        from PIL import Image

        out = io.BytesIO()
        Image.new("RGB", size, (200, 30, 60)).save(out, format=fmt.upper())
        return cls.raw(out.getvalue(), f"image/{fmt}")

    @classmethod
    def huge(
        cls, size: int, *, prefix: bytes = b"\x89PNG\r\n\x1a\n", declare: bool = True
    ) -> Answer:
        """``size`` bytes (a PNG signature, then zeros), streamed; ``declare=False`` hides the
        length (close-delimited)."""

        def chunks() -> Iterator[bytes]:
            yield prefix
            left = size - len(prefix)
            block = b"\0" * 65536
            while left > 0:
                yield block[: min(left, len(block))]
                left -= len(block)

        return cls(
            200, {"Content-Type": "image/png"}, chunks, content_length=size if declare else None
        )

    @classmethod
    def endless(
        cls, prefix: bytes = b"\x89PNG\r\n\x1a\n", *, content_type: str = "image/png"
    ) -> Answer:
        """A body that never ends (64 KiB blocks, as fast as the client reads)."""

        def chunks() -> Iterator[bytes]:
            yield prefix
            block = b"a" * 65536
            while True:
                yield block

        return cls(200, {"Content-Type": content_type}, chunks)

    @classmethod
    def endless_json(cls) -> Answer:
        """A prediction whose JSON never ends (a ``logs`` string that goes on forever)."""
        head = b'{"id": "endless", "status": "succeeded", "logs": "'
        return cls.endless(head, content_type="application/json")

    @classmethod
    def trickle(
        cls,
        data: bytes = b"\x89PNG\r\n\x1a\n",
        *,
        every: float = 0.2,
        forever: bool = True,
        content_type: str = "image/png",
    ) -> Answer:
        """``data`` one byte per ``every`` seconds, then (``forever``) one ``a`` per interval."""

        def chunks() -> Iterator[bytes]:
            for i in range(len(data)):
                yield data[i : i + 1]
            while forever:
                yield b"a"

        return cls(200, {"Content-Type": content_type}, chunks, every=every)

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Answer:
        return cls(status, {"Location": location})

    @classmethod
    def status(cls, code: int, body: bytes = b"", **headers: str) -> Answer:
        return cls(code, dict(headers), body)


AnswerSpec = Answer | list[Answer] | Callable[[Seen], Answer]


@dataclass
class _Route:
    method: str
    path: str | re.Pattern[str]
    origin: str
    answer: AnswerSpec
    served: int = 0

    def matches(self, seen: Seen) -> bool:
        if self.origin not in (seen.origin, "*") or self.method not in (seen.method, "*"):
            return False
        path = seen.path.split("?")[0]
        if isinstance(self.path, re.Pattern):
            return self.path.fullmatch(path) is not None
        return path == self.path


def _kind(seen: Seen, prefix: str) -> str:
    path = seen.path.split("?")[0]
    if path.startswith("/files/"):
        return "file"
    if seen.method == "POST" and path.endswith("/cancel"):
        return "cancel"
    if seen.method == "POST" and path.startswith(prefix):
        return "create"
    if seen.method == "GET" and path.startswith(f"{prefix}/predictions/"):
        return "get"
    return "other"


class HostileGateway:
    """The scripted gateway: see the module docstring."""

    PREFIX: ClassVar[str] = "/v1"
    #: Safety valves, so that a test of an unfixed client fails instead of eating the machine:
    #: an endless or trickling answer stops after this many bytes or seconds (``Seen.cut``).
    max_stream_bytes: int = 128 * 1024 * 1024
    max_stream_seconds: float = 30.0

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._routes: list[_Route] = []
        self._gets = 0
        self.requests: list[Seen] = []
        self.origin = ""
        self.other_origin = ""
        self.base_url = ""
        self.prediction: dict[str, Any] = {}
        self.states: list[dict[str, Any]] = [{}]
        self.cancel_state: dict[str, Any] = {"status": "canceled"}

    # -- life ------------------------------------------------------------------------------

    def start(self) -> HostileGateway:
        for name in ("api", "other"):
            server = ThreadingHTTPServer((self._host, 0), _Handler)
            server.daemon_threads = True
            server.gateway = self  # type: ignore[attr-defined]
            server.origin_name = name  # type: ignore[attr-defined]
            port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
            if name == "api":
                self.origin = f"http://{self._host}:{port}"
            else:
                self.other_origin = f"http://{self._host}:{port}"
        self.base_url = self.origin + self.PREFIX
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HostileGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------

    def on(
        self, method: str, path: str | re.Pattern[str], answer: AnswerSpec, *, origin: str = "api"
    ) -> None:
        """Answer ``method path`` on ``origin`` (``"api"``, ``"other"``, ``"*"``) so."""
        with self._lock:
            self._routes.insert(0, _Route(method.upper(), path, origin, answer))

    def expand(self, text: str, pid: str = "") -> str:
        return (
            text.replace("{api}", self.origin)
            .replace("{other}", self.other_origin)
            .replace("{id}", pid)
        )

    def prediction_json(self, override: dict[str, Any] | None = None) -> dict[str, Any]:
        """A prediction answer: defaults, then ``prediction``, then ``override``."""
        fields: dict[str, Any] = {
            "id": "hostile1",
            "model": "black-forest-labs/flux-pro",
            "version": None,
            "status": "succeeded",
            "input": {"prompt": "a hostile cat"},
            "output": ["{api}/files/{id}/out.png"],
            "logs": "",
            "error": None,
            "created_at": "2026-12-01T12:00:00Z",
            "urls": {
                "get": "{api}/v1/predictions/{id}",
                "cancel": "{api}/v1/predictions/{id}/cancel",
            },
        }
        fields.update(copy.deepcopy(self.prediction))
        fields.update(copy.deepcopy(override or {}))
        pid = fields["id"] if isinstance(fields.get("id"), str) else ""
        safe_pid = re.sub(r"[^A-Za-z0-9]", "_", pid)[:40]  # for the default URLs only
        return {k: self._render(v, safe_pid) for k, v in fields.items() if v is not MISSING}

    def _render(self, value: Any, pid: str) -> Any:
        if isinstance(value, str):
            return self.expand(value, pid)
        if isinstance(value, list):
            return [self._render(v, pid) for v in value if v is not MISSING]
        if isinstance(value, dict):
            return {k: self._render(v, pid) for k, v in value.items() if v is not MISSING}
        return value

    # -- what it saw -------------------------------------------------------------------------

    def seen(self, kind: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if _kind(r, self.PREFIX) == kind]

    def count(self, kind: str) -> int:
        return len(self.seen(kind))

    def authorizations(self, origin: str = "other") -> list[str | None]:
        with self._lock:
            return [r.authorization for r in self.requests if r.origin == origin]

    def sent_bytes(self, origin: str | None = None) -> int:
        with self._lock:
            return sum(r.sent for r in self.requests if origin in (None, r.origin))

    # -- answering ---------------------------------------------------------------------------

    def _answer(self, seen: Seen) -> Answer:
        with self._lock:
            route = next((r for r in self._routes if r.matches(seen)), None)
            if route is not None:
                spec = route.answer
                index = route.served
                route.served += 1
        if route is not None:
            if isinstance(spec, list):
                return spec[min(index, len(spec) - 1)]
            if isinstance(spec, Answer):
                return spec
            return spec(seen)
        kind = _kind(seen, self.PREFIX)
        if kind == "file":
            return Answer.raw(tiny_png(), "image/png")
        if kind == "create":
            return Answer.json(self.prediction_json(self.states[0]), 201)
        if kind == "get":
            with self._lock:
                self._gets += 1
                state = self.states[min(self._gets, len(self.states) - 1)]
            return Answer.json(self.prediction_json(state))
        if kind == "cancel":
            return Answer.json(self.prediction_json(self.cancel_state))
        return Answer.json({"detail": "not found"}, 404)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hostile/1"
    #: Request bodies read at most (edit images as data: URIs are a few MB).
    MAX_REQUEST = 32 * 1024 * 1024

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        gateway: HostileGateway = self.server.gateway  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, self.MAX_REQUEST)) if length else b""
        seen = Seen(
            origin=self.server.origin_name,  # type: ignore[attr-defined]
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body[:65536],
        )
        with gateway._lock:
            gateway.requests.append(seen)
        answer = gateway._answer(seen)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            self.send_header(key, gateway.expand(value))
        stream = callable(answer.body)
        if answer.content_length is not None:
            self.send_header("Content-Length", str(answer.content_length))
        elif not stream:
            assert isinstance(answer.body, bytes)
            self.send_header("Content-Length", str(len(answer.body)))
        if stream:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            if isinstance(answer.body, bytes):
                self.wfile.write(answer.body)
                seen.sent = len(answer.body)
            else:
                started = time.monotonic()
                for chunk in answer.body():
                    if gateway._stopping.is_set():
                        return
                    if (
                        seen.sent > gateway.max_stream_bytes
                        or time.monotonic() - started > gateway.max_stream_seconds
                    ):
                        seen.cut = True  # the safety valve: a client that never stops
                        return
                    if answer.every and gateway._stopping.wait(answer.every):
                        return
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    seen.sent += len(chunk)
            seen.completed = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (for checks on the gateway's threads)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def fan_out_schema(width: int, fields: int) -> dict[str, Any]:
    """An ``openapi_schema`` whose every field is ``allOf`` ``width`` references, each of them
    ``allOf`` ``width`` references, three levels deep: resolved naively, ``fields * width**3``
    merges from a document of ``~70 * width**2`` bytes (14 wide: 21 KB; 50 wide: 230 KB)."""

    def refs(prefix: str) -> dict[str, Any]:
        return {"allOf": [{"$ref": f"#/components/schemas/{prefix}{j}"} for j in range(width)]}

    leaf = {"type": "string", "enum": ["a", "b"]}
    schemas: dict[str, Any] = {f"c{i}": dict(leaf) for i in range(width)}
    schemas.update({f"b{i}": refs("c") for i in range(width)})
    schemas.update({f"a{i}": refs("b") for i in range(width)})
    schemas["Input"] = {
        "type": "object",
        "properties": {f"f{n}": refs("a") for n in range(fields)},
    }
    return {"components": {"schemas": schemas}}
