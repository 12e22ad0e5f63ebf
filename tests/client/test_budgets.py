"""Prices and budgets through the clients against the emulator: refused before sending, given
back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flux_tools import MODELS, Budget, BudgetExceeded
from flux_tools.emulator import Emulator, Fault

from ..conftest import Flux

MakeFlux = Callable[..., Flux]


async def test_the_budget_refuses_before_sending(emulator: Emulator, make_flux: MakeFlux) -> None:
    flux = make_flux(emulator, budget=Budget(0.01))
    with pytest.raises(BudgetExceeded) as info:
        await flux("generate", prompt="too dear")
    assert info.value.budget == "FLUX_BUDGET_USD"
    assert emulator.stats.creates == 0 and emulator.stats.predictions_created == 0


async def test_flux_budget_usd_stops_the_second_generation(
    emulator: Emulator, make_flux: MakeFlux, monkeypatch: pytest.MonkeyPatch
) -> None:
    price = MODELS["black-forest-labs/flux-pro"].price_usd
    monkeypatch.setenv("FLUX_BUDGET_USD", str(price * 1.5))
    flux = make_flux(emulator)
    result = await flux("generate", prompt="the first fits")
    assert result.cost == pytest.approx(price)
    assert result.summary()["cost"] == pytest.approx(price)
    with pytest.raises(BudgetExceeded, match="FLUX_BUDGET_USD"):
        await flux("generate", prompt="the second does not")
    assert emulator.stats.predictions_created == 1
    assert isinstance(flux.client.budget, Budget)
    assert flux.client.budget.spent == pytest.approx(price)


async def test_a_refused_create_gives_its_money_back(
    emulator: Emulator, make_flux: MakeFlux
) -> None:
    price = MODELS["black-forest-labs/flux-pro"].price_usd
    flux = make_flux(emulator, budget=Budget(price * 1.5))
    emulator.add_fault(Fault("create", "422"))
    with pytest.raises(Exception, match="422"):
        await flux("generate", prompt="refused by the API")
    assert isinstance(flux.client.budget, Budget)
    assert flux.client.budget.spent == 0  # nothing was created: nothing counted
    result = await flux("generate", prompt="then one that works")
    assert result.cost == pytest.approx(price)


async def test_costs_follow_a_gateways_prices(
    emulator: Emulator, make_flux: MakeFlux, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_PRICES", '{"flux-schnell": 0.5}')
    flux = make_flux(emulator)
    result = await flux("generate", model="flux-schnell", prompt="two", num_outputs=2)
    assert result.cost == pytest.approx(1.0)
