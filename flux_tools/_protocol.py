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
from dataclasses import dataclass, field, replace
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
from ._inputs import IMAGE_URI_PREFIXES, FluxInput, check_image_uri, data_uri_size
from ._limits import RateLimiter
from ._policy import DurationStats, PollSchedule, RetryPolicy
from ._prediction import GenerationResult, Prediction
from ._pricing import Budget, PriceTable
from ._registry import (
    EditImages,
    ModelSpec,
    edit_input,
    edit_spec,
    model_spec,
    normalize_model_name,
)
from ._schemas import input_error, live_input_model

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
#: Largest API answer read (a prediction with inline ``data:`` outputs is the largest honest
#: one): a gateway's endless body fails at this size instead of filling the memory.
MAX_REPLY_BYTES = 32 * 1024 * 1024
#: The least time a request is given, even right at a deadline: the last poll before giving up
#: may still bring the finished image. A wait ends at most this much past its deadline.
MIN_CALL_SECONDS = 2.0
#: How long an interrupted create is still awaited, so that its id comes back and the
#: prediction can be canceled instead of billing unseen (``Cancel-After`` is the backstop).
CREATE_SHIELD_SECONDS = 30.0
#: A request waiting for the account's budget is sent at the latest this long before its
#: deadline, so that its answer can still come in time.
LIMITER_ANSWER_MARGIN = 1.0
#: How long fetching a model's schema may take (retries included) before the snapshot is used,
#: and how long after a failed fetch (a 5xx, no connection) it is not tried again.
SCHEMA_SECONDS = 5.0
SCHEMA_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class Call:
    """Send one HTTP request. ``kind`` decides how it may be retried."""

    method: Literal["GET", "POST"]
    url: str
    kind: Literal["create", "get", "cancel"]
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None  # None: the client's configured read timeout
    #: Seconds the whole exchange may take, body included (None: no limit but the timeouts).
    #: The drivers end a request that outlasts it, however slowly its body trickles in.
    time_left: float | None = None


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
    #: The body was cut at :data:`MAX_REPLY_BYTES`: not an answer to trust.
    too_large: bool = False


@dataclass(frozen=True)
class Running:
    """A prediction still running when a soft wait budget ran out: it was not canceled.

    Come back for it with ``follow`` (or ``get_prediction`` over MCP) by its id.
    """

    prediction: Prediction
    #: Seconds waited before handing it back.
    waited: float

    @property
    def prediction_id(self) -> str:
        return self.prediction.id

    @property
    def status(self) -> str:
        return self.prediction.status


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


def _transient(error: FluxError) -> bool:
    """A failure that may pass: worth polling on, never a reason to give up a wait early."""
    if isinstance(error, FluxConnectionError):
        return True
    return isinstance(error, FluxAPIError) and (
        error.status in RetryPolicy().retry_statuses or error.status == 408
    )


