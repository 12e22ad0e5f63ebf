"""Decisions of the waiting logic, with a scripted server and a fake clock (no I/O).

The retry matrix, deadlines, interrupts by owner and by watcher, the cancel race, soft budgets,
and what a create's error says about billing. Each case is one a hostile gateway, a flaky network
or an interrupting agent produced against an earlier version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from flux_tools import (
    FluxAPIError,
    FluxConnectionError,
    GenerationResult,
    PredictionTimeout,
    RateLimitError,
    Running,
)
from flux_tools._protocol.actions import Call, Flow, Reply, Report, Sleep
from flux_tools._protocol.flows import MAX_SYNC_WAIT
from flux_tools._protocol.requests import MIN_CALL_SECONDS

from .test_protocol import NO_FILES, FakeClock, flows, prediction

Server = Callable[[Call], Reply | httpx2.TransportError]


def drive(
    flow: Flow[Any],
    clock: FakeClock,
    server: Server,
    *,
    interrupt_after: float | None = None,
    record: list[Any] | None = None,
) -> tuple[Any, list[Any]]:
    """Run a flow; with ``interrupt_after``, raise KeyboardInterrupt into the first Sleep that
    starts after that many seconds of fake time (as Ctrl-C or a task cancellation would).
    ``record`` collects the actions even when the flow raises."""
    start = clock.now
    actions: list[Any] = [] if record is None else record
    outcome: Any = None
    throw: BaseException | None = None
    while True:
        try:
            action = flow.throw(throw) if throw else flow.send(outcome)
        except StopIteration as stop:
            return stop.value, actions
        throw, outcome = None, None
        actions.append(action)
        if isinstance(action, Call):
            outcome = server(action)
        elif isinstance(action, Sleep):
            if interrupt_after is not None and clock.now - start >= interrupt_after:
                interrupt_after = None
                throw = KeyboardInterrupt()
            else:
                clock.now += action.seconds


def calls_of(actions: list[Any], kind: str) -> list[Call]:
    return [a for a in actions if isinstance(a, Call) and a.kind == kind]


def running_then(final: str = "processing", **extra: Any) -> Server:
    def server(call: Call) -> Reply:
        if call.kind == "cancel":
            return prediction(final, **extra)
        return prediction("processing")

    return server


# -- the retry matrix of a poll --------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        Reply(429, {}, b'{"detail": "throttled", "status": 429}'),
        Reply(502, {}, b""),
        Reply(503, {}, b""),
        Reply(504, {}, b""),
        httpx2.RemoteProtocolError("server disconnected"),
        httpx2.ReadTimeout("timed out"),
    ],
    ids=["429", "502", "503", "504", "dropped", "read-timeout"],
)
def test_a_failing_poll_never_ends_the_wait_before_its_deadline(
    failure: Reply | httpx2.TransportError,
) -> None:
    """Six 429s in a row used to raise after ~6 s of a 300 s budget, abandoning the prediction
    (which ran on, billed). Now polls are retried until the deadline, then the owner cancels."""
    clock = FakeClock()
    started = clock.now

    def server(call: Call) -> Reply | httpx2.TransportError:
        if call.kind == "cancel":
            return prediction("canceled")
        return failure

    with pytest.raises(PredictionTimeout) as caught:
        drive(flows(clock).wait(prediction_obj("processing"), timeout=300), clock, server)
    assert clock.now - started >= 300 - 8.0  # retried up to (one backoff before) the deadline
    assert caught.value.canceled is True
    # far more attempts than the retry policy's 5: the deadline, not a count, ended the wait


def test_a_poll_that_recovers_before_the_deadline_returns_the_image() -> None:
    clock = FakeClock()
    answers = iter([Reply(429, {"retry-after": "3"}, b"{}")] * 8 + [prediction_reply_ok()])

    result, actions = drive(
        flows(clock).wait(prediction_obj("processing"), timeout=300),
        clock,
        lambda call: next(answers),
    )
    assert result.status == "succeeded"
    assert calls_of(actions, "cancel") == []


def test_a_poll_honours_a_long_retry_after_within_the_deadline() -> None:
    clock = FakeClock()
    answers = iter([Reply(503, {"retry-after": "90"}, b"{}"), prediction_reply_ok()])
    result, actions = drive(
        flows(clock).wait(prediction_obj("processing"), timeout=300),
        clock,
        lambda call: next(answers),
    )
    assert result.status == "succeeded"
    assert any(isinstance(a, Sleep) and a.seconds >= 90 for a in actions)


def test_a_non_retryable_poll_error_is_raised_at_once() -> None:
    clock = FakeClock()
    with pytest.raises(FluxAPIError) as caught:
        drive(
            flows(clock).wait(prediction_obj("processing"), timeout=300),
            clock,
            lambda call: Reply(401, {}, b'{"title": "Unauthenticated"}'),
        )
    assert caught.value.status == 401
    assert clock.now < 1000 + 10


# -- deadlines and the cancel race ---------------------------------------------------------


def test_a_cancel_that_reports_success_returns_the_billed_image() -> None:
    """The image finished as we gave up: the cancel's answer says succeeded. It is billed, so
    it is returned rather than thrown away as a timeout."""
    clock = FakeClock()
    server = running_then("succeeded", output="https://cdn.example/out.png")
    result, actions = drive(
        flows(clock).generate(None, {"prompt": "a cat"}, timeout=20, images=NO_FILES),
        clock,
        server,
    )
    assert isinstance(result, GenerationResult)
    assert result.urls == ["https://cdn.example/out.png"]
    assert len(calls_of(actions, "cancel")) == 1


def test_every_request_is_bounded_by_the_time_left() -> None:
    """Each exchange carries the time left to the deadline (the drivers end one that outlasts
    it, however slowly its body trickles in); even the last poll gets a minimum."""
    clock = FakeClock()
    actions: list[Any] = []
    with pytest.raises(PredictionTimeout):
        drive(
            flows(clock).wait(prediction_obj("processing"), timeout=30),
            clock,
            running_then("canceled"),
            record=actions,
        )
    polls = calls_of(actions, "get")
    assert len(polls) > 3
    lefts = [c.time_left for c in polls]
    assert all(t is not None and MIN_CALL_SECONDS <= t <= 30 for t in lefts)
    assert lefts == sorted(lefts, key=lambda t: -(t or 0))  # shrinking toward the deadline


# -- owners and watchers -------------------------------------------------------------------


def test_an_interrupted_owner_cancels_upstream() -> None:
    clock = FakeClock()
    actions: list[Any] = []
    with pytest.raises(KeyboardInterrupt):
        drive(
            flows(clock).generate(None, {"prompt": "a cat"}, timeout=60, images=NO_FILES),
            clock,
            running_then("canceled"),
            interrupt_after=2,
            record=actions,
        )
    assert len(calls_of(actions, "cancel")) == 1
    assert calls_of(actions, "cancel")[0].url.endswith("/predictions/p1/cancel")


def test_owner_and_watcher_decide_the_cancel() -> None:
    """Interrupting a watcher (get_prediction, wait without ownership) never cancels what it
    was only watching; interrupting the owner does."""
    for owned, expected in ((True, 1), (False, 0)):
        clock = FakeClock()
        seen: list[Any] = []
        with pytest.raises(KeyboardInterrupt):
            drive(
                flows(clock).wait(prediction_obj("processing"), timeout=60, owned=owned),
                clock,
                running_then("canceled"),
                interrupt_after=3,
                record=seen,
            )
        assert len(calls_of(seen, "cancel")) == expected, owned


def test_a_watcher_at_the_deadline_does_not_cancel() -> None:
    clock = FakeClock()
    with pytest.raises(PredictionTimeout) as caught:
        drive(
            flows(clock).wait(prediction_obj("processing"), timeout=20, owned=False),
            clock,
            running_then("canceled"),
        )
    assert caught.value.canceled is False
    assert "still running" in str(caught.value)


def test_follow_never_cancels_and_hands_back_a_running_prediction() -> None:
    clock = FakeClock()
    seen: list[Call] = []

    def server(call: Call) -> Reply:
        seen.append(call)
        return prediction("processing")

    outcome, _ = drive(flows(clock).follow("p1", budget=10), clock, server)
    assert isinstance(outcome, Running)
    assert outcome.prediction_id == "p1" and outcome.status == "processing"
    assert 10 <= outcome.waited < 10 + MIN_CALL_SECONDS + 1
    assert not [c for c in seen if c.kind == "cancel"]


def test_run_within_a_budget_returns_running_without_canceling() -> None:
    clock = FakeClock()
    outcome, actions = drive(
        flows(clock).run(None, {"prompt": "a cat"}, budget=15, timeout=300, images=NO_FILES),
        clock,
        running_then("canceled"),
    )
    assert isinstance(outcome, Running)
    assert calls_of(actions, "cancel") == []
    create = calls_of(actions, "create")[0]
    assert create.headers.get("Cancel-After")  # the server stops it if nobody comes back


def test_run_with_a_zero_budget_only_looks_once() -> None:
    clock = FakeClock()
    outcome, actions = drive(
        flows(clock).follow("p1", budget=0), clock, lambda call: prediction("starting")
    )
    assert isinstance(outcome, Running)
    assert len(calls_of(actions, "get")) == 1


# -- what the create's answer means -----------------------------------------------------------


def test_a_throttled_create_says_nothing_was_created() -> None:
    """Retry-After: 59 on a create used to block the call and then say a prediction "may have
    been created". A 4xx means it was not: say so, and do not sleep past the deadline."""
    clock = FakeClock()
    reply = Reply(429, {"retry-after": "59"}, b'{"detail": "throttled", "status": 429}')
    with pytest.raises(RateLimitError) as caught:
        drive(
            flows(clock).generate(None, {"prompt": "a cat"}, timeout=30, images=NO_FILES),
            clock,
            lambda call: reply,
        )
    assert caught.value.created is False
    assert "No prediction was created" in str(caught.value)
    assert "may have been created" not in str(caught.value)
    assert clock.now < 1000 + 30


