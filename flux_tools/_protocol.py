"""The request logic of a generation, written once for the sync and the async client.

Each operation is a generator that *yields actions* (send this request, sleep this long, report
this state) and receives the outcome of each. It never does I/O itself: ``FluxClient`` runs the
actions with blocking calls and ``AsyncFluxClient`` with awaits, so both clients make exactly the
same decisions (retries, poll schedule, deadlines, cancel on interrupt) and cannot drift apart.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx2
from pydantic import BaseModel, ValidationError

from ._exceptions import (
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    PredictionFailed,
    PredictionTimeout,
    api_error,
)
from ._image_inputs import LocalImages
from ._inputs import IMAGE_URI_PREFIXES, FluxInput
from ._policy import DurationStats, PollSchedule, RetryPolicy
from ._prediction import GenerationResult, Prediction
from ._registry import ModelSpec, edit_spec, model_spec, normalize_model_name

T = TypeVar("T")

#: Longest ``Prefer: wait`` the API honours.
MAX_SYNC_WAIT = 60
#: Added to ``Prefer: wait=N`` for the read timeout: the answer comes after N seconds, not at N.
SYNC_WAIT_MARGIN = 5.0
#: Time allowed, after a deadline or an interrupt, to cancel the prediction upstream.
CLEANUP_SECONDS = 10.0
#: ``Cancel-After`` is our deadline plus this: the server's stop is the backstop for a client
#: that vanished, not a race with our own cancel (which reports PredictionTimeout).
CANCEL_AFTER_MARGIN = 10.0


@dataclass(frozen=True)
class Call:
    """Send one HTTP request. ``kind`` decides how it may be retried."""

    method: Literal["GET", "POST"]
    url: str
    kind: Literal["create", "get", "cancel"]
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None  # None: the client's configured read timeout


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Report:
    """A state of the prediction, for the caller's progress callback."""

    prediction: Prediction


@dataclass(frozen=True)
class LoadImage:
    """Read a local image for an input field (file I/O stays in the drivers): the driver sends
    back its ``data:`` URI, or None when ``source`` is a prediction id with no saved file."""

    source: str
    field: str
    images: LocalImages


@dataclass(frozen=True)
class Reply:
    """What the driver sends back for a :class:`Call` that got an HTTP answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes


Action = Call | Sleep | Report | LoadImage
#: What a driver sends into a flow: a Reply or a transport error for a Call, a data URI (or
#: None) for a LoadImage, None otherwise.
Outcome = Reply | httpx2.TransportError | str | None
Flow = Generator[Action, Outcome, T]


def origin(url: str | httpx2.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (default ports filled in): what decides where credentials may go."""
    parsed = httpx2.URL(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host, port


def was_sent(exc: httpx2.TransportError) -> bool:
    """Whether a failed request may have reached the server.

    Only failures to connect (or to get a pooled connection) prove that it did not.
    """
    return not isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout)


def format_duration(seconds: float) -> str:
    """``Cancel-After`` syntax: whole seconds, e.g. ``300s``."""
    return f"{max(1, math.ceil(seconds))}s"


def _spec_or_none(model: str) -> ModelSpec | None:
    try:
        return model_spec(model)
    except ValueError:  # a name the API made up, e.g. with a version suffix
        return None


