"""Running the server as a service: health, readiness, Prometheus metrics, JSON logs.

- ``GET /healthz``: 200 while the process serves (a load balancer's liveness check).
- ``GET /readyz``: 200 when the state (``FLUX_STATE_URL``) and the image store
  (``FLUX_STORE_URL``) answer, 503 otherwise and from the moment a shutdown begins (so a load
  balancer stops sending before the port closes).
- ``GET /metrics``: the Prometheus text format (``prometheus-client``).

These three answer before any authentication (they say nothing of a person's work), and only to
``GET``. :class:`Metrics` is what the tools count; over stdio it counts into a registry nobody
reads, which costs nothing worth measuring.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import anyio

logger = logging.getLogger("mcp_server")

#: ASGI's vocabulary, for this module's and http.py's middleware.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How long a readiness probe waits for the state and the store.
READY_TIMEOUT = 3.0
OPS_PATHS = ("/healthz", "/readyz", "/metrics")


class Metrics:
    """The server's counters, in a registry of its own."""

    def __init__(self, limiter: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        self.generations = Counter(
            "flux_generations",
            "Tool calls that created (or resumed) a prediction, by outcome: succeeded, pending "
            "(handed back running), failed, error.",
            ["outcome"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "flux_generations_in_flight",
            "Generations this replica waits on now.",
            registry=self.registry,
        )
        self.spend = Counter(
            "flux_spend_usd",
            "Estimated cost of the predictions created (USD).",
            registry=self.registry,
        )
        self.share_refusals = Counter(
            "flux_fair_share_refusals",
            "Creates refused because a person was creating faster than their share of the "
            "account's rate (nothing was sent).",
            registry=self.registry,
        )
        self.adoptions = Counter(
            "flux_journal_adoptions",
            "Journal entries this replica took up from another (or a previous) process.",
            registry=self.registry,
        )
        if limiter is not None:
            self.registry.register(_LimiterCollector(limiter))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LimiterCollector:
    """The limiter's own counts, read at each scrape: 429s received, slots booked, the time
    requests waited for them (every request, polls included)."""

    def __init__(self, limiter: Any) -> None:
        self._limiter = limiter

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self._limiter.stats()
        throttled = CounterMetricFamily(
            "flux_rate_limited", "429 answers received from the API, by budget.", labels=["lane"]
        )
        booked = CounterMetricFamily(
            "flux_rate_limit_slots", "Requests booked through the limiter.", labels=["lane"]
        )
        waited = CounterMetricFamily(
            "flux_rate_limit_wait_seconds",
            "Seconds requests waited for a rate-limit slot, by budget.",
            labels=["lane"],
        )
        used = GaugeMetricFamily(
            "flux_rate_limit_utilization",
            "How busy the account's budget is, 0 to 1 (the whole account when shared).",
            labels=["lane"],
        )
        for lane in ("create", "read"):
            throttled.add_metric([lane], stats.throttled[lane])
            booked.add_metric([lane], stats.acquired[lane])
            waited.add_metric([lane], stats.waited[lane])
            used.add_metric([lane], self._limiter.utilization(lane))
        yield from (throttled, booked, waited, used)


class Operations:
    """ASGI middleware: the three operational routes in front of ``app`` (and its auth)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ready: Callable[[], Awaitable[None]],
        metrics: Metrics | None,
    ) -> None:
        self._app = app
        self._ready = ready
        self._metrics = metrics
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in OPS_PATHS or scope.get("method") != "GET":
            await self._app(scope, receive, send)
            return
        if path == "/healthz":
            await _answer(send, 200, {"status": "alive"})
        elif path == "/readyz":
            await self._readyz(send)
        elif self._metrics is None:
            await _answer(send, 404, {"error": "metrics are off"})
        else:
            body, kind = self._metrics.render()
            await _answer(send, 200, body, kind)

    async def _readyz(self, send: Send) -> None:
        if self.draining:
            await _answer(send, 503, {"status": "shutting down"})
            return
        try:
            with anyio.fail_after(READY_TIMEOUT):
                await self._ready()
        except Exception as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            logger.warning("not ready: %s", reason)
            await _answer(send, 503, {"status": "not ready", "reason": reason})
            return
        await _answer(send, 200, {"status": "ready"})


async def _answer(send: Send, status: int, body: Any, kind: str = "application/json") -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    await respond(send, status, data, kind)


async def respond(
    send: Send,
    status: int,
    data: bytes,
    kind: str,
    headers: list[tuple[bytes, bytes]] | tuple[()] = (),
) -> None:
    """One whole response, never cached (the server's own answers: ops, refusals, links)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind.encode()),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class JSONFormatter(logging.Formatter):
    """One JSON object a line (``FLUX_MCP_LOG_FORMAT=json``): time, level, logger, message, and
    the ``prediction_id`` and ``replica`` when a line is about one."""

    def __init__(self, replica: str | None = None) -> None:
        super().__init__()
        self._replica = replica

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        pid = getattr(record, "prediction_id", None)
        if pid:
            line["prediction_id"] = pid
        if self._replica:
            line["replica"] = self._replica
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


__all__ = ["OPS_PATHS", "JSONFormatter", "Metrics", "Operations"]