def test_a_create_answered_5xx_warns_of_a_possible_charge_and_is_not_resent() -> None:
    clock = FakeClock()
    seen: list[Call] = []

    def server(call: Call) -> Reply:
        seen.append(call)
        return Reply(502, {}, b"bad gateway")

    with pytest.raises(FluxAPIError) as caught:
        drive(
            flows(clock).generate(None, {"prompt": "a cat"}, timeout=30, images=NO_FILES),
            clock,
            server,
        )
    assert len(seen) == 1
    assert caught.value.created is None
    assert "may have been created" in str(caught.value)


def test_a_reply_too_large_is_not_a_prediction() -> None:
    clock = FakeClock()
    with pytest.raises(FluxAPIError) as caught:
        drive(
            flows(clock).create(None, {"prompt": "a cat"}, images=NO_FILES),
            clock,
            lambda call: Reply(201, {}, b"", too_large=True),
        )
    assert "not read further" in str(caught.value)
    assert "may have been created" in str(caught.value)


def test_sync_wait_is_clamped_to_what_the_api_honours() -> None:
    clock = FakeClock()
    _, actions = drive(
        flows(clock).create(None, {"prompt": "a cat"}, images=NO_FILES, sync_wait=120),
        clock,
        lambda call: prediction("starting"),
    )
    assert calls_of(actions, "create")[0].headers["Prefer"] == f"wait={MAX_SYNC_WAIT}"


