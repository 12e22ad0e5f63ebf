"""Cost known before it is spent: prices, estimates, budgets that refuse before sending, and the
cost of each result in its data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from flux_tools import MODELS, Budget, BudgetExceeded, ConfigError, Price, PriceTable
from flux_tools.emulator import Emulator, Fault

from ..conftest import Flux

MakeEmulator = Callable[..., Emulator]
MakeFlux = Callable[..., Flux]


def test_every_registry_model_has_a_price() -> None:
    table = PriceTable()
    for name, spec in MODELS.items():
        price = table.price(name)
        assert price is not None and price.usd >= 0, name
        assert price.usd == pytest.approx(spec.price_usd)
        assert price.unit == spec.price_unit
    assert table.price("someone/unknown") is None
    assert table.estimate("someone/unknown", {}) is None


def test_estimates_follow_outputs_and_megapixels() -> None:
    table = PriceTable(
        {
            "acme/per-image": Price(0.05, "image"),
            "acme/per-mp": Price(0.02, "megapixel"),
        }
    )
    assert table.estimate("acme/per-image", {"prompt": "x"}) == pytest.approx(0.05)
    assert table.estimate("acme/per-image", {"num_outputs": 4}) == pytest.approx(0.20)
    assert table.estimate("acme/per-mp", {}) == pytest.approx(0.02)  # 1 MP by default
    assert table.estimate("acme/per-mp", {"width": 2000, "height": 1000}) == pytest.approx(0.04)
    assert table.estimate("acme/per-mp", {"megapixels": "0.25"}) == pytest.approx(0.005)
    schnell = PriceTable().estimate("flux-schnell", {"num_outputs": 3})
    assert schnell == pytest.approx(3 * MODELS["black-forest-labs/flux-schnell"].price_usd)


def test_a_gateways_prices_come_from_flux_prices(tmp_path: Path) -> None:
    inline = PriceTable.from_env(
        {"FLUX_PRICES": '{"flux-pro": 0.07, "acme/x": {"usd": 0.01, "unit": "megapixel"}}'}
    )
    assert inline.price("black-forest-labs/flux-pro") == Price(0.07, "image", False, "FLUX_PRICES")
    assert inline.estimate("acme/x", {"width": 1000, "height": 3000}) == pytest.approx(0.03)
    assert inline.price("flux-dev") == PriceTable().price("flux-dev")  # the rest: the registry
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"flux-dev": 0.5}))
    assert PriceTable.from_env({"FLUX_PRICES": str(path)}).estimate("flux-dev", {}) == 0.5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{nope", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"flux-pro": "cheap"}', "flux-pro"),
        ('{"flux-pro": {"usd": 1, "unit": "hour"}}', "megapixel"),
        ('{"flux-pro": -1}', "USD"),
        ("/no/such/prices.json", "cannot be read"),
    ],
)
def test_bad_flux_prices_name_the_variable(value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="FLUX_PRICES") as info:
        PriceTable.from_env({"FLUX_PRICES": value})
    assert expected in str(info.value)


def test_a_budget_refuses_what_would_exceed_it() -> None:
    budget = Budget(0.10)
    first = budget.reserve("m", 0.06)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve("m", 0.06)
    error = info.value
    assert error.budget == "FLUX_BUDGET_USD" and error.limit == 0.10
    assert error.estimate == 0.06 and error.spent == pytest.approx(0.06)
    assert "FLUX_BUDGET_USD" in str(error) and "Nothing was sent" in str(error)
    budget.release(first)  # the create certainly made nothing
    assert budget.spent == 0
    held = budget.reserve("m", 0.06)
    budget.bind("p1", held)
    budget.settle("p1", "aborted")  # not billed: given back
    assert budget.spent == 0
    budget.bind("p2", budget.reserve("m", 0.06))
    budget.settle("p2", "failed")  # may be billed for its run time: kept
    assert budget.spent == pytest.approx(0.06) and budget.remaining == pytest.approx(0.04)


def test_a_per_call_limit_and_unknown_prices() -> None:
    budget = Budget(per_call=0.05)
    assert budget.reserve("m", 0.05) is not None
    with pytest.raises(BudgetExceeded, match="FLUX_MAX_CALL_USD") as info:
        budget.reserve("m", 0.051)
    assert info.value.budget == "FLUX_MAX_CALL_USD"
    with pytest.raises(BudgetExceeded, match="No price is known for acme/x"):
        budget.reserve("acme/x", None)
    assert Budget().reserve("acme/x", None) is None  # no budget: nothing to keep


def test_budgets_from_the_environment() -> None:
    budget = Budget.from_env({"FLUX_BUDGET_USD": "$2.50", "FLUX_MAX_CALL_USD": "0.1"})
    assert budget.limit == 2.5 and budget.per_call == 0.1
    assert not Budget.from_env({}).active
    with pytest.raises(ConfigError, match="FLUX_BUDGET_USD"):
        Budget.from_env({"FLUX_BUDGET_USD": "a lot"})


# -- through the clients, against the emulator ---------------------------------------------------


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
    assert flux.client.budget.spent == pytest.approx(price)


async def test_a_refused_create_gives_its_money_back(
    emulator: Emulator, make_flux: MakeFlux
) -> None:
    price = MODELS["black-forest-labs/flux-pro"].price_usd
    flux = make_flux(emulator, budget=Budget(price * 1.5))
    emulator.add_fault(Fault("create", "422"))
    with pytest.raises(Exception, match="422"):
        await flux("generate", prompt="refused by the API")
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
