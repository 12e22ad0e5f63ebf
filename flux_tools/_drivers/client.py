"""``FluxClient`` and ``AsyncFluxClient``: the same methods, the same decisions, different I/O.

Every decision lives in :mod:`flux_tools._protocol`; the classes here only run its actions: send a
request, sleep, report progress. ``tests/client/test_parity.py`` keeps their public APIs in step.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, TypeVar

import anyio
import anyio.lowlevel
import httpx2
from typing_extensions import Unpack

from .._base.errors import (
    ConfigError,
    DownloadError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
)
from .._base.urls import origin
from .._domain.inputs import FluxInput
from .._domain.limits import RateLimiter, RateLimits
from .._domain.polling import DurationStats, PollSchedule, RetryPolicy
from .._domain.prediction import GenerationResult, Prediction
from .._domain.pricing import Budget, PriceTable
from .._domain.registry import normalize_model_name
from .._domain.shared import SharedBudget, SharedLimiter
from .._protocol.actions import (
    MAX_REPLY_BYTES,
    STOP_WAITING,
    Action,
    Call,
    Flow,
    LoadImage,
    Outcome,
    Reply,
    Report,
    Sleep,
    Spend,
)
from .._protocol.flows import CLEANUP_SECONDS, PredictionFlows, Running, spend_in_process
from .._protocol.listing import PredictionList, list_predictions
from .._settings.environment import DEFAULT_BASE_URL, DEFAULT_TIMEOUT
from .._settings.settings import Settings
from .._version import __version__
from .downloads import DownloadPolicy, asave_outputs, save_outputs
from .local_images import LocalImages
from .spending import Spending

T = TypeVar("T")
logger = logging.getLogger("flux_tools")

ProgressCallback = Callable[[Prediction], Any]
"""Called with each state seen while waiting; may be a coroutine function in the async client."""


class ClientOptions(TypedDict, total=False):
    """Settings a client takes as keywords, over those of ``settings=`` (or the environment)."""

    base_url: str | None
    model: str | None
    edit_model: str | None
    timeout: float
    sync_wait: int
    connect_timeout: float
    read_timeout: float
    image_dirs: Sequence[str | Path]
    max_image_bytes: int


def _on_asyncio() -> bool:
    """Whether the running event loop is asyncio's (anyio also runs on trio)."""
    try:
        return asyncio.current_task() is not None
    except RuntimeError:  # no asyncio loop in this thread: trio
        return False


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


