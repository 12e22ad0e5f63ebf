"""``FluxClient`` and ``AsyncFluxClient``: the same methods, the same decisions, different I/O.

Every decision lives in :mod:`flux_tools._protocol`; the classes here only run its actions: send a
request, sleep, report progress. ``tests/core/test_parity.py`` keeps their public APIs in step.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx2

from ._exceptions import TOKEN_ENV_VARS
from ._image_inputs import DEFAULT_MAX_IMAGE_BYTES, LocalImages, image_dirs_from_env
from ._inputs import FluxInput
from ._policy import PollSchedule, RetryPolicy
from ._prediction import GenerationResult, Prediction
from ._protocol import (
    CLEANUP_SECONDS,
    Action,
    Call,
    Flow,
    LoadImage,
    Outcome,
    PredictionFlows,
    Reply,
    Sleep,
    origin,
)
from ._registry import DEFAULT_EDIT_MODEL, DEFAULT_MODEL, normalize_model_name
from ._version import __version__

T = TypeVar("T")
logger = logging.getLogger("flux_tools")

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
#: Overall deadline of a wait or a generation, in seconds.
DEFAULT_TIMEOUT = 300.0
ProgressCallback = Callable[[Prediction], Any]
"""Called with each state seen while waiting; may be a coroutine function in the async client."""


class BearerAuth(httpx2.Auth):
    """Adds the token to requests for the API's own origin, and to no other."""

    def __init__(self, token: str | None, api_origin: tuple[str, str, int | None]) -> None:
        self._token = token
        self._origin = api_origin

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        if self._token and origin(request.url) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return f"BearerAuth(token={'set' if self._token else 'unset'})"


def resolve_token(api_token: str | None) -> str | None:
    if api_token:
        return api_token
    for name in TOKEN_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def resolve_model(model: str | None) -> str:
    return normalize_model_name(model or os.environ.get("FLUX_MODEL") or DEFAULT_MODEL)


def resolve_edit_model(model: str | None) -> str:
    return normalize_model_name(model or os.environ.get("FLUX_EDIT_MODEL") or DEFAULT_EDIT_MODEL)


def resolve_base_url(base_url: str | None) -> str:
    # REPLICATE_BASE_URL is honoured too: it is what the official client reads, and ignoring it
    # would send a gateway's key to api.replicate.com.
    url = base_url or os.environ.get("FLUX_BASE_URL") or os.environ.get("REPLICATE_BASE_URL")
    url = (url or DEFAULT_BASE_URL).strip().rstrip("/")
    parsed = httpx2.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {url!r}")
    return url


class _ClientConfig:
    """Configuration shared by both clients; the token is kept out of every repr."""

    def __init__(
        self,
        *,
        api_token: str | None,
        base_url: str | None,
        model: str | None,
        edit_model: str | None,
        timeout: float,
        sync_wait: int,
        connect_timeout: float,
        read_timeout: float,
        retry: RetryPolicy | None,
        poll: PollSchedule | None,
        image_dirs: Sequence[str | Path],
        max_image_bytes: int,
    ) -> None:
        self._token = resolve_token(api_token)
        self.base_url = resolve_base_url(base_url)
        # Local images are read only from these folders (and per-call extra ones).
        self.images = LocalImages([*image_dirs, *image_dirs_from_env()], max_image_bytes)
        self._flows = PredictionFlows(
            base_url=self.base_url,
            model=resolve_model(model),
            edit_model=resolve_edit_model(edit_model),
            timeout=timeout,
            sync_wait=sync_wait,
            retry=retry or RetryPolicy(),
            schedule=poll or PollSchedule(),
            secrets=(self._token,),
        )
        self.model = self._flows.model
        self.edit_model = self._flows.edit_model
        self.timeout = timeout
        self._auth = BearerAuth(self._token, origin(self.base_url))
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._headers = {"User-Agent": f"flux-tools/{__version__}", "Accept": "application/json"}

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def __repr__(self) -> str:
        token = "set" if self._token else "unset"
        name = type(self).__name__
        return f"{name}(base_url={self.base_url!r}, model={self.model!r}, token={token})"

    def _request_for(self, http: httpx2.Client | httpx2.AsyncClient, call: Call) -> httpx2.Request:
        read = self._read_timeout if call.read_timeout is None else call.read_timeout
        timeout = httpx2.Timeout(read, connect=self._connect_timeout)
        return http.build_request(
            call.method,
            call.url,
            json=call.json,
            headers={**self._headers, **call.headers},
            timeout=timeout,
        )

    @staticmethod
    def _reply(response: httpx2.Response, started: float) -> Reply:
        logger.debug(
            "%s %s -> %s in %.3f s",
            response.request.method,
            response.request.url.path,
            response.status_code,
            time.monotonic() - started,
        )
        return Reply(response.status_code, response.headers, response.content)


