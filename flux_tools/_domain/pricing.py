"""What a generation costs, known before it is spent: prices, estimates and budgets.

- :class:`PriceTable`: the price of each model, per image or per megapixel as the provider
  prices it. From the registry (``ModelSpec.price_usd`` / ``price_unit``), overridden by a
  gateway's own prices in ``FLUX_PRICES``: inline JSON or the path of a JSON file, e.g.
  ``{"flux-pro": 0.06, "black-forest-labs/flux-2-pro": {"usd": 0.03, "unit": "megapixel"}}``.
- :func:`PriceTable.estimate`: the cost of one create from its input (outputs, megapixels).
- :class:`Budget`: a ceiling for a process or a server (``FLUX_BUDGET_USD``) plus a per-call
  limit (``FLUX_MAX_CALL_USD``). :meth:`Budget.reserve` refuses, before anything is sent, a
  create whose estimate would take the money spent past the ceiling, with a
  :class:`~flux_tools.BudgetExceeded` that names the budget. A create the API certainly
  refused (a 4xx) is given back, and so is a prediction that ended ``aborted`` (not billed);
  everything else counts as spent (a failed prediction may be billed for its run time).

All of it is pure bookkeeping: no I/O, no environment (the settings layer reads ``FLUX_PRICES``).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._base.errors import BudgetExceeded, ConfigError
from .registry import MODELS, model_spec, normalize_model_name

PriceUnit = Literal["image", "megapixel"]

#: Replicate's prices per output image (USD), used while the registry carries none.
FALLBACK_PRICES: dict[str, float] = {
    "black-forest-labs/flux-pro": 0.055,
    "black-forest-labs/flux-1.1-pro": 0.04,
    "black-forest-labs/flux-1.1-pro-ultra": 0.06,
    "black-forest-labs/flux-schnell": 0.003,
    "black-forest-labs/flux-dev": 0.025,
    "black-forest-labs/flux-kontext-pro": 0.04,
}
#: How many predictions' holds a budget remembers (to give back an aborted one).
MAX_TRACKED = 100_000


@dataclass(frozen=True)
class Price:
    """The price of one output: ``usd`` per image, or per megapixel of output."""

    usd: float
    unit: PriceUnit = "image"
    #: True when the figure is flux-tools' estimate of the provider's price, not the provider's.
    estimated: bool = True
    source: str = "registry"


def _megapixels(payload: Mapping[str, Any]) -> float:
    width, height = payload.get("width"), payload.get("height")
    if isinstance(width, int | float) and isinstance(height, int | float) and width and height:
        return float(width) * float(height) / 1_000_000
    megapixels = payload.get("megapixels")
    try:
        value = float(megapixels) if megapixels is not None else 1.0
    except (TypeError, ValueError):
        value = 1.0
    return value if value > 0 else 1.0


def _outputs(payload: Mapping[str, Any]) -> int:
    count = payload.get("num_outputs", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def _parse_price(key: str, value: Any) -> Price:
    usd: Any = None
    unit: Any = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        usd, unit = float(value), "image"
    elif isinstance(value, dict):
        usd, unit = value.get("usd", value.get("price_usd")), value.get("unit", "image")
    if (
        not isinstance(usd, int | float)
        or isinstance(usd, bool)
        or not math.isfinite(usd)
        or usd < 0
        or unit not in ("image", "megapixel")
    ):
        raise ConfigError(
            f"FLUX_PRICES: the price of {key!r} must be a number of USD per image, or "
            '{"usd": NUMBER, "unit": "image" | "megapixel"}; got ' + json.dumps(value)
        )
    checked: PriceUnit = "megapixel" if unit == "megapixel" else "image"
    return Price(float(usd), checked, estimated=False, source="FLUX_PRICES")


class PriceTable:
    """The price of every model: the registry's, and a gateway's own where configured."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides = {normalize_model_name(k): v for k, v in (overrides or {}).items()}

    @classmethod
    def from_json(cls, text: str) -> PriceTable:
        """Prices from a JSON object such as ``{"flux-pro": 0.055}`` (``FLUX_PRICES``'s form)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"FLUX_PRICES is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError('FLUX_PRICES must be a JSON object such as {"flux-pro": 0.055}')
        try:
            return cls({str(k): _parse_price(str(k), v) for k, v in data.items()})
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"FLUX_PRICES: {exc}") from None

    def price(self, model: str) -> Price | None:
        """The price of ``model``; None when nothing is known of it."""
        try:
            name = normalize_model_name(model)
        except ValueError:
            return None
        if name in self._overrides:
            return self._overrides[name]
        spec = model_spec(name)
        if spec is None:
            return None
        usd = getattr(spec, "price_usd", None)
        if isinstance(usd, int | float) and not isinstance(usd, bool) and usd >= 0:
            unit: PriceUnit = (
                "megapixel" if getattr(spec, "price_unit", "image") == "megapixel" else "image"
            )
            return Price(
                float(usd),
                unit,
                estimated=bool(getattr(spec, "price_estimated", True)),
            )
        fallback = FALLBACK_PRICES.get(name)
        return None if fallback is None else Price(fallback)

    def estimate(self, model: str, payload: Mapping[str, Any]) -> float | None:
        """The cost in USD of one create of ``model`` with this input; None if no price is known.

        Per image: the price times ``num_outputs``. Per megapixel: times the output's
        megapixels too (``width`` x ``height``, else ``megapixels``, else 1).
        """
        price = self.price(model)
        if price is None:
            return None
        amount = price.usd * _outputs(payload)
        if price.unit == "megapixel":
            amount *= _megapixels(payload)
        return round(amount, 6)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every known model's price, as plain data."""
        out: dict[str, dict[str, Any]] = {}
        for name in {*MODELS, *self._overrides}:
            price = self.price(name)
            if price is not None:
                out[name] = {"usd": price.usd, "unit": price.unit, "source": price.source}
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class Hold:
    """Money set aside for one create; ``usd`` None for a create with no budget to keep."""

    usd: float
    model: str


