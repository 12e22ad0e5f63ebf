"""The sans-IO flows driven by a scripted server and a fake clock.

The client tests run the flows over real HTTP against the emulator; these cover what the
emulator cannot produce on demand (statuses the API may add tomorrow) and show the decisions
without any I/O.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from flux_tools import FluxConnectionError, PredictionTimeout
from flux_tools._base.urls import origin
from flux_tools._domain.polling import PollSchedule, RetryPolicy
from flux_tools._drivers.local_images import LocalImages
from flux_tools._protocol.actions import Call, Flow, Reply, Report, Sleep
from flux_tools._protocol.flows import PredictionFlows

BASE = "https://gateway.example/replicate/v1"
NO_FILES = LocalImages()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flows(clock: FakeClock) -> PredictionFlows:
    return PredictionFlows(
        base_url=BASE,
        model="black-forest-labs/flux-pro",
        edit_model="black-forest-labs/flux-kontext-pro",
        timeout=30,
        sync_wait=60,
        retry=RetryPolicy(),
        schedule=PollSchedule(),
        clock=clock,
        rng=random.Random(0),
    )


def prediction(status: str, **extra: Any) -> Reply:
    body = {"id": "p1", "status": status, "model": "black-forest-labs/flux-pro", **extra}
    return Reply(201, {}, json.dumps(body).encode())


def drive(
    flow: Flow[Any], clock: FakeClock, server: Callable[[Call], Reply | httpx2.TransportError]
) -> tuple[Any, list[Any]]:
    """Run a flow: answer Calls with ``server``, advance the clock on Sleeps."""
    actions: list[Any] = []
    outcome: Any = None
    while True:
        try:
            action = flow.send(outcome)
        except StopIteration as stop:
            return stop.value, actions
        actions.append(action)
        outcome = None
        if isinstance(action, Call):
            outcome = server(action)
        elif isinstance(action, Sleep):
            clock.now += action.seconds


def test_unknown_status_waits_until_the_deadline_then_cancels() -> None:
    clock = FakeClock()
    calls: list[Call] = []

    def server(call: Call) -> Reply:
        calls.append(call)
        return prediction("canceled" if call.kind == "cancel" else "warming_up")

    with pytest.raises(PredictionTimeout) as info:
        drive(flows(clock).wait("p1", timeout=20), clock, server)
    assert info.value.prediction_id == "p1" and info.value.canceled
    assert calls[-1].kind == "cancel" and calls[-1].url == f"{BASE}/predictions/p1/cancel"
    assert 1000 + 20 <= clock.now < 1000 + 20 + 1
    gets = [c for c in calls if c.kind == "get"]
    assert 5 < len(gets) < 20 / 0.5  # polled, but less than a fixed 0.5 s poller would


def test_foreign_urls_are_not_followed() -> None:
    clock = FakeClock()
    seen: list[str] = []
    foreign = {
        "get": "https://api.replicate.com/v1/predictions/p1",
        "cancel": "https://api.replicate.com/v1/predictions/p1/cancel",
    }
    own = {"get": f"{BASE}/predictions/p1?from=urls", "cancel": f"{BASE}/predictions/p1/cancel"}
    answers = iter(
        [
            prediction("starting", urls=foreign),
            prediction("processing", urls=own),
            prediction("succeeded", urls=own, output="https://cdn.example/x.webp"),
        ]
    )

    def server(call: Call) -> Reply:
        seen.append(call.url)
        return next(answers)

    result, _ = drive(flows(clock).generate(None, {"prompt": "x"}, images=NO_FILES), clock, server)
    assert result.urls == ["https://cdn.example/x.webp"]
    assert all(origin(url) == origin(BASE) for url in seen)
    assert seen[1] == f"{BASE}/predictions/p1"  # built from the base, not the foreign urls.get
    assert seen[2] == f"{BASE}/predictions/p1?from=urls"  # same origin: followed


def test_create_headers_follow_the_deadline() -> None:
    clock = FakeClock()
    creates: list[Call] = []

    def server(call: Call) -> Reply:
        creates.append(call)
        return prediction("succeeded", output="https://cdn.example/x.webp")

    drive(
        flows(clock).generate(None, {"prompt": "x"}, timeout=12.5, images=NO_FILES), clock, server
    )
    (create,) = creates
    assert create.headers["Prefer"] == "wait=12"
    assert create.headers["Cancel-After"] == "23s"
    assert create.read_timeout is not None and create.read_timeout > 12
    assert create.json == {"input": {"prompt": "x"}}
    assert create.url == f"{BASE}/models/black-forest-labs/flux-pro/predictions"


def test_ambiguous_create_failure_is_never_resent() -> None:
    clock = FakeClock()
    creates: list[Call] = []

    def server(call: Call) -> httpx2.TransportError:
        creates.append(call)
        return httpx2.ReadTimeout("timed out")

    with pytest.raises(FluxConnectionError) as info:
        drive(flows(clock).generate(None, {"prompt": "x"}, images=NO_FILES), clock, server)
    assert info.value.maybe_created and len(creates) == 1
    assert "NOT sent again" in str(info.value)


def test_progress_reports_each_state() -> None:
    clock = FakeClock()
    answers = iter(
        [
            prediction("starting"),
            prediction("processing"),
            prediction("succeeded", output="https://cdn.example/x.webp"),
        ]
    )
    _, actions = drive(
        flows(clock).generate(None, {"prompt": "x"}, images=NO_FILES),
        clock,
        lambda call: next(answers),
    )
    assert [a.prediction.status for a in actions if isinstance(a, Report)] == [
        "starting",
        "processing",
        "succeeded",
    ]
