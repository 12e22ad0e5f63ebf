"""An offline emulator of the Replicate predictions API, for tests, demos and benchmarks.

It validates inputs with the same registry as the client (``flux_tools._registry``), walks each
prediction through ``starting`` → ``processing`` → a terminal status on a clock, serves real
(generated) images, and can be scripted to fail: server-wide with ``Fault`` objects, or per
prediction with ``[emulator:...]`` markers in the prompt.

    with Emulator(latency=0.2) as emu:
        client = SomeClient(base_url=emu.base_url)

It answers as Replicate does wherever the official clients look (``replicate`` for Python and
npm): blocking-API statuses, 401 without a bearer token, the model endpoint with its OpenAPI
schema, creates by version, the predictions list, ``accounts.current``, a server-sent-events
``urls.stream``, the Files API for file inputs, signed webhooks (to loopback addresses), and on
request Replicate's rate limits (``rate_limits=``) and HTTPS with a test CA it generates
(``https=True``; hand ``emulator.ca_bundle`` to the client).

Pillow is needed only once an image is rendered, trustme only for HTTPS (the ``[emulator]``
extra holds both).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import threading
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ._catalog import Catalog
from ._faults import Fault, FaultBook
from ._ratelimit import Limiter, RateLimit, RateLimits
from ._server import Server
from ._state import Prediction, RecordedRequest, Stats, Store
from ._webhooks import Delivery

__all__ = [
    "Delivery",
    "Emulator",
    "Fault",
    "Prediction",
    "RateLimit",
    "RateLimits",
    "RecordedRequest",
    "Stats",
]

#: The token ``Emulator.token`` hands out when none is pinned (any non-empty one is accepted).
PLACEHOLDER_TOKEN = "r8_flux-emulator-token"


class Emulator:
    """A Replicate-compatible predictions server on its own event loop in a daemon thread.

    Use it as a (sync or async) context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "/v1",
        latency: float = 2.0,
        latency_jitter: float = 0.0,
        queue_time: float = 0.05,
        token: str | None = None,
        honor_prefer_wait: bool = True,
        foreign_urls: bool = False,
        output_mode: Literal["url", "data"] = "url",
        data_retention: float | None = None,
        early_output: bool = False,
        mislabel_files: bool = False,
        image_scale: float = 1.0,
        faults: Sequence[Fault] = (),
        rng_seed: int | None = None,
        rate_limits: RateLimits | str | None = None,
        https: bool = False,
        blocking_answers: Literal["replicate", "final"] = "replicate",
        model_endpoint: bool = True,
        page_size: int = 100,
        extra_models: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Configure (nothing listens before ``start()``).

        ``latency`` (seconds of run time) is drawn uniformly within ``± latency_jitter``.
        ``token``: the one bearer token accepted; None accepts any, but a request without one
        is refused with 401 either way, as Replicate does.
        ``rate_limits``: ``RateLimits`` or the ``--rate-limit`` syntax (``"replicate"``,
        ``"creates=600/60,reads=3000/60"``, ``"creates=6/60:burst=1"``); None: unlimited.
        ``https``: serve TLS on loopback with a generated CA (needs ``trustme``); its bundle is
        ``ca_bundle`` once started, and outputs are ``https:`` URLs.
        ``blocking_answers``: ``"replicate"`` answers a ``Prefer: wait`` create as Replicate
        does (``processing`` with the output once finished, ``starting`` when the wait ran
        out); ``"final"`` answers the status as it is.
        ``early_output``: a finished ``Prefer: wait`` answer says ``processing`` with its
        output even with ``blocking_answers="final"`` (the default behaviour already does).
        ``model_endpoint``: False answers the model endpoints 404, as a gateway that re-sells
        only predictions does.
        ``page_size``: predictions per page of the list endpoint.
        ``extra_models``: models outside the registry, ``owner/name`` → OpenAPI schema (see
        ``add_model``).
        """
        if output_mode not in ("url", "data"):
            raise ValueError(f"output_mode must be 'url' or 'data', not {output_mode!r}")
        if min(latency, latency_jitter, queue_time) < 0 or image_scale <= 0:
            raise ValueError("latency, latency_jitter, queue_time must be >= 0, image_scale > 0")
        prefix = prefix.strip().rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        if blocking_answers not in ("replicate", "final"):
            raise ValueError("blocking_answers must be 'replicate' or 'final'")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self._host, self._port, self._prefix = host, port, prefix
        self._foreign_urls = foreign_urls
        self._pinned_token = token
        self._https = https
        self._faults = FaultBook(tuple(faults))
        self._limiter = Limiter(RateLimits.coerce(rate_limits))
        self._catalog = Catalog()
        for name, schema in (extra_models or {}).items():
            self.add_model(name, schema)
        self._store = Store(
            latency=latency,
            latency_jitter=latency_jitter,
            queue_time=queue_time,
            data_retention=data_retention,
            output_mode=output_mode,
            mislabel_files=mislabel_files,
            image_scale=image_scale,
            rng_seed=rng_seed,
        )
        self.stats = Stats(self._store.completions)
        self._server = Server(
            store=self._store,
            catalog=self._catalog,
            stats=self.stats,
            faults=self._faults,
            limiter=self._limiter,
            prefix=prefix,
            token=token,
            honor_prefer_wait=honor_prefer_wait,
            early_output=early_output,
            blocking_answers=blocking_answers,
            model_endpoint=model_endpoint,
            page_size=page_size,
        )
        #: The CA certificate (PEM) to trust in HTTPS mode, once started; None over http.
        self.ca_bundle: str | None = None
        self._ca_dir: tempfile.TemporaryDirectory[str] | None = None
        self.origin = ""
        self.foreign_origin = ""
        self.base_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving; returns once both listeners accept connections."""
        if self._thread is not None:
            raise RuntimeError("an Emulator can be started only once; make a new one")
        if self._https:
            self._server.ssl_context = self._make_tls()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="flux-emulator", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close the listeners and every open connection. Idempotent."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or not thread.is_alive() or loop is None or stop_event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=30)
        if self._ca_dir is not None:
            self._ca_dir.cleanup()
            self._ca_dir = None

    def _make_tls(self) -> ssl.SSLContext:
        """A server context with a certificate from a fresh test CA; writes ``ca_bundle``."""
        try:
            import trustme
        except ImportError:
            raise RuntimeError(
                "Emulator(https=True) needs trustme: pip install 'flux-tools[emulator]'"
            ) from None
        ca = trustme.CA(organization_name="flux-tools emulator test CA")
        names = dict.fromkeys([self._host, "127.0.0.1", "localhost", "::1"])
        cert = ca.issue_cert(*names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._ca_dir = tempfile.TemporaryDirectory(prefix="flux-emulator-ca-")
        path = Path(self._ca_dir.name) / "ca.pem"
        ca.cert_pem.write_to_path(str(path))
        self.ca_bundle = str(path)
        return context

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this emulator's CA (HTTPS mode only)."""
        if self.ca_bundle is None:
            raise RuntimeError("ssl_context() is for Emulator(https=True), once started")
        return ssl.create_default_context(cafile=self.ca_bundle)

    @property
    def webhook_secret(self) -> str:
        """The key webhooks are signed with (``GET /v1/webhooks/default/secret`` answers it)."""
        return self._server.signer.secret

    @property
    def webhooks(self) -> list[Delivery]:
        """The webhooks sent so far, in order (only to loopback addresses)."""
        return self._server.deliveries.snapshot()

    def wait_for_webhooks(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """The webhooks sent so far, once at least ``count`` were (their answers recorded);
        raises :class:`TimeoutError` after ``timeout`` seconds."""
        return self._server.deliveries.wait_for(count, timeout)

    @property
    def latency(self) -> float:
        """The mean run time in seconds (each prediction's is drawn within ± latency_jitter)."""
        return self._store.latency

    @property
    def latency_jitter(self) -> float:
        return self._store.latency_jitter

    @property
    def token(self) -> str:
        """A bearer token this emulator accepts: the pinned one, else a placeholder."""
        return self._pinned_token if self._pinned_token is not None else PLACEHOLDER_TOKEN

    def client_env(self) -> dict[str, str]:
        """Environment variables that point an official client (or ours) at this emulator.

        ``REPLICATE_BASE_URL`` is the origin (the Python client adds ``/v1``; the npm client
        takes ``base_url`` as its ``baseUrl`` instead). In HTTPS mode the CA bundle goes in
        ``SSL_CERT_FILE`` (Python) and ``NODE_EXTRA_CA_CERTS`` (node).
        """
        env = {"REPLICATE_API_TOKEN": self.token, "REPLICATE_BASE_URL": self.origin}
        if self.ca_bundle is not None:
            env["SSL_CERT_FILE"] = env["NODE_EXTRA_CA_CERTS"] = self.ca_bundle
        return env

    def add_model(
        self,
        name: str,
        openapi_schema: Mapping[str, Any],
        *,
        output: Literal["single", "list"] = "single",
        version: str | None = None,
        edit_field: str | None = None,
    ) -> str:
        """Serve a model the registry does not know, validated from its schema; its version id.

        ``openapi_schema`` is what the model endpoint then answers as
        ``latest_version.openapi_schema`` (a bare ``Input`` schema is wrapped); creates are
        validated with ``flux_tools.input_model_from_schema``. Takes effect at once.
        """
        return self._catalog.add(
            name, dict(openapi_schema), output=output, version=version, edit_field=edit_field
        ).version

    def set_rate_limits(self, rate_limits: RateLimits | str | None) -> None:
        """Change the enforced limits while running; every bucket starts full again."""
        self._limiter.set_limits(RateLimits.coerce(rate_limits))

    @property
    def rate_limits(self) -> RateLimits | None:
        return self._limiter.limits

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:
            if ready.is_set():
                raise
            self._startup_error = exc
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        try:
            api_port, foreign_port = await self._server.listen(self._host, self._port)
            host = f"[{self._host}]" if ":" in self._host else self._host
            scheme = "https" if self._https else "http"
            self.origin = f"{scheme}://{host}:{api_port}"
            self.foreign_origin = f"{scheme}://{host}:{foreign_port}"
            self.base_url = self.origin + self._prefix
            base = self.foreign_origin if self._foreign_urls else self.origin
            self._store.api_base = base + self._prefix
            self._store.file_base = base
            ready.set()
            await self._stop_event.wait()
        finally:
            await self._server.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Emulator:
        # start() blocks briefly on the server thread; keep the caller's loop free meanwhile.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # scripting and inspection ------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset_stats(self) -> None:
        self.stats.reset()

    @property
    def predictions(self) -> Mapping[str, Prediction]:
        """A read-only snapshot of the stored predictions by id."""
        return types.MappingProxyType(self._store.snapshot())

    def prediction_json(self, prediction_id: str) -> dict[str, Any]:
        """The prediction as a GET would show it now (KeyError for an unknown id)."""
        prediction = self._store.get(prediction_id)
        if prediction is None:
            raise KeyError(prediction_id)
        return self._store.to_json(prediction, time.monotonic())
