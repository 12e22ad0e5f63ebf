"""The operations of a generation (create, wait, run, follow, edit), written once for the sync
and the async client.

Each operation is a generator that *yields actions* (send this request, sleep this long, report
this state; :mod:`.actions`) and receives the outcome of each. It never does I/O itself:
``FluxClient`` runs the actions with blocking calls and ``AsyncFluxClient`` with awaits, so both
clients make exactly the same decisions (retries, poll schedule, deadlines, cancel on interrupt)
and cannot drift apart. This module holds the waiting: who owns a prediction, the deadline and
the soft budget, what is learned, the result. One request (URLs, retries, errors, the account's
budgets) is :class:`~.requests.Requests`; the input (validation, live schemas, image sources)
is :class:`~.payloads.Payloads`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._base.errors import (
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    PredictionFailed,
    PredictionTimeout,
)
from .._domain.inputs import FluxInput
from .._domain.limits import RateLimiter
from .._domain.polling import DurationStats, PollSchedule, RetryPolicy
from .._domain.prediction import GenerationResult, Prediction
from .._domain.pricing import Budget, Hold, PriceTable
from .._domain.registry import (
    EditImages,
    edit_input,
    edit_spec,
    normalize_model_name,
    spec_or_none,
)
from .._domain.shared import SharedBudget, SharedLimiter
from .actions import STOP_WAITING, Call, Flow, ImageLoader, Report, Sleep, Spend
from .payloads import Payloads
from .requests import Requests

#: Longest ``Prefer: wait`` the API honours.
MAX_SYNC_WAIT = 60
#: Added to ``Prefer: wait=N`` for the read timeout: the answer comes after N seconds, not at N.
SYNC_WAIT_MARGIN = 5.0
#: Time allowed, after a deadline or an interrupt, to cancel the prediction upstream.
CLEANUP_SECONDS = 10.0
#: ``Cancel-After`` is our deadline plus this: the server's stop is the backstop for a client
#: that vanished, not a race with our own cancel (which reports PredictionTimeout).
CANCEL_AFTER_MARGIN = 10.0
#: How long an interrupted create is still awaited, so that its id comes back and the
#: prediction can be canceled instead of billing unseen (``Cancel-After`` is the backstop).
CREATE_SHIELD_SECONDS = 30.0


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
        limiter: RateLimiter | SharedLimiter | None = None,
        budget: Budget | SharedBudget | None = None,
        prices: PriceTable | None = None,
        durations: DurationStats | None = None,
    ) -> None:
        self.model = normalize_model_name(model)
        self.edit_model = normalize_model_name(edit_model)
        self.timeout = timeout
        self.sync_wait = max(0, min(MAX_SYNC_WAIT, sync_wait))
        self.schedule = schedule
        # Shared by every generation of the client: the account's request budgets, the money
        # it may spend, and what it learned of each model's durations.
        self.limiter: RateLimiter | SharedLimiter = limiter or RateLimiter(clock=clock)
        self.budget: Budget | SharedBudget = budget or Budget()
        self.prices = prices or PriceTable()
        self.durations = durations if durations is not None else DurationStats()
        self._clock = clock
        #: One request at a time (URLs, retries, errors, the account's budgets).
        self.requests = Requests(
            base_url,
            retry=retry,
            limiter=self.limiter,
            clock=clock,
            rng=rng or random.Random(),
            secrets=secrets,
        )
        #: The inputs: validation, live schemas, image sources.
        self.payloads = Payloads(self.requests, model=self.model, clock=clock)
        # The operations of the other two that the clients offer as their own.
        self.get = self.requests.get
        self.cancel = self.requests.cancel
        self.model_schema = self.payloads.model_schema

    # -- operations -----------------------------------------------------------------------------

    def create(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        *,
        model: str | None = None,
        images: ImageLoader,
        sync_wait: int = 0,
        cancel_after: float | None = None,
        deadline: float | None = None,
    ) -> Flow[Prediction]:
        model = normalize_model_name(model or self.model)
        payload = yield from self.payloads.prepare_input(input, fields, model, images)
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
            self.requests.model_url(model, "/predictions"),
            "create",
            json={"input": payload},
            headers=headers,
            read_timeout=read_timeout,
        )
        # Refused here, before anything is sent, when it would exceed a budget.
        estimate = self.prices.estimate(model, payload)
        hold = yield from self.spend(Spend("reserve", model=model, usd=estimate))
        try:
            reply = yield from self.requests.send(call, deadline=deadline)
        except FluxError as exc:
            created = getattr(exc, "created", None)
            if created is False or getattr(exc, "maybe_created", None) is False:
                # Certainly not created: nothing billed.
                yield from self.spend(Spend("release", hold=hold))
            raise
        prediction = self.requests.prediction(reply, "create")
        yield from self.spend(Spend("bind", hold=hold, prediction_id=prediction.id))
        return prediction

    def spend(self, step: Spend) -> Flow[Hold | None]:
        """One step of the budget: kept here when it is in-process (no I/O), asked of the driver
        when replicas share it (a round trip to the state server)."""
        budget = self.budget
        if isinstance(budget, Budget):
            return spend_in_process(budget, step)
        if not budget.active or (step.step in ("release", "bind") and step.hold is None):
            return None
        outcome = yield step
        return outcome if isinstance(outcome, Hold) else None

    def estimate(self, model: str, payload: Mapping[str, Any]) -> float | None:
        """The estimated cost in USD of one create of ``model`` with this API input."""
        return self.prices.estimate(normalize_model_name(model), payload)

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
        spec = spec_or_none(prediction.model or self.model)
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
        created: float | None = None,
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
            if current is None:  # known by its id only (a resumed one): as persistent as
                # any poll, the first read retries a 429 or a 5xx up to the end of the wait
                current = yield from self.get(str(prediction), deadline=soft_end, persistent=True)
                model = current.model or model  # learn under the model it really is
            while True:
                signal = yield Report(current)
                if self.is_done(current):
                    break
                if signal is STOP_WAITING and budget is not None:
                    return current  # handed over (a server shutting down): not canceled
                now = self._clock()
                if now >= deadline:
                    current = yield from self._on_deadline(current, owned, started)
                    break
                if now >= soft_end:
                    return current  # the budget ran out: still running, and not canceled
                # The plan counts from the prediction's creation (``created``: when its create
                # answered), not from a wait for the account's create slot before it.
                elapsed = now - (started if created is None else created)
                # A read is priced by how busy the account is (the shared view for replicas).
                reads = self.limiter.read_allowance()
                plan = self.durations.plan(model, self.schedule, reads=reads)
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
            yield from self.spend(Spend("settle", prediction_id=current.id, status=current.status))
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
        images: ImageLoader,
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
        images: ImageLoader,
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
            prediction, deadline=deadline, started=started, budget=budget, created=self._clock()
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
        images: ImageLoader,
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


def spend_in_process(budget: Budget, step: Spend) -> Hold | None:
    """A budget step on an in-process :class:`Budget` (what a driver does for a :class:`Spend`
    it is handed with one)."""
    if step.step == "reserve":
        return budget.reserve(step.model, step.usd)
    if step.step == "release":
        budget.release(step.hold)
    elif step.step == "bind":
        budget.bind(step.prediction_id, step.hold)
    else:
        budget.settle(step.prediction_id, step.status)
    return None
