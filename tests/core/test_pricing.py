"""Cost known before it is spent: prices, estimates, budgets that refuse before sending, and the
cost of each result in its data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from flux_tools import MODELS, Budget, BudgetExceeded, ConfigError, Price, PriceTable
from flux_tools._settings.settings import budget_from_env, prices_from_env
from flux_tools.emulator import Emulator

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
    inline = prices_from_env(
        {"FLUX_PRICES": '{"flux-pro": 0.07, "acme/x": {"usd": 0.01, "unit": "megapixel"}}'}
    )
    assert inline.price("black-forest-labs/flux-pro") == Price(0.07, "image", False, "FLUX_PRICES")
    assert inline.estimate("acme/x", {"width": 1000, "height": 3000}) == pytest.approx(0.03)
    assert inline.price("flux-dev") == PriceTable().price("flux-dev")  # the rest: the registry
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"flux-dev": 0.5}))
    assert prices_from_env({"FLUX_PRICES": str(path)}).estimate("flux-dev", {}) == 0.5


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
        prices_from_env({"FLUX_PRICES": value})
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
    limit, per_call = budget_from_env({"FLUX_BUDGET_USD": "$2.50", "FLUX_MAX_CALL_USD": "0.1"})
    budget = Budget(limit, per_call=per_call)
    assert budget.limit == 2.5 and budget.per_call == 0.1
    limit, per_call = budget_from_env({})
    assert not Budget(limit, per_call=per_call).active
    with pytest.raises(ConfigError, match="FLUX_BUDGET_USD"):
        budget_from_env({"FLUX_BUDGET_USD": "a lot"})