class _ClientConfig:
    """What both clients share: the settings, the flows, the auth. The token is in no repr."""

    def __init__(
        self,
        api_token: str | None,
        settings: Settings | None,
        retry: RetryPolicy | None,
        poll: PollSchedule | None,
        options: ClientOptions,
        spending: Spending | None = None,
    ) -> None:
        chosen: dict[str, Any] = {"api_token": api_token, **options}
        if settings is None:
            settings = Settings.from_env(**chosen)
        else:
            settings = settings.with_options(**chosen)
        self.settings = settings
        self.base_url = settings.base_url
        # Local images are read only from these folders (and per-call extra ones).
        self.images = LocalImages(settings.image_dirs, settings.max_image_bytes)
        self._flows = PredictionFlows(
            base_url=self.base_url,
            model=settings.model,
            edit_model=settings.edit_model,
            timeout=settings.timeout,
            sync_wait=settings.sync_wait,
            retry=retry or RetryPolicy(),
            schedule=poll or PollSchedule(),
            secrets=(settings.token,),
            **(spending or Spending()).resolve(settings),
        )
        # What the client spends from, shared by its generations (and by any client given them:
        # ``AsyncFluxClient(limiter=client.limiter, budget=client.budget, ...)`` is one account).
        self.limiter, self.budget = self._flows.limiter, self._flows.budget
        self.prices, self.durations = self._flows.prices, self._flows.durations
        self.retry, self.poll = self._flows.requests.retry, self._flows.schedule
        self.model = self._flows.model
        self.edit_model = self._flows.edit_model
        self.timeout = settings.timeout
        self._auth = BearerAuth(settings.token, origin(self.base_url))
        # Downloads may reach local or private addresses only when the API itself is on one.
        self._downloads = DownloadPolicy.for_api(self.base_url)
        self._headers = {"User-Agent": f"flux-tools/{__version__}", "Accept": "application/json"}

    @property
    def has_token(self) -> bool:
        return self.settings.has_token

    def __repr__(self) -> str:
        token = "set" if self.has_token else "unset"
        name = type(self).__name__
        return f"{name}(base_url={self.base_url!r}, model={self.model!r}, token={token})"

    def _request_for(self, http: httpx2.Client | httpx2.AsyncClient, call: Call) -> httpx2.Request:
        read = self.settings.read_timeout if call.read_timeout is None else call.read_timeout
        connect = self.settings.connect_timeout
        if call.time_left is not None:  # no single read may outlast the exchange's deadline
            read, connect = min(read, call.time_left), min(connect, call.time_left)
        return http.build_request(
            call.method,
            call.url,
            json=call.json,
            headers={**self._headers, **call.headers},
            timeout=httpx2.Timeout(read, connect=connect),
        )

    def _result(self, result: GenerationResult) -> GenerationResult:
        # How result.save() works: a client of its own with these settings, which trusts the
        # same addresses (a loopback emulator's downloads, say).
        result._saver = _ResultSaver(self.settings)
        return result

    # -- what needs no request: the same in both clients -----------------------------------------

    def input_model(self, model: str | None = None) -> type[FluxInput] | None:
        """The input model ``model`` (default: the client's) is validated with now: the API's
        live schema once fetched (see ``model_schema``), else the package's snapshot; None for a
        model neither describes (the API alone validates its input)."""
        return self._flows.payloads.input_model(self._model_name(model))

    def validate(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        **fields: Any,
    ) -> FluxInput | dict[str, Any]:
        """Check an input against the model's schema without sending anything: the input model,
        or a :class:`FluxInputError` naming each field and what it allows. Image sources are
        checked for their form only (a file is read when a generation is sent)."""
        return self._flows.payloads.validate(input, fields, self._model_name(model))

    def estimate(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        **fields: Any,
    ) -> float | None:
        """The estimated cost in USD of one generation of ``model`` with this input (the API's
        form, as ``Prediction.input`` echoes it), from the prices in use; None when no price is
        known. Nothing is validated or sent."""
        payload = input.to_api() if isinstance(input, FluxInput) else {**(input or {}), **fields}
        return self._flows.estimate(self._model_name(model), payload)

    def _model_name(self, model: str | None) -> str:
        try:
            return normalize_model_name(model or self.model)
        except ValueError as exc:
            raise FluxInputError(f"model: {exc}") from None

    @staticmethod
    def _log(response: httpx2.Response, started: float) -> None:
        logger.debug(
            "%s %s -> %s in %.3f s",
            response.request.method,
            response.request.url.path,
            response.status_code,
            time.monotonic() - started,
        )

    @staticmethod
    def _save_failed(result: GenerationResult, directory: Path, exc: OSError) -> DownloadError:
        reason = exc.strerror or str(exc)
        return DownloadError.not_saved(result.prediction_id, directory, reason, result.urls)