def usd_amount(name: str, text: str) -> float | None:
    """An amount in USD as a person writes it (``25``, ``0.50``, ``$2.50``); None for blank."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text.removeprefix("$"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be an amount in USD such as 25 or 0.50, got {text!r}")
    return value


class Budget:
    """Money a process (or a server) may spend, and the most one call may cost (thread-safe).

    ``limit`` None: no ceiling; ``per_call`` None: no limit per call. ``name`` is what an error
    calls the ceiling (``FLUX_BUDGET_USD`` by default; a batch's ``--budget``).
    """

    def __init__(
        self,
        limit: float | None = None,
        *,
        per_call: float | None = None,
        spent: float = 0.0,
        name: str = "FLUX_BUDGET_USD",
        per_call_name: str = "FLUX_MAX_CALL_USD",
    ) -> None:
        for label, value in ((name, limit), (per_call_name, per_call)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"{label} must be an amount in USD >= 0, got {value!r}")
        self.limit, self.per_call = limit, per_call
        self.name, self.per_call_name = name, per_call_name
        self._spent = spent
        self._holds: dict[str, Hold] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.limit is not None or self.per_call is not None

    @property
    def spent(self) -> float:
        """USD spent (or set aside for creates in flight) so far."""
        with self._lock:
            return round(self._spent, 6)

    @property
    def remaining(self) -> float | None:
        with self._lock:
            return None if self.limit is None else max(0.0, round(self.limit - self._spent, 6))

    def check(self, model: str, usd: float | None) -> None:
        """Raise :class:`BudgetExceeded` if a create costing ``usd`` would not fit."""
        with self._lock:
            self._check(model, usd)

    def _check(self, model: str, usd: float | None) -> None:
        if not self.active:
            return
        if usd is None:
            which = self.name if self.limit is not None else self.per_call_name
            raise BudgetExceeded(
                f"No price is known for {model}, so the budget {which} cannot be kept: "
                "nothing was sent. Give its price in FLUX_PRICES (e.g. "
                f'{{"{model}": 0.05}}), or unset {which}.',
                budget=which,
                limit=self.limit if which == self.name else self.per_call,
                spent=self._spent,
                estimate=None,
            )
        if self.per_call is not None and usd > self.per_call + 1e-9:
            raise BudgetExceeded(
                f"This call to {model} would cost about ${usd:.4f}, more than the per-call "
                f"limit {self.per_call_name} = ${self.per_call:.4f}: nothing was sent. Ask for "
                "fewer or smaller images, or raise the limit.",
                budget=self.per_call_name,
                limit=self.per_call,
                spent=self._spent,
                estimate=usd,
            )
        if self.limit is not None and self._spent + usd > self.limit + 1e-9:
            left = max(0.0, self.limit - self._spent)
            raise BudgetExceeded(
                f"The budget {self.name} = ${self.limit:.2f} would be exceeded: ${self._spent:.4f} "
                f"spent, ${left:.4f} left, and this call to {model} costs about ${usd:.4f}. "
                f"Nothing was sent. Raise {self.name} to go on.",
                budget=self.name,
                limit=self.limit,
                spent=self._spent,
                estimate=usd,
            )

    def reserve(self, model: str, usd: float | None) -> Hold | None:
        """Set the estimate aside, or raise :class:`BudgetExceeded` (nothing is sent then).

        Returns None when no budget is set (nothing to keep)."""
        with self._lock:
            self._check(model, usd)
            if usd is None:
                return None
            self._spent += usd
            return Hold(usd, model)

    def release(self, hold: Hold | None) -> None:
        """Give back a hold whose create certainly made no prediction."""
        if hold is None:
            return
        with self._lock:
            self._spent = max(0.0, self._spent - hold.usd)

    def bind(self, prediction_id: str, hold: Hold | None) -> None:
        """Remember which prediction a hold paid for (to give it back if it is aborted)."""
        if hold is None:
            return
        with self._lock:
            if len(self._holds) >= MAX_TRACKED:
                self._holds.pop(next(iter(self._holds)))
            self._holds[prediction_id] = hold

    def settle(self, prediction_id: str, status: str) -> None:
        """A prediction ended: ``aborted`` ones are not billed, so their hold is given back."""
        with self._lock:
            hold = self._holds.pop(prediction_id, None)
            if hold is not None and status == "aborted":
                self._spent = max(0.0, self._spent - hold.usd)

    def __repr__(self) -> str:
        return f"Budget(limit={self.limit!r}, per_call={self.per_call!r}, spent={self.spent:.4f})"