class PredictionFlows:
    """Builds the flows of one client configuration. Holds no connection, only decisions."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        edit_model: str,
        timeout: float,
        sync_wait: int,
        retry: RetryPolicy,
        schedule: PollSchedule,
        secrets: tuple[str | None, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = normalize_model_name(model)
        self.edit_model = normalize_model_name(edit_model)
        self.timeout = timeout
        self.sync_wait = max(0, min(MAX_SYNC_WAIT, sync_wait))
        self.retry = retry
        self.schedule = schedule
        self.durations = DurationStats()
        self._secrets = secrets
        self._clock = clock
        self._rng = rng or random.Random()
        self._origin = origin(self.base_url)

    # -- URLs ---------------------------------------------------------------------------------

    def prediction_url(self, prediction_id: str, suffix: str = "") -> str:
        return f"{self.base_url}/predictions/{quote(prediction_id, safe='')}{suffix}"

    def _follow(self, advertised: str | None, fallback: str) -> str:
        # The API's own urls are followed only on the configured origin: a gateway may answer
        # with urls on api.replicate.com, and the gateway's key must never be sent there.
        if advertised:
            try:
                if origin(advertised) == self._origin:
                    return advertised
            except httpx2.InvalidURL:
                pass
        return fallback

    # -- input --------------------------------------------------------------------------------

    def validate(
        self, input: FluxInput | Mapping[str, Any] | None, fields: Mapping[str, Any], model: str
    ) -> FluxInput | dict[str, Any]:
        """Check the input against the model's schema before anything is sent."""
        spec = model_spec(model)
        if isinstance(input, BaseModel):
            if fields:
                raise FluxInputError("Pass either an input model or keyword fields, not both.")
            if spec and not isinstance(input, spec.input_model):
                raise FluxInputError(
                    f"{model} takes {spec.input_model.__name__}, not {type(input).__name__}."
                )
            return input
        data = {**(input or {}), **fields}
        if spec is None:
            return dict(data)  # a model flux-tools does not know: the server validates
        try:
            return spec.input_model.model_validate(data)
        except ValidationError as exc:
            schema = spec.input_model.model_json_schema()
            raise FluxInputError.from_validation_error(exc, schema, model=model) from None

    def prepare_input(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        model: str,
        images: LocalImages,
    ) -> Flow[dict[str, Any]]:
        """Validate, then turn image sources (paths, prediction ids) into what the API takes."""
        checked = self.validate(input, fields, model)
        if not isinstance(checked, FluxInput):
            return checked
        resolved: dict[str, str] = {}
        for name in type(checked).image_fields:
            source = getattr(checked, name)
            if source is None or source.startswith(IMAGE_URI_PREFIXES):
                continue
            data_uri = yield LoadImage(source, name, images)
            if isinstance(data_uri, str):
                resolved[name] = data_uri
            else:  # a prediction id with no saved file: use its output URL
                resolved[name] = yield from self._output_of(source, name)
        payload = checked.to_api()
        payload.update(resolved)
        return payload

    def _output_of(self, prediction_id: str, field: str) -> Flow[str]:
        try:
            earlier = yield from self.get(prediction_id)
        except FluxAPIError as exc:
            if exc.status != 404:
                raise
            raise FluxInputError(
                f"Invalid input; nothing was sent:\n- {field}: {prediction_id} is neither a file "
                "in the allowed folders nor a known prediction id",
                [{"field": field, "problem": "unknown prediction id or file", "allowed": None}],
            ) from None
        urls = earlier.output_urls
        if earlier.status != "succeeded" or not urls:
            why = "its outputs were deleted" if earlier.data_removed else f"it is {earlier.status}"
            raise FluxInputError(
                f"Invalid input; nothing was sent:\n- {field}: prediction {prediction_id} has no "
                f"image to use ({why}); pass the saved file or a URL instead",
                [{"field": field, "problem": "prediction has no output", "allowed": None}],
            )
        return urls[0]

    # -- one request, with retries --------------------------------------------------------------

    def _request(
        self, call: Call, *, deadline: float | None, prediction_id: str | None = None
    ) -> Flow[Reply]:
        idempotent = call.kind != "create"
        attempt = 0
        while True:
            outcome = yield call
            error: FluxError
            if isinstance(outcome, Reply):
                if outcome.status < 400:
                    return outcome
                api_err = api_error(
                    outcome.status,
                    outcome.body,
                    dict(outcome.headers),
                    secrets=self._secrets,
                    prediction_id=prediction_id,
                )
                error, retry_after = api_err, api_err.retry_after
                retry = self.retry.should_retry(
                    attempt=attempt, idempotent=idempotent, status=outcome.status
                )
            else:
                assert isinstance(outcome, httpx2.TransportError), "a Call gets a Reply or an error"
                sent = was_sent(outcome)
                error = self._connection_error(call, outcome, sent, prediction_id)
                retry_after = None
                retry = self.retry.should_retry(attempt=attempt, idempotent=idempotent, sent=sent)
            delay = self.retry.delay(attempt, retry_after, self._rng) if retry else None
            if delay is None or (deadline is not None and self._clock() + delay > deadline):
                raise error
            attempt += 1
            yield Sleep(delay)

    def _connection_error(
        self, call: Call, exc: httpx2.TransportError, sent: bool, prediction_id: str | None
    ) -> FluxConnectionError:
        what = type(exc).__name__
        where = f"{call.method} {httpx2.URL(call.url).path}"
        if call.kind == "create" and sent:
            return FluxConnectionError(
                f"The connection failed after the create request was sent ({what} on {where}). "
                "The prediction may have been created and may be billed; it was NOT sent again "
                "to avoid paying twice. Check your recent predictions before retrying.",
                maybe_created=True,
            )
        return FluxConnectionError(
            f"Could not reach the API at {self.base_url} ({what} on {where}). "
            "Check the network and FLUX_BASE_URL, then try again.",
            prediction_id=prediction_id,
        )

    def _prediction(self, reply: Reply) -> Prediction:
        try:
            return Prediction.model_validate_json(reply.body)
        except ValidationError:
            raise FluxAPIError(
                f"HTTP {reply.status}: the API answered with something that is not a "
                "prediction. Is the base URL a Replicate-compatible predictions API?",
                status=reply.status,
            ) from None

    # -- operations -----------------------------------------------------------------------------

    def create(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        *,
        model: str | None = None,
        images: LocalImages,
        sync_wait: int = 0,
        cancel_after: float | None = None,
        deadline: float | None = None,
    ) -> Flow[Prediction]:
        model = normalize_model_name(model or self.model)
        payload = yield from self.prepare_input(input, fields, model, images)
        owner, name = model.split("/")
        headers: dict[str, str] = {}
        read_timeout = None
        if sync_wait >= 1:
            headers["Prefer"] = f"wait={sync_wait}"
            read_timeout = sync_wait + SYNC_WAIT_MARGIN
        if cancel_after is not None:
            headers["Cancel-After"] = format_duration(cancel_after)
        call = Call(
            "POST",
            f"{self.base_url}/models/{quote(owner, safe='')}/{quote(name, safe='')}/predictions",
            "create",
            json={"input": payload},
            headers=headers,
            read_timeout=read_timeout,
        )
        reply = yield from self._request(call, deadline=deadline)
        return self._prediction(reply)

    def get(
        self, prediction: Prediction | str, *, deadline: float | None = None
    ) -> Flow[Prediction]:
        pid = prediction if isinstance(prediction, str) else prediction.id
        advertised = (
            None if isinstance(prediction, str) or not prediction.urls else prediction.urls.get
        )
        url = self._follow(advertised, self.prediction_url(pid))
        reply = yield from self._request(
            Call("GET", url, "get"), deadline=deadline, prediction_id=pid
        )
        return self._prediction(reply)

    def cancel(
        self, prediction: Prediction | str, *, deadline: float | None = None
    ) -> Flow[Prediction]:
        pid = prediction if isinstance(prediction, str) else prediction.id
        advertised = (
            None if isinstance(prediction, str) or not prediction.urls else prediction.urls.cancel
        )
        url = self._follow(advertised, self.prediction_url(pid, "/cancel"))
        reply = yield from self._request(
            Call("POST", url, "cancel"), deadline=deadline, prediction_id=pid
        )
        return self._prediction(reply)

    def _cancel_quietly(self, prediction: Prediction) -> Flow[bool]:
        """Best effort: stop the prediction upstream so it stops billing. Never raises FluxError."""
        try:
            yield from self.cancel(prediction, deadline=self._clock() + CLEANUP_SECONDS)
        except FluxError:
            return False
        return True

    def is_done(self, prediction: Prediction) -> bool:
        """Terminal, or (for a one-file model) the output is already there.

        With ``Prefer: wait`` Replicate may answer ``processing`` with the output file already
        written: waiting for the status to catch up would only add a poll.
        """
        if prediction.is_terminal:
            return True
        spec = _spec_or_none(prediction.model or self.model)
        return (
            prediction.status == "processing"
            and spec is not None
            and spec.output == "single"
            and isinstance(prediction.output, str)
            and bool(prediction.output)
        )

    def wait(
        self,
        prediction: Prediction | str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        started: float | None = None,
        cancel_on_timeout: bool = True,
    ) -> Flow[Prediction]:
        """Poll until the prediction is done or the deadline passes.

        On the deadline the prediction is canceled (unless ``cancel_on_timeout`` is False) and
        :class:`PredictionTimeout` raised. If the caller is interrupted (Ctrl-C, task
        cancellation) the prediction is canceled upstream before the interrupt goes on.
        """
        now = self._clock()
        if deadline is None:
            deadline = now + (self.timeout if timeout is None else timeout)
        current = prediction if isinstance(prediction, Prediction) else None
        started = now if started is None else started
        model = current.model if current and current.model else self.model
        previous: float | None = None
        try:
            if current is None:
                current = yield from self.get(str(prediction), deadline=deadline)
                model = current.model or model  # learn under the model it really is
            while True:
                yield Report(current)
                if self.is_done(current):
                    break
                now = self._clock()
                if now >= deadline:
                    yield from self._on_deadline(current, cancel_on_timeout, started)
                elapsed = now - started
                plan = self.durations.plan(model, self.schedule)
                delay = self.schedule.next_delay(elapsed, previous, plan=plan)
                previous = min(delay, deadline - now)
                yield Sleep(previous)
                current = yield from self.get(current, deadline=deadline)
        except BaseException as exc:
            # An interrupt, not an error: stop the prediction so it does not bill for nothing.
            if current is not None and not isinstance(exc, Exception | GeneratorExit):
                yield from self._cancel_quietly(current)
            raise
        self._learn(model, current, self._clock() - started)
        return current

    def _on_deadline(self, current: Prediction, cancel: bool, started: float) -> Flow[None]:
        waited = self._clock() - started
        if cancel:
            canceled = yield from self._cancel_quietly(current)
            outcome = (
                "It was canceled upstream (it may be billed for the time it ran)."
                if canceled
                else "Canceling it upstream failed: it may still be running."
            )
        else:
            canceled = False
            outcome = "It is still running: wait for it again, or cancel it, with its id."
        raise PredictionTimeout(
            f"Prediction {current.id} did not finish within {waited:.0f} s "
            f"(last status: {current.status}). {outcome}",
            prediction_id=current.id,
            prediction=current,
            canceled=canceled,
        )

    def _learn(self, model: str, prediction: Prediction, observed: float) -> None:
        if prediction.status != "succeeded":
            return
        # The server's own timestamps are exact; our observation includes the last poll's lag.
        if prediction.created_at and prediction.completed_at:
            server = (prediction.completed_at - prediction.created_at).total_seconds()
            if 0 < server < observed + 5:
                observed = server
        self.durations.observe(model, observed)

    def generate(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        *,
        model: str | None = None,
        timeout: float | None = None,
        images: LocalImages,
    ) -> Flow[GenerationResult]:
        """Create, wait and return the result; raise if the prediction did not succeed."""
        model = normalize_model_name(model or self.model)
        timeout = self.timeout if timeout is None else timeout
        started = self._clock()
        deadline = started + timeout
        prediction = yield from self.create(
            input,
            fields,
            model=model,
            images=images,
            sync_wait=min(self.sync_wait, int(timeout)),
            # The server stops the prediction by itself if we vanish without canceling it.
            cancel_after=timeout + CANCEL_AFTER_MARGIN,
            deadline=deadline,
        )
        prediction = yield from self.wait(prediction, deadline=deadline, started=started)
        return self.result(prediction, model)

    def edit(
        self,
        image: str,
        prompt: str,
        fields: Mapping[str, Any],
        *,
        model: str | None = None,
        timeout: float | None = None,
        images: LocalImages,
    ) -> Flow[GenerationResult]:
        """Edit ``image`` (URL, data URI, path or prediction id) as ``prompt`` instructs."""
        try:
            spec = edit_spec(model or self.edit_model)
        except ValueError as exc:
            raise FluxInputError(str(exc)) from None
        assert spec.edit_field is not None
        edit_fields = {**fields, "prompt": prompt, spec.edit_field: image}
        return (
            yield from self.generate(
                None, edit_fields, model=spec.name, timeout=timeout, images=images
            )
        )

    def result(self, prediction: Prediction, model: str) -> GenerationResult:
        """The result of a finished prediction, or the error that explains why there is none."""
        if prediction.status not in ("succeeded", "processing"):
            raise PredictionFailed.from_prediction(prediction)
        if not prediction.output_urls:
            reason = (
                "its outputs were already deleted (data_removed): Replicate keeps them about an "
                "hour. Generate again."
                if prediction.data_removed
                else "the API returned no output URL."
            )
            raise FluxError(
                f"Prediction {prediction.id} has no output: {reason}", prediction_id=prediction.id
            )
        return GenerationResult.from_prediction(prediction, model=model)