class FluxClient(_ClientConfig):
    """Blocking client of a Replicate-compatible predictions API.

    Settings come from ``settings=`` (default: :meth:`Settings.from_env`), with the keyword
    options (:class:`ClientOptions`) on top.

    >>> with FluxClient() as client:                       # doctest: +SKIP
    ...     result = client.generate(prompt="a black forest cake")
    ...     client.save(result, "images")
    """

    def __init__(
        self,
        api_token: str | None = None,
        *,
        settings: Settings | None = None,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        http_client: httpx2.Client | None = None,
        limiter: RateLimiter | SharedLimiter | RateLimits | None = None,
        budget: Budget | SharedBudget | float | None = None,
        prices: PriceTable | None = None,
        durations: DurationStats | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        spending = Spending(limiter, budget, prices, durations)
        super().__init__(api_token, settings, retry, poll, options, spending)
        self._owns_http = http_client is None
        self._http = http_client or httpx2.Client()
        self._stopped = threading.Event()

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
            delay, call = self._flows.requests.slot(action)  # the account's budgets, shared
            if delay > 0:
                time.sleep(delay)
            reply = self._send(call)
            self._flows.requests.replied(call, reply)
            return reply
        if isinstance(action, Sleep):
            self._stopped.wait(action.seconds)  # cut short by stop_waiting()
        elif isinstance(action, LoadImage):
            return action.images.load(action.source, action.field)
        elif isinstance(action, Spend):
            budget = self._flows.budget
            if not isinstance(budget, Budget):
                raise ConfigError(
                    "A budget shared by replicas (FLUX_STATE_URL) is kept with round trips to "
                    "the state server: use it with AsyncFluxClient, not the blocking FluxClient."
                )
            return spend_in_process(budget, action)
        else:
            if on_progress is not None:
                on_progress(action.prediction)
            return STOP_WAITING if self._stopped.is_set() else None
        return None

    def stop_waiting(self) -> None:
        """End every soft wait now and from now on (``run`` and ``follow`` with a ``budget``):
        each returns :class:`Running` at its next state, the prediction left running, not
        canceled. What a server shutting down does to hand its predictions over."""
        self._stopped.set()

    def _send(self, call: Call) -> Reply:
        """One exchange, its body read in chunks up to a cap and within ``call.time_left``."""
        started = time.monotonic()
        ends = None if call.time_left is None else started + call.time_left
        request = self._request_for(self._http, call)
        response = self._http.send(request, auth=self._auth, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    return Reply(response.status_code, response.headers, b"", too_large=True)
                if ends is not None and time.monotonic() > ends:
                    raise httpx2.ReadTimeout("the answer outlasted the deadline", request=request)
        finally:
            response.close()
        self._log(response, started)
        return Reply(response.status_code, response.headers, bytes(body))

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
        """Start a prediction and return it at once (or after ``sync_wait`` seconds at most,
        1-60)."""
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

    def list_predictions(self, *, created_after: datetime) -> PredictionList:
        """The account's predictions created after ``created_after``, newest first (every page
        the API gives, up to a bound; ``.complete`` says whether it was read to its end).
        Raises :class:`FluxAPIError` when the API cannot list."""
        return self._run(list_predictions(self._flows.requests, created_after))

    def model_schema(
        self, model: str | None = None, *, refresh: bool = False
    ) -> type[FluxInput] | None:
        """The input model ``model`` (default: the client's) is validated with: the schema the
        API publishes (``GET {base}/models/{owner}/{name}``, fetched once and cached), else the
        package's snapshot; None for a model neither describes. Its ``model_json_schema()`` is
        a tool schema; ``schema_source`` says ``live`` or ``snapshot``."""
        return self._run(self._flows.model_schema(model, refresh=refresh))

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
        """Wait until the prediction is over (any outcome) and return its final state.

        ``cancel_on_timeout=True``: you own the prediction; at the deadline, or when
        interrupted, it is canceled upstream. False: you only watch it; it is never canceled.
        """
        flow = self._flows.wait(prediction, timeout=timeout, owned=cancel_on_timeout)
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
        return self._result(self._run(flow, on_progress))

    def edit(
        self,
        image: str | Path | Sequence[str | Path],
        prompt: str,
        *,
        model: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult:
        """Edit an image (URL, data URI, local path or prediction id), or compose from several
        (a list, for models that take reference images), as ``prompt`` says,
        with the edit model (``flux-kontext-pro`` unless ``edit_model``/``model`` say otherwise)."""
        images = self.images.with_dirs(image_dirs)
        flow = self._flows.edit(image, prompt, fields, model=model, timeout=timeout, images=images)
        return self._result(self._run(flow, on_progress))

    def run(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        budget: float | None = None,
        timeout: float | None = None,
        sync_wait: int | None = None,
        cancel_after: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult | Running:
        """Create and wait up to ``budget`` seconds: the result, or :class:`Running` (the
        prediction goes on, not canceled; :meth:`follow` it later by its id). This caller owns
        the prediction: an interrupt, or the hard ``timeout``, cancels it upstream."""
        flow = self._flows.run(
            input,
            fields,
            model=model,
            timeout=timeout,
            budget=budget,
            sync_wait=sync_wait,
            cancel_after=cancel_after,
            images=self.images.with_dirs(image_dirs),
        )
        outcome = self._run(flow, on_progress)
        return self._result(outcome) if isinstance(outcome, GenerationResult) else outcome

    def follow(
        self,
        prediction: Prediction | str,
        *,
        budget: float | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult | Running:
        """Watch a prediction (never canceled from here) up to ``budget`` seconds: the result
        once it succeeded, or :class:`Running`; raises if it failed."""
        outcome = self._run(
            self._flows.follow(prediction, budget=budget, timeout=timeout), on_progress
        )
        return self._result(outcome) if isinstance(outcome, GenerationResult) else outcome

    def result(self, prediction: Prediction) -> GenerationResult:
        """The result of a finished prediction (raises if it did not succeed)."""
        return self._result(self._flows.result(prediction, prediction.model or self.model))

    def save(
        self, result: GenerationResult, directory: str | Path, *, max_bytes: int | None = None
    ) -> list[Path]:
        """Download every output of ``result`` into ``directory`` (created if needed); return
        the paths, also set as ``result.files``. Raises :class:`DownloadError` (its message
        says where the image still is) when it cannot."""
        folder = Path(directory)
        try:
            files = save_outputs(
                result.urls,
                folder,
                stem=result.prediction_id,
                http=self._http,
                auth=self._auth,
                max_bytes=max_bytes,
                policy=self._downloads,
                prediction_id=result.prediction_id,
            )
        except DownloadError as exc:
            exc.prediction_id = exc.prediction_id or result.prediction_id
            exc.urls = exc.urls or tuple(result.urls)
            raise
        except OSError as exc:
            raise self._save_failed(result, folder, exc) from None
        result.files = files
        return files

    def close(self) -> None:
        self._flows.durations.flush()
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
        settings: Settings | None = None,
        retry: RetryPolicy | None = None,
        poll: PollSchedule | None = None,
        http_client: httpx2.AsyncClient | None = None,
        limiter: RateLimiter | SharedLimiter | RateLimits | None = None,
        budget: Budget | SharedBudget | float | None = None,
        prices: PriceTable | None = None,
        durations: DurationStats | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        spending = Spending(limiter, budget, prices, durations)
        super().__init__(api_token, settings, retry, poll, options, spending)
        self._owns_http = http_client is None
        # Many predictions in flight must not queue for pooled connections (held Prefer: wait
        # creates would starve the polls), but few idle ones are kept: the pool scans them on
        # every request. 1000 in flight through a gateway: 4.4-4.7 s of CPU keeping 20, 5.5 s
        # keeping 100, 15.7 s keeping all (benchmarks/run.py's burst, measured on 2 cores).
        self._http = http_client or httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=20)
        )
        self._stopped = False
        self._stop: anyio.Event | None = None

    # -- the driver: the only place where this client does I/O --------------------------------

    async def _run(self, flow: Flow[T], on_progress: ProgressCallback | None = None) -> T:
        outcome: Outcome = None
        interrupt: BaseException | None = None
        deferred: BaseException | None = None
        cleaning_up = False
        while True:
            try:
                action = flow.throw(interrupt) if interrupt else flow.send(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            outcome, interrupt = None, None
            if deferred is not None:
                # Cancelled while a create was in flight: its answer (and so the prediction's
                # id) went to the flow first; now the flow gets the cancellation, and cancels.
                interrupt, deferred, cleaning_up = deferred, None, True
                continue
            try:
                if cleaning_up:
                    # After a cancellation, the flow's last requests (cancel upstream) must run
                    # even though this task is being cancelled: shield them, briefly.
                    with anyio.CancelScope(shield=True) as scope:
                        scope.deadline = anyio.current_time() + CLEANUP_SECONDS
                        outcome = await self._do(action, on_progress)
                    if scope.cancelled_caught:
                        outcome = httpx2.TimeoutException("cleanup deadline passed")
                elif isinstance(action, Call) and action.kind == "create":
                    outcome, deferred = await self._create_shielded(action)
                else:
                    outcome = await self._do(action, on_progress)
            except httpx2.TransportError as exc:
                outcome = exc
            except BaseException as exc:  # cancellation, or a callback's error
                interrupt = exc
                cleaning_up = cleaning_up or not isinstance(exc, Exception)

    async def _create_shielded(self, call: Call) -> tuple[Outcome, BaseException | None]:
        """Send a create that no cancellation may cut off halfway: that would leave a billing
        prediction whose id we never saw. Its own timeouts bound it. A cancellation that came
        meanwhile (an anyio cancel scope's, or asyncio's ``Task.cancel()``) is returned, to be
        delivered once the flow knows the prediction (and so can cancel it)."""
        deferred: BaseException | None = None

        async def send() -> Outcome:
            try:
                return await self._do(call, None)
            except httpx2.TransportError as exc:
                return exc

        with anyio.CancelScope(shield=True):
            if _on_asyncio():
                inner = asyncio.ensure_future(send())
                while True:
                    try:
                        outcome = await asyncio.shield(inner)
                        break
                    except asyncio.CancelledError as exc:  # Task.cancel(): the create goes on
                        deferred = exc
            else:
                outcome = await send()
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException as exc:  # a cancel scope's cancellation, held by the shield
            deferred = deferred or exc
        return outcome, deferred

    async def _do(self, action: Action, on_progress: ProgressCallback | None) -> Outcome:
        if isinstance(action, Call):
            delay, call = await self._slot(action)  # the account's budgets, shared
            if delay > 0 and call.kind == "create":
                with anyio.move_on_after(delay):  # cut short by stop_waiting()
                    await self._stop_event().wait()
                if self._stopped:
                    raise FluxConnectionError(
                        "This server is shutting down: the request was not sent, so nothing "
                        "was created or billed. Send it again: another server takes it.",
                        maybe_created=False,
                    )
            elif delay > 0:
                await anyio.sleep(delay)
            reply = await self._send(call)
            limiter = self._flows.limiter
            if isinstance(limiter, SharedLimiter):
                await limiter.observe_async(call.kind, reply.status, reply.headers)
            else:
                self._flows.requests.replied(call, reply)
            return reply
        if isinstance(action, Sleep):
            if self._stopped:
                return None
            with anyio.move_on_after(action.seconds):  # cut short by stop_waiting()
                await self._stop_event().wait()
        elif isinstance(action, LoadImage):  # file reads off the event loop
            return await anyio.to_thread.run_sync(action.images.load, action.source, action.field)
        elif isinstance(action, Spend):
            return await self._spend(action)
        elif isinstance(action, Report):
            if on_progress is not None:
                maybe = on_progress(action.prediction)
                if inspect.isawaitable(maybe):
                    await maybe
            return STOP_WAITING if self._stopped else None
        return None

    async def _slot(self, call: Call) -> tuple[float, Call]:
        """The account's budgets for ``call``: in-process at once, or a round trip to the state
        server when replicas share them (awaited: the event loop never blocks on it)."""
        requests, limiter = self._flows.requests, self._flows.limiter
        if isinstance(limiter, SharedLimiter):
            delay = await limiter.acquire_async(call.kind, deadline=requests.latest(call))
            return requests.delayed(call, delay)
        return requests.slot(call)

    async def _spend(self, step: Spend) -> Outcome:
        budget = self._flows.budget
        if isinstance(budget, Budget):
            return spend_in_process(budget, step)
        assert isinstance(budget, SharedBudget)
        if step.step == "reserve":
            return await budget.reserve_async(step.model, step.usd)
        if step.step == "release":
            await budget.release_async(step.hold)
        elif step.step == "bind":
            await budget.bind_async(step.prediction_id, step.hold)
        else:
            await budget.settle_async(step.prediction_id, step.status)
        return None

    def _stop_event(self) -> anyio.Event:
        if self._stop is None:
            self._stop = anyio.Event()  # made in the event loop that waits on it
        return self._stop

    def stop_waiting(self) -> None:
        """End every soft wait now and from now on (``run`` and ``follow`` with a ``budget``):
        each returns :class:`Running` at its next state, the prediction left running, not
        canceled. What a server shutting down does to hand its predictions over."""
        self._stopped = True
        if self._stop is not None:
            self._stop.set()

    async def _send(self, call: Call) -> Reply:
        """One exchange, its body read in chunks up to a cap and within ``call.time_left``."""
        started = time.monotonic()
        request = self._request_for(self._http, call)
        try:
            with anyio.fail_after(call.time_left):
                response = await self._http.send(request, auth=self._auth, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_REPLY_BYTES:
                            return Reply(
                                response.status_code, response.headers, b"", too_large=True
                            )
                finally:
                    await response.aclose()
        except TimeoutError:
            raise httpx2.ReadTimeout("the answer outlasted the deadline", request=request) from None
        self._log(response, started)
        return Reply(response.status_code, response.headers, bytes(body))

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
        """Start a prediction and return it at once (or after ``sync_wait`` seconds at most,
        1-60)."""
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

    async def list_predictions(self, *, created_after: datetime) -> PredictionList:
        """The account's predictions created after ``created_after``, newest first (every page
        the API gives, up to a bound; ``.complete`` says whether it was read to its end).
        Raises :class:`FluxAPIError` when the API cannot list."""
        return await self._run(list_predictions(self._flows.requests, created_after))

    async def model_schema(
        self, model: str | None = None, *, refresh: bool = False
    ) -> type[FluxInput] | None:
        """The input model ``model`` (default: the client's) is validated with: the schema the
        API publishes (``GET {base}/models/{owner}/{name}``, fetched once and cached), else the
        package's snapshot; None for a model neither describes. Its ``model_json_schema()`` is
        a tool schema; ``schema_source`` says ``live`` or ``snapshot``."""
        return await self._run(self._flows.model_schema(model, refresh=refresh))

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
        """Wait until the prediction is over (any outcome) and return its final state.

        ``cancel_on_timeout=True``: you own the prediction; at the deadline, or when
        interrupted, it is canceled upstream. False: you only watch it; it is never canceled.
        """
        flow = self._flows.wait(prediction, timeout=timeout, owned=cancel_on_timeout)
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
        return self._result(await self._run(flow, on_progress))

    async def edit(
        self,
        image: str | Path | Sequence[str | Path],
        prompt: str,
        *,
        model: str | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult:
        """Edit an image (URL, data URI, local path or prediction id), or compose from several
        (a list, for models that take reference images), as ``prompt`` says,
        with the edit model (``flux-kontext-pro`` unless ``edit_model``/``model`` say otherwise)."""
        images = self.images.with_dirs(image_dirs)
        flow = self._flows.edit(image, prompt, fields, model=model, timeout=timeout, images=images)
        return self._result(await self._run(flow, on_progress))

    async def run(
        self,
        input: FluxInput | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        budget: float | None = None,
        timeout: float | None = None,
        sync_wait: int | None = None,
        cancel_after: float | None = None,
        on_progress: ProgressCallback | None = None,
        image_dirs: Sequence[str | Path] = (),
        **fields: Any,
    ) -> GenerationResult | Running:
        """Create and wait up to ``budget`` seconds: the result, or :class:`Running` (the
        prediction goes on, not canceled; :meth:`follow` it later by its id). This caller owns
        the prediction: an interrupt, or the hard ``timeout``, cancels it upstream."""
        flow = self._flows.run(
            input,
            fields,
            model=model,
            timeout=timeout,
            budget=budget,
            sync_wait=sync_wait,
            cancel_after=cancel_after,
            images=self.images.with_dirs(image_dirs),
        )
        outcome = await self._run(flow, on_progress)
        return self._result(outcome) if isinstance(outcome, GenerationResult) else outcome

    async def follow(
        self,
        prediction: Prediction | str,
        *,
        budget: float | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult | Running:
        """Watch a prediction (never canceled from here) up to ``budget`` seconds: the result
        once it succeeded, or :class:`Running`; raises if it failed."""
        outcome = await self._run(
            self._flows.follow(prediction, budget=budget, timeout=timeout), on_progress
        )
        return self._result(outcome) if isinstance(outcome, GenerationResult) else outcome

    def result(self, prediction: Prediction) -> GenerationResult:
        """The result of a finished prediction (raises if it did not succeed)."""
        return self._result(self._flows.result(prediction, prediction.model or self.model))

    async def save(
        self, result: GenerationResult, directory: str | Path, *, max_bytes: int | None = None
    ) -> list[Path]:
        """Download every output of ``result`` into ``directory`` (created if needed); return
        the paths, also set as ``result.files``. Raises :class:`DownloadError` (its message
        says where the image still is) when it cannot."""
        folder = Path(directory)
        try:
            files = await asave_outputs(
                result.urls,
                folder,
                stem=result.prediction_id,
                http=self._http,
                auth=self._auth,
                max_bytes=max_bytes,
                policy=self._downloads,
                prediction_id=result.prediction_id,
            )
        except DownloadError as exc:
            exc.prediction_id = exc.prediction_id or result.prediction_id
            exc.urls = exc.urls or tuple(result.urls)
            raise
        except OSError as exc:
            raise self._save_failed(result, folder, exc) from None
        result.files = files
        return files

    async def aclose(self) -> None:
        self._flows.durations.flush()
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


class _ResultSaver:
    """``result.save()``: downloads through a client of its own, made with the settings of the
    client that made the result."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def save(
        self, result: GenerationResult, directory: str | Path, *, max_bytes: int | None = None
    ) -> list[Path]:
        with FluxClient(settings=self._settings) as client:
            return client.save(result, directory, max_bytes=max_bytes)

    async def asave(
        self, result: GenerationResult, directory: str | Path, *, max_bytes: int | None = None
    ) -> list[Path]:
        async with AsyncFluxClient(settings=self._settings) as client:
            return await client.save(result, directory, max_bytes=max_bytes)


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "AsyncFluxClient",
    "ClientOptions",
    "FluxClient",
    "FluxError",
    "Running",
]
