"""``stop_waiting()``: what a server shutting down calls to hand its predictions over. Soft waits
answer at once with the prediction still running (never canceled); creates still queued for a
rate-limit slot are not sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flux_tools import AsyncFluxClient, FluxConnectionError, RateLimits, Running
from flux_tools.emulator import Emulator

from ..conftest import Flux


async def test_a_soft_wait_ends_at_once_and_the_prediction_goes_on(
    make_emulator: Callable[..., Emulator], make_flux: Callable[..., Flux]
) -> None:
    emulator = make_emulator(latency=6.0)
    flux = make_flux(emulator)

    async def stop_soon() -> None:
        await asyncio.sleep(1.0)
        flux.client.stop_waiting()

    started = asyncio.get_running_loop().time()
    outcome, _ = await asyncio.gather(
        flux("run", prompt="a slow one", budget=30, sync_wait=0), stop_soon()
    )
    took = asyncio.get_running_loop().time() - started
    assert isinstance(outcome, Running)
    assert took < 4, took  # not the 6 s of the generation, nor the 30 s budget
    assert emulator.stats.cancels == 0  # handed over, not canceled
    assert emulator.prediction_json(outcome.prediction_id)["status"] in ("starting", "processing")


async def test_a_create_queued_for_a_slot_is_not_sent(emulator: Emulator) -> None:
    limits = RateLimits(creates_per_minute=6, create_burst=1, safety=0, jitter=0)
    async with AsyncFluxClient("test-token", base_url=emulator.base_url, limiter=limits) as client:
        await client.create(prompt="takes the only slot of the next 10 s")

        async def stop_soon() -> None:
            await asyncio.sleep(0.5)
            client.stop_waiting()

        results: Any = await asyncio.gather(
            client.create(prompt="queued"), stop_soon(), return_exceptions=True
        )
    error = results[0]
    assert isinstance(error, FluxConnectionError) and error.maybe_created is False
    assert "nothing was created" in str(error)
    assert emulator.stats.creates == 1