def _input_problem(field: str, problem: str) -> FluxInputError:
    return FluxInputError(
        f"Invalid input; nothing was sent:\n- {field}: {problem}",
        [{"field": field, "problem": problem, "allowed": None}],
    )


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
        limiter: RateLimiter | None = None,
        budget: Budget | None = None,
        prices: PriceTable | None = None,
        durations: DurationStats | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = normalize_model_name(model)
        self.edit_model = normalize_model_name(edit_model)
        self.timeout = timeout
        self.sync_wait = max(0, min(MAX_SYNC_WAIT, sync_wait))
        self.retry = retry
        self.schedule = schedule
        # Shared by every generation of the client: the account's request budgets, the money
        # it may spend, and what it learned of each model's durations.
        self.limiter = limiter or RateLimiter(clock=clock)
        self.budget = budget or Budget()
        self.prices = prices or PriceTable()
        self.durations = durations if durations is not None else DurationStats()
        self._secrets = secrets
        self._clock = clock
        self._rng = rng or random.Random()
        self._origin = origin(self.base_url)
        #: Input models from the API's model endpoint, by model (None: it has none to use).
        self._live_schemas: dict[str, type[FluxInput] | None] = {}
        self._schema_retry_at: dict[str, float] = {}
        #: Whether the API's model endpoint is asked for schemas (see ``model_schema``).
        self.live_schemas = True

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

    def input_model(self, model: str) -> type[FluxInput] | None:
        """The input model ``model`` is validated with now: its live schema once fetched (see
        :meth:`model_schema`), else the package's snapshot; None for a model nothing describes."""
        live = self._live_schemas.get(model)
        if live is not None:
            return live
        spec = _spec_or_none(model)
        return spec.input_model if spec else None

    def validate(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        model: str,
        *,
        max_image_bytes: int | None = None,
    ) -> FluxInput | dict[str, Any]:
        """Check the input against the model's schema before anything is sent."""
        model = normalize_model_name(model)
        cls = self.input_model(model)
        spec = _spec_or_none(model)
        if isinstance(input, BaseModel):
            if fields:
                raise FluxInputError("Pass either an input model or keyword fields, not both.")
            accepted = tuple(c for c in (cls, spec.input_model if spec else None) if c)
            if accepted and not isinstance(input, accepted):
                raise FluxInputError(
                    f"{model} takes {accepted[0].__name__}, not {type(input).__name__}."
                )
            return input
        data = {**(input or {}), **fields}
        if cls is None:
            return dict(data)  # a model nothing describes: the server validates
        context = {"max_image_bytes": max_image_bytes} if max_image_bytes else None
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as exc:
            raise input_error(exc, cls, model) from None

    def prepare_input(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        model: str,
        images: LocalImages,
    ) -> Flow[dict[str, Any]]:
        """Validate, then turn image sources (paths, prediction ids) into what the API takes.

        A model the registry does not know is validated with its live schema (fetched once); a
        registry model's input the snapshot refuses is checked again against the live schema,
        which may be newer than the snapshot, before the refusal is believed.
        """
        model = normalize_model_name(model)
        spec = _spec_or_none(model)
        if spec is None and self.live_schemas and not self._schema_asked(model):
            yield from self.model_schema(model)
        try:
            checked = self.validate(input, fields, model, max_image_bytes=images.max_bytes)
        except FluxInputError as exc:
            if not self._may_be_stale(exc, spec, model, input):
                raise
            live = yield from self.model_schema(model)
            if live is None or live is (spec.input_model if spec else None):
                raise
            checked = self.validate(input, fields, model, max_image_bytes=images.max_bytes)
        if not isinstance(checked, FluxInput):
            return checked
        payload = checked.to_api()
        for name in type(checked).image_fields:
            value = payload.get(name)
            if isinstance(value, str):
                payload[name] = yield from self._image(value, name, images)
            elif isinstance(value, list):
                resolved = []
                for i, source in enumerate(value):
                    resolved.append((yield from self._image(source, f"{name}[{i}]", images)))
                payload[name] = resolved
        return payload

    def _may_be_stale(
        self,
        error: FluxInputError,
        spec: ModelSpec | None,
        model: str,
        input: FluxInput | Mapping[str, Any] | None,
    ) -> bool:
        """Whether a refusal could come from an outdated snapshot (not from a bad image source,
        which no schema version would take): then the live schema is asked."""
        if not self.live_schemas or spec is None or self._schema_asked(model):
            return False
        if isinstance(input, BaseModel) or not error.errors:
            return False
        # A refused item of a list, or a refused single image: its source is wrong, whatever the
        # schema's version. A list's count, or any other field, may be a newer schema's rule.
        single = {f.name for f in spec.input_model.image_inputs if not f.multiple}
        return any(
            "[" not in str(e["field"]) and str(e["field"]) not in single for e in error.errors
        )

    def _image(self, source: str, label: str, images: LocalImages) -> Flow[str]:
        """One image source as the API takes it: URLs as they are, a ``data:`` URI within the
        size cap, a local file read as a data URI, a prediction id as its output's URL."""
        if source.startswith("data:"):
            size = data_uri_size(source)
            if size > images.max_bytes:
                raise _input_problem(
                    label,
                    f"the data: URI holds about {size} bytes, over the {images.max_bytes}-byte "
                    "limit for inline images; pass a smaller image or an https URL",
                )
            return source
        if source.startswith(IMAGE_URI_PREFIXES):
            return source
        data_uri = yield LoadImage(source, label, images)
        if isinstance(data_uri, str):
            return data_uri
        # A prediction id with no saved file: use its output URL.
        return (yield from self._output_of(source, label))

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
        try:  # the API's answer is not trusted: it must be an image source the API takes
            return check_image_uri(urls[0])
        except ValueError as exc:
            raise _input_problem(
                field, f"prediction {prediction_id}'s output cannot be used: {exc}"
            ) from None

    def model_schema(
        self, model: str | None = None, *, refresh: bool = False
    ) -> Flow[type[FluxInput] | None]:
        """The input model of ``model`` as the API describes it now (``GET {base}/models/{owner}/
        {name}``), fetched once per client and cached; the snapshot (or None, for a model the
        package does not know) where the API has no such endpoint or no usable schema."""
        model = normalize_model_name(model or self.model)
        spec = _spec_or_none(model)
        snapshot = spec.input_model if spec else None
        if self._schema_asked(model) and not refresh:
            return self._live_schemas.get(model) or snapshot
        owner, name = model.split("/")
        call = Call(
            "GET", f"{self.base_url}/models/{quote(owner, safe='')}/{quote(name, safe='')}", "get"
        )
        try:
            reply = yield from self._request(call, deadline=self._clock() + SCHEMA_SECONDS)
        except FluxAPIError as exc:
            if 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 429):
                self._live_schemas[model] = None  # no such endpoint (a gateway): the snapshot
            else:  # may pass: asked again, but not at every call meanwhile
                self._schema_retry_at[model] = self._clock() + SCHEMA_RETRY_SECONDS
            return snapshot
        except FluxConnectionError:
            self._schema_retry_at[model] = self._clock() + SCHEMA_RETRY_SECONDS
            return snapshot
        live = live_input_model(
            model,
            reply.body,
            name=snapshot.__name__ if snapshot else None,
            summary=snapshot.__doc__ if snapshot else None,
        )
        self._live_schemas[model] = live
        return live or snapshot

    def _schema_asked(self, model: str) -> bool:
        """Whether the model endpoint was asked about ``model`` (or failed a moment ago)."""
        return model in self._live_schemas or self._clock() < self._schema_retry_at.get(
            model, -math.inf
        )

    # -- one request, with retries --------------------------------------------------------------

    def _request(
        self,
        call: Call,
        *,
        deadline: float | None,
        prediction_id: str | None = None,
        persistent: bool = False,
    ) -> Flow[Reply]:
        """Send ``call``, retrying what is safe to retry.

        ``persistent`` (the polls of a wait): a retryable failure is retried until the deadline,
        however many times, never given up on earlier. The error raised then is the last one.
        """
        idempotent = call.kind != "create"
        attempt = 0
        while True:
            left = None if deadline is None else max(MIN_CALL_SECONDS, deadline - self._clock())
            outcome = yield replace(call, time_left=left)
            error: FluxError
            if isinstance(outcome, Reply):
                if outcome.too_large:
                    raise self._too_large(call, outcome, prediction_id)
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
                    attempt=attempt,
                    idempotent=idempotent,
                    status=outcome.status,
                    persistent=persistent,
                )
            else:
                assert isinstance(outcome, httpx2.TransportError), "a Call gets a Reply or an error"
                sent = was_sent(outcome)
                error = self._connection_error(call, outcome, sent, prediction_id)
                retry_after = None
                retry = self.retry.should_retry(
                    attempt=attempt, idempotent=idempotent, sent=sent, persistent=persistent
                )
            delay = self.retry.delay(attempt, retry_after, self._rng) if retry else None
            if delay is None and retry and persistent and retry_after is not None:
                delay = retry_after  # a long Retry-After: wait it out if the deadline allows
            if delay is None or (deadline is not None and self._clock() + delay > deadline):
                if call.kind == "create" and isinstance(error, FluxAPIError):
                    error.nothing_created()
                raise error
            attempt += 1
            yield Sleep(delay)

    def _too_large(self, call: Call, reply: Reply, prediction_id: str | None) -> FluxAPIError:
        created = (
            " The prediction may have been created and may be billed: check your recent "
            "predictions before retrying."
            if call.kind == "create"
            else ""
        )
        return FluxAPIError(
            f"HTTP {reply.status}: the API answered {call.method} {httpx2.URL(call.url).path} "
            f"with a body over {MAX_REPLY_BYTES} bytes; it was not read further.{created}",
            status=reply.status,
            prediction_id=prediction_id,
        )

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

    def _prediction(self, reply: Reply, kind: str = "get") -> Prediction:
        try:
            return Prediction.model_validate_json(reply.body)
        except ValidationError:
            created = (
                " A prediction may have been created: check your recent predictions before "
                "retrying."
                if kind == "create"
                else ""
            )
            raise FluxAPIError(
                f"HTTP {reply.status}: the API answered with something that is not a "
                "prediction. Is the base URL a Replicate-compatible predictions API?" + created,
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
        sync_wait = max(0, min(MAX_SYNC_WAIT, int(sync_wait)))
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
        # Refused here, before anything is sent, when it would exceed a budget.
        hold = self.budget.reserve(model, self.prices.estimate(model, payload))
        try:
            reply = yield from self._request(call, deadline=deadline)
        except FluxError as exc:
            created = getattr(exc, "created", None)
            if created is False or getattr(exc, "maybe_created", None) is False:
                self.budget.release(hold)  # certainly not created: nothing billed
            raise
        prediction = self._prediction(reply, "create")
        self.budget.bind(prediction.id, hold)
        return prediction

    def estimate(self, model: str, payload: Mapping[str, Any]) -> float | None:
        """The estimated cost in USD of one create of ``model`` with this API input."""
        return self.prices.estimate(normalize_model_name(model), payload)

    # -- the account's request budgets (the drivers call these around each Call) ----------------

    def slot(self, call: Call) -> tuple[float, Call]:
        """Book the account's budget for ``call``: the seconds to wait before sending it, and
        the call to send then. A call with a deadline is never made late by the wait."""
        deadline = None
        if call.time_left is not None:
            deadline = self._clock() + max(0.0, call.time_left - LIMITER_ANSWER_MARGIN)
        delay = self.limiter.acquire(call.kind, deadline=deadline)
        if delay > 0 and call.time_left is not None:
            call = replace(call, time_left=max(MIN_CALL_SECONDS, call.time_left - delay))
        return delay, call

    def replied(self, call: Call, reply: Reply) -> None:
        """What an answer says of the account's budgets (``ratelimit-*`` headers, a 429)."""
        self.limiter.observe(call.kind, reply.status, reply.headers)

    def get(
        self,
        prediction: Prediction | str,
        *,
        deadline: float | None = None,
        persistent: bool = False,
    ) -> Flow[Prediction]:
        pid = prediction if isinstance(prediction, str) else prediction.id
        advertised = (
            None if isinstance(prediction, str) or not prediction.urls else prediction.urls.get
        )
        url = self._follow(advertised, self.prediction_url(pid))
        reply = yield from self._request(
            Call("GET", url, "get"), deadline=deadline, prediction_id=pid, persistent=persistent
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

    def _cancel_quietly(self, prediction: Prediction) -> Flow[Prediction | None]:
        """Best effort: stop the prediction upstream so it stops billing. Never raises FluxError.

        Returns the cancel's answer (which may show that the prediction finished meanwhile),
        or None when the cancel failed.
        """
        try:
            return (yield from self.cancel(prediction, deadline=self._clock() + CLEANUP_SECONDS))
        except FluxError:
            return None

    def is_done(self, prediction: Prediction) -> bool:
        """Terminal, or every output is already there.

        With ``Prefer: wait`` Replicate answers ``processing`` with the output already written:
        waiting for the status to catch up would only add a poll. For a list output, done means
        as many URLs as images were asked for (``num_outputs``, else one).
        """
        if prediction.is_terminal:
            return True
        spec = _spec_or_none(prediction.model or self.model)
        if prediction.status != "processing" or spec is None or not prediction.output:
            return False
        if spec.output == "single":
            return isinstance(prediction.output, str)
        asked = (prediction.input or {}).get("num_outputs", 1)
        wanted = asked if isinstance(asked, int) and asked >= 1 else 1
        return isinstance(prediction.output, list) and len(prediction.output_urls) >= wanted

    def wait(
        self,
        prediction: Prediction | str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        started: float | None = None,
        owned: bool = True,
        budget: float | None = None,
    ) -> Flow[Prediction]:
        """Poll until the prediction is done, the deadline passes, or the soft ``budget`` ends.

        Who owns a prediction decides its fate. The owner (``owned=True``: the caller that
        created it) cancels it upstream at the deadline and when interrupted (Ctrl-C, task
        cancellation), so it stops billing; a watcher (``owned=False``) never cancels. At the
        deadline :class:`PredictionTimeout` is raised, unless the cancel's answer shows that the
        prediction succeeded meanwhile: then that finished prediction is returned. When the soft
        ``budget`` (seconds since ``started``) ends first, the unfinished prediction is returned
        as it is, not canceled: the caller checks :meth:`is_done`.

        A poll that fails in a retryable way (429, 502-504, a dropped connection) is retried
        until the deadline: it never ends the wait early.
        """
        now = self._clock()
        if deadline is None:
            deadline = now + (self.timeout if timeout is None else timeout)
        current = prediction if isinstance(prediction, Prediction) else None
        started = now if started is None else started
        soft_end = deadline if budget is None else min(deadline, started + budget)
        model = current.model if current and current.model else self.model
        previous: float | None = None
        try:
            if current is None:
                current = yield from self.get(str(prediction), deadline=soft_end)
                model = current.model or model  # learn under the model it really is
            while True:
                yield Report(current)
                if self.is_done(current):
                    break
                now = self._clock()
                if now >= deadline:
                    current = yield from self._on_deadline(current, owned, started)
                    break
                if now >= soft_end:
                    return current  # the budget ran out: still running, and not canceled
                elapsed = now - started
                plan = self.durations.plan(model, self.schedule, reads=self.limiter.poll_reads())
                delay = self.schedule.next_delay(elapsed, previous, plan=plan)
                previous = min(delay, soft_end - now)
                yield Sleep(previous)
                try:
                    current = yield from self.get(current, deadline=soft_end, persistent=True)
                except FluxError as exc:
                    if not _transient(exc):
                        raise
                    # Retried up to the end of the wait: that end has come.
                    if soft_end < deadline:
                        return current
                    current = yield from self._on_deadline(current, owned, started)
                    break
        except BaseException as exc:
            # An interrupt, not an error: the owner stops the prediction so it does not bill
            # for nothing. A watcher leaves it running.
            if owned and current is not None and not isinstance(exc, Exception | GeneratorExit):
                yield from self._cancel_quietly(current)
            raise
        self._learn(model, current, self._clock() - started)
        if current.is_terminal:
            self.budget.settle(current.id, current.status)
        return current

    def _on_deadline(self, current: Prediction, owned: bool, started: float) -> Flow[Prediction]:
        """The deadline passed: the owner cancels. Returns the prediction only when the cancel's
        answer shows it finished meanwhile (the image is billed: it must not be thrown away)."""
        waited = self._clock() - started
        canceled = False
        if owned:
            answer = yield from self._cancel_quietly(current)
            if answer is not None and answer.status == "succeeded" and answer.output_urls:
                return answer
            canceled = answer is not None
            outcome = (
                "It was canceled upstream (it may be billed for the time it ran)."
                if canceled
                else "Canceling it upstream failed: it may still be running."
            )
            current = answer or current
        else:
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
        outcome = yield from self.run(input, fields, model=model, timeout=timeout, images=images)
        assert isinstance(outcome, GenerationResult), "no budget: run waits to the end"
        return outcome

    def run(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        *,
        model: str | None = None,
        timeout: float | None = None,
        budget: float | None = None,
        sync_wait: int | None = None,
        cancel_after: float | None = None,
        images: LocalImages,
    ) -> Flow[GenerationResult | Running]:
        """Create (as the owner) and wait: the result, or :class:`Running` when the soft
        ``budget`` ran out first (the prediction goes on; ``Cancel-After`` stops it if nobody
        comes back). Raises if the prediction failed, or at the hard ``timeout``."""
        model = normalize_model_name(model or self.model)
        timeout = self.timeout if timeout is None else timeout
        started = self._clock()
        deadline = started + timeout
        span = timeout if budget is None else min(budget, timeout)
        wait_now = self.sync_wait if sync_wait is None else sync_wait
        prediction = yield from self.create(
            input,
            fields,
            model=model,
            images=images,
            sync_wait=min(wait_now, int(span)),
            # The server stops the prediction by itself if we vanish without canceling it.
            cancel_after=timeout + CANCEL_AFTER_MARGIN if cancel_after is None else cancel_after,
            # A create is retried (429) only within the budget: past it there is no prediction
            # to hand back, so the caller hears at once that nothing was created.
            deadline=started + span,
        )
        prediction = yield from self.wait(
            prediction, deadline=deadline, started=started, budget=budget
        )
        if not self.is_done(prediction):
            return Running(prediction, self._clock() - started)
        return self.result(prediction, model, observed=self._clock() - started)

    def follow(
        self,
        prediction: Prediction | str,
        *,
        budget: float | None = None,
        timeout: float | None = None,
    ) -> Flow[GenerationResult | Running]:
        """Watch a prediction someone else created (it is never canceled from here): the
        result once it succeeded, or :class:`Running` when ``budget`` ran out first."""
        started = self._clock()
        timeout = self.timeout if timeout is None else timeout
        current = yield from self.wait(
            prediction, deadline=started + timeout, started=started, owned=False, budget=budget
        )
        if not self.is_done(current):
            return Running(current, self._clock() - started)
        return self.result(current, current.model or self.model, observed=self._clock() - started)

    def edit(
        self,
        image: EditImages,
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
        edit_fields = {**fields, "prompt": prompt, **edit_input(spec, image)}
        return (
            yield from self.generate(
                None, edit_fields, model=spec.name, timeout=timeout, images=images
            )
        )

    def result(
        self, prediction: Prediction, model: str, *, observed: float | None = None
    ) -> GenerationResult:
        """The result of a finished prediction, or the error that explains why there is none.

        ``observed``: seconds we saw it take, the total when the API's answer has no timestamps
        to tell (a blocking answer that came back ``processing`` with the output set)."""
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
        # Replicate's blocking API answers a finished one-file prediction "processing" with its
        # output set: that image is done, and the result says so.
        status = "succeeded" if self.is_done(prediction) else prediction.status
        result = GenerationResult.from_prediction(prediction, model=model, status=status)
        timings = result.timings
        if timings.total is None and observed is not None:  # estimated from what we saw
            timings.total = round(observed, 3)
            if timings.predicted is None and timings.queued is not None:
                timings.predicted = round(max(0.0, observed - timings.queued), 3)
        result.cost = self.estimate(result.model, prediction.input or {})
        return result
