"""Who owns a prediction decides its fate, over real HTTP against the emulator.

The caller that created a prediction cancels it on its deadline or when interrupted; a caller
that only watches it (``follow``, ``wait`` without ownership) never does. A soft budget hands
back a running prediction without canceling it. A cancellation that arrives while the create
request is in flight still cancels the prediction once its id is known.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from flux_tools import (
    AsyncFluxClient,
    FluxClient,
    GenerationResult,
    PredictionTimeout,
    Running,
    Settings,
)
from flux_tools.emulator import Emulator, Fault

from ..conftest import Flux, requests_to

MakeEmulator = Callable[..., Emulator]
MakeFlux = Callable[..., Flux]


def status_of(emulator: Emulator, prediction_id: str) -> str:
    return str(emulator.prediction_json(prediction_id)["status"])


async def test_a_soft_budget_hands_back_a_running_prediction_uncanceled(
    emulator: Emulator, make_flux: MakeFlux
) -> None:
    flux = make_flux(emulator, sync_wait=0)
    outcome = await flux("run", prompt="slow [emulator:latency=5]", budget=0.5)
    assert isinstance(outcome, Running)
    assert outcome.status in ("starting", "processing")
    assert emulator.stats.cancels == 0
    assert status_of(emulator, outcome.prediction_id) in ("starting", "processing")
    create = requests_to(emulator, "create")[0]
    assert create.headers.get("cancel-after")  # the server stops it if nobody comes back


async def test_follow_finishes_what_run_started(emulator: Emulator, make_flux: MakeFlux) -> None:
    flux = make_flux(emulator, sync_wait=0)
    outcome = await flux("run", prompt="later [emulator:latency=1.5]", budget=0.2)
    assert isinstance(outcome, Running)
    done = await flux("follow", outcome.prediction_id, budget=30)
    assert isinstance(done, GenerationResult) and done.status == "succeeded"
    assert done.prediction_id == outcome.prediction_id
    assert emulator.stats.predictions_created == 1 and emulator.stats.cancels == 0


async def test_interrupting_a_watcher_never_cancels(
    emulator: Emulator, make_flux: MakeFlux
) -> None:
    flux = make_flux(emulator, sync_wait=0)
    if flux.kind == "sync":
        pytest.skip("a thread cannot be cancelled; the sync watcher is covered by the decisions")
    created = await flux("create", prompt="watched [emulator:hang]")
    with anyio.move_on_after(0.5):
        await flux("wait", created.id, cancel_on_timeout=False)
    with anyio.move_on_after(0.5):
        await flux("follow", created.id)
    assert emulator.stats.cancels == 0
    assert status_of(emulator, created.id) in ("starting", "processing")


async def test_interrupting_the_owner_cancels(emulator: Emulator) -> None:
    async with AsyncFluxClient("test-token", base_url=emulator.base_url, sync_wait=0) as client:
        with anyio.move_on_after(0.6):
            await client.run(prompt="owned [emulator:hang]", budget=30)
    (pid,) = list(emulator.predictions)
    assert emulator.stats.cancels == 1
    assert status_of(emulator, pid) == "canceled"


async def test_a_cancellation_during_the_create_still_cancels_the_prediction(
    make_emulator: MakeEmulator,
) -> None:
    """The create is slow (1 s); the caller gives up after 0.2 s. The create's answer is still
    awaited, so that the prediction's id is known, and the prediction is canceled."""
    emulator = make_emulator(faults=[Fault("create", "slow", delay=1.0)])
    async with AsyncFluxClient("test-token", base_url=emulator.base_url, sync_wait=0) as client:
        task = asyncio.ensure_future(client.generate(prompt="[emulator:hang]"))
        await asyncio.sleep(0.2)
        assert emulator.stats.predictions_created == 0 or not emulator.stats.cancels
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert emulator.stats.predictions_created == 1
    assert emulator.stats.cancels == 1
    (pid,) = list(emulator.predictions)
    assert status_of(emulator, pid) == "canceled"


def test_a_slow_poll_cannot_stretch_the_deadline(make_emulator: MakeEmulator) -> None:
    """Every poll answers only after 20 s; the deadline is 2 s. The wait ends near its deadline
    (the owner cancels) instead of waiting out the slow answers."""
    emulator = make_emulator(faults=[Fault("get", "slow", delay=20.0, times=None)])
    outcome: list[BaseException | None] = []

    def run() -> None:
        with FluxClient("test-token", base_url=emulator.base_url, sync_wait=0) as client:
            try:
                client.generate(prompt="[emulator:hang]", timeout=2)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=18)  # well under one slow answer: the deadline bounded the waiting
    assert not worker.is_alive(), "the wait outlasted a 20 s answer despite its 2 s deadline"
    assert isinstance(outcome[0], PredictionTimeout)
    assert emulator.stats.cancels == 1


async def test_saving_works_after_the_client_is_closed(
    emulator: Emulator, make_flux: MakeFlux, tmp_path: Path
) -> None:
    """A result holds data, not a connection: its save() opens its own client."""
    flux = make_flux(emulator)
    result = await flux("generate", prompt="kept")
    client = flux.client
    if isinstance(client, AsyncFluxClient):
        await client.aclose()
        files = await result.asave(tmp_path)
    else:
        client.close()
        files = await asyncio.to_thread(result.save, tmp_path)
    assert len(files) == 1 and files[0].parent == tmp_path and files[0].stat().st_size > 0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REPLICATE_BASE_URL", "{origin}", "{origin}/v1"),
        ("REPLICATE_BASE_URL", "{origin}/", "{origin}/v1"),
        ("REPLICATE_BASE_URL", "{origin}/v1", "{origin}/v1"),
        ("FLUX_BASE_URL", "{origin}/v1", "{origin}/v1"),
    ],
)
def test_base_url_variables_mean_what_they_mean_for_the_official_client(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    expected: str,
) -> None:
    """REPLICATE_BASE_URL is an origin for the official client (it adds /v1); FLUX_BASE_URL is
    the full base. A user who set either one for its own client gets a working client here."""
    origin = emulator.base_url.removesuffix("/v1")
    for name in ("FLUX_BASE_URL", "REPLICATE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value.format(origin=origin))
    assert Settings.from_env().base_url == expected.format(origin=origin)
    with FluxClient("test-token") as client:
        assert client.generate(prompt="from the environment").status == "succeeded"


def test_flux_base_url_wins_over_replicate_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_BASE_URL", "https://api.replicate.com")
    monkeypatch.setenv("FLUX_BASE_URL", "https://gateway.example/replicate/v1")
    assert Settings.from_env().base_url == "https://gateway.example/replicate/v1"


def test_settings_keep_the_token_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_API_TOKEN", "r8_secret_value_123")
    settings = Settings.from_env()
    assert settings.token == "r8_secret_value_123"
    for text in (repr(settings), str(settings), repr(FluxClient(settings=settings))):
        assert "r8_secret_value_123" not in text


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="FLUX_TIMEOUT"):
        Settings.from_env()
    monkeypatch.delenv("FLUX_TIMEOUT")
    with pytest.raises(ValueError, match="base_url"):
        Settings.from_env(base_url="ftp://example.com")