def test_a_finished_blocking_answer_is_a_succeeded_result() -> None:
    """Replicate's blocking API answers a finished one-file prediction ``processing`` with the
    output set; the result must say succeeded, not processing."""
    clock = FakeClock()
    result, actions = drive(
        flows(clock).generate(None, {"prompt": "a cat"}, timeout=30, images=NO_FILES),
        clock,
        lambda call: prediction("processing", output="https://cdn.example/a.webp"),
    )
    assert isinstance(result, GenerationResult)
    assert result.status == "succeeded"
    assert calls_of(actions, "get") == []
    assert [a for a in actions if isinstance(a, Report)]


def test_a_connection_lost_after_a_create_was_sent_is_not_resent() -> None:
    clock = FakeClock()
    seen: list[Call] = []

    def server(call: Call) -> httpx2.TransportError:
        seen.append(call)
        return httpx2.ReadTimeout("no answer")

    with pytest.raises(FluxConnectionError) as caught:
        drive(
            flows(clock).generate(None, {"prompt": "a cat"}, timeout=30, images=NO_FILES),
            clock,
            server,
        )
    assert len(seen) == 1 and caught.value.maybe_created


# -- helpers --------------------------------------------------------------------------------


def prediction_obj(status: str) -> Any:
    from flux_tools import Prediction

    return Prediction.model_validate(
        {"id": "p1", "status": status, "model": "black-forest-labs/flux-pro"}
    )


def prediction_reply_ok() -> Reply:
    body = {
        "id": "p1",
        "status": "succeeded",
        "model": "black-forest-labs/flux-pro",
        "output": "https://cdn.example/out.webp",
    }
    return Reply(200, {}, json.dumps(body).encode())