class FluxClient(_ClientConfig):
    """Blocking client of a Replicate-compatible predictions API.

    >>> with FluxClient() as client:                       # doctest: +SKIP
    ...     result = client.generate(prompt="a black forest cake")
    ...     result.save("images")
    """

    def __init__(
        self,
        api_token: str | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        edit_model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        sync_wait: int = 60,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        image_dirs: Sequence[str | Path] = (),
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        http_client: httpx2.Client | None = None,
    ) -> None:
        super().__init__(
            api_token=api_token,
            base_url=base_url,
            model=model,
            edit_model=edit_model,
            timeout=timeout,
            sync_wait=sync_wait,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=retry,
            poll=poll,
            image_dirs=image_dirs,
            max_image_bytes=max_image_bytes,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx2.Client()

    # -- the driver: the only place where this client does I/O --------------------------------

    def _run(self, flow: Flow[T], on_progress: ProgressCallback | None = None) -> T:
        outcome: Outcome = None
        interrupt: BaseException | None = None
        while True:
            try:
                action = flow.throw(interrupt) if interrupt else flow.send(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            outcome, interrupt = None, None
            try:
                outcome = self._do(action, on_progress)
            except httpx2.TransportError as exc:
                outcome = exc
            except BaseException as exc:  # Ctrl-C, or a callback's error: the flow cleans up
                interrupt = exc

    def _do(self, action: Action, on_progress: ProgressCallback | None) -> Outcome:
        if isinstance(action, Call):
            started = time.monotonic()
            response = self._http.send(self._request_for(self._http, action), auth=self._auth)
            return self._reply(response, started)
        if isinstance(action, Sleep):
            time.sleep(action.seconds)
        elif isinstance(action, LoadImage):
            return action.images.load(action.source, action.field)
        elif on_progress is not None:
            on_progress(action.prediction)
        return None

    # -- the API ----------------------------------------------------------------------------

    def create(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        sync_wait: int = 0,
        cancel_after: float | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> Prediction:
        """Start a prediction and return it at once (or after ``sync_wait`` seconds at most)."""
        flow = self._flows.create(
            input,
            fields,
            model=model,
            images=self.images.with_dirs(image_dirs),
            sync_wait=sync_wait,
            cancel_after=cancel_after,
        )
        return self._run(flow)

    def get(self, prediction_id: str) -> Prediction:
        return self._run(self._flows.get(prediction_id))

    def cancel(self, prediction_id: str) -> Prediction:
        return self._run(self._flows.cancel(prediction_id))

    def wait(
        self,
        prediction: Prediction | str,
        *,
        timeout: float | None = None,
        cancel_on_timeout: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> Prediction:
        """Wait until the prediction is over (any outcome) and return its final state."""
        flow = self._flows.wait(prediction, timeout=timeout, cancel_on_timeout=cancel_on_timeout)
        return self._run(flow, on_progress)

    def generate(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult:
        """Generate and wait: returns the output URLs, or raises a :class:`FluxError`."""
        images = self.images.with_dirs(image_dirs)
        flow = self._flows.generate(input, fields, model=model, timeout=timeout, images=images)
        return self._bind(self._run(flow, on_progress))

    def edit(
        self,
        image: str | Path,
        prompt: str,
        *,
        model: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult:
        """Edit an image (URL, data URI, local path or prediction id) as ``prompt`` says,
        with the edit model (``flux-kontext-pro`` unless ``edit_model``/``model`` say otherwise)."""
        images = self.images.with_dirs(image_dirs)
        flow = self._flows.edit(
            str(image), prompt, fields, model=model, timeout=timeout, images=images
        )
        return self._bind(self._run(flow, on_progress))

    def result(self, prediction: Prediction) -> GenerationResult:
        """The result of a finished prediction (raises if it did not succeed)."""
        return self._bind(self._flows.result(prediction, prediction.model or self.model))

    def _bind(self, result: GenerationResult) -> GenerationResult:
        result._http, result._auth = self._http, self._auth
        return result

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> FluxClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncFluxClient(_ClientConfig):
    """Async client: the same methods as :class:`FluxClient`, awaited. Works on asyncio and trio."""

    def __init__(
        self,
        api_token: str | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        edit_model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        sync_wait: int = 60,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        image_dirs: Sequence[str | Path] = (),
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            api_token=api_token,
            base_url=base_url,
            model=model,
            edit_model=edit_model,
            timeout=timeout,
            sync_wait=sync_wait,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=retry,
            poll=poll,
            image_dirs=image_dirs,
            max_image_bytes=max_image_bytes,
        )
        self._owns_http = http_client is None
        # Many predictions in flight must not queue for pooled connections (held Prefer: wait
        # creates would starve the polls), but few idle ones are kept: the pool scans them on
        # every request. 1000 in flight through a gateway: 4.4-4.7 s of CPU keeping 20, 5.5 s
        # keeping 100, 15.7 s keeping all (benchmarks/run.py's burst, measured on 2 cores).
        self._http = http_client or httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=20)
        )

    # -- the driver: the only place where this client does I/O --------------------------------

    async def _run(self, flow: Flow[T], on_progress: ProgressCallback | None = None) -> T:
        outcome: Outcome = None
        interrupt: BaseException | None = None
        cleaning_up = False
        while True:
            try:
                action = flow.throw(interrupt) if interrupt else flow.send(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            outcome, interrupt = None, None
            try:
                if cleaning_up:
                    # After a cancellation, the flow's last requests (cancel upstream) must run
                    # even though this task is being cancelled: shield them, briefly.
                    with anyio.CancelScope(shield=True) as scope:
                        scope.deadline = anyio.current_time() + CLEANUP_SECONDS
                        outcome = await self._do(action, on_progress)
                    if scope.cancelled_caught:
                        outcome = httpx2.TimeoutException("cleanup deadline passed")
                else:
                    outcome = await self._do(action, on_progress)
            except httpx2.TransportError as exc:
                outcome = exc
            except BaseException as exc:  # cancellation, or a callback's error
                interrupt = exc
                cleaning_up = cleaning_up or not isinstance(exc, Exception)

    async def _do(self, action: Action, on_progress: ProgressCallback | None) -> Outcome:
        if isinstance(action, Call):
            started = time.monotonic()
            request = self._request_for(self._http, action)
            response = await self._http.send(request, auth=self._auth)
            return self._reply(response, started)
        if isinstance(action, Sleep):
            await anyio.sleep(action.seconds)
        elif isinstance(action, LoadImage):  # file reads off the event loop
            return await anyio.to_thread.run_sync(action.images.load, action.source, action.field)
        elif on_progress is not None:
            maybe = on_progress(action.prediction)
            if inspect.isawaitable(maybe):
                await maybe
        return None

    # -- the API ----------------------------------------------------------------------------

    async def create(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        sync_wait: int = 0,
        cancel_after: float | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> Prediction:
        """Start a prediction and return it at once (or after ``sync_wait`` seconds at most)."""
        flow = self._flows.create(
            input,
            fields,
            model=model,
            images=self.images.with_dirs(image_dirs),
            sync_wait=sync_wait,
            cancel_after=cancel_after,
        )
        return await self._run(flow)

    async def get(self, prediction_id: str) -> Prediction:
        return await self._run(self._flows.get(prediction_id))

    async def cancel(self, prediction_id: str) -> Prediction:
        return await self._run(self._flows.cancel(prediction_id))

    async def wait(
        self,
        prediction: Prediction | str,
        *,
        timeout: float | None = None,
        cancel_on_timeout: bool = True,
        on_progress: ProgressCallback | None = None,
    ) -> Prediction:
        """Wait until the prediction is over (any outcome) and return its final state."""
        flow = self._flows.wait(prediction, timeout=timeout, cancel_on_timeout=cancel_on_timeout)
        return await self._run(flow, on_progress)

    async def generate(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult:
        """Generate and wait: returns the output URLs, or raises a :class:`FluxError`."""
        images = self.images.with_dirs(image_dirs)
        flow = self._flows.generate(input, fields, model=model, timeout=timeout, images=images)
        return self._bind(await self._run(flow, on_progress))

    async def edit(
        self,
        image: str | Path,
        prompt: str,
        *,
        model: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult:
        """Edit an image (URL, data URI, local path or prediction id) as ``prompt`` says,
        with the edit model (``flux-kontext-pro`` unless ``edit_model``/``model`` say otherwise)."""
        images = self.images.with_dirs(image_dirs)
        flow = self._flows.edit(
            str(image), prompt, fields, model=model, timeout=timeout, images=images
        )
        return self._bind(await self._run(flow, on_progress))

    def result(self, prediction: Prediction) -> GenerationResult:
        """The result of a finished prediction (raises if it did not succeed)."""
        return self._bind(self._flows.result(prediction, prediction.model or self.model))

    def _bind(self, result: GenerationResult) -> GenerationResult:
        result._ahttp, result._auth = self._http, self._auth
        return result

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncFluxClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["AsyncFluxClient", "FluxClient"]
