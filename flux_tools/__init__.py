"""flux-tools: FLUX image generation for AI agents.

The library's public API: a typed client of Replicate-compatible predictions APIs (sync and
async), the FLUX input models it validates with, the results it returns, the errors it raises,
resumable batches, and the knobs a client takes (retries, polling, rate limits, budgets,
prices). Everything here is documented in the reference (``docs/reference/api.md``).

Front ends live beside it and import their heavy dependencies only when used:
``flux_tools.langchain``, ``flux_tools.emulator``, the ``mcp_server`` package and the
``flux-tools`` command (``flux_tools.cli``); what they share is :mod:`flux_tools.kit`.

The package is built in layers (see ``docs/development.md``): ``_base`` (imports nothing of the
project) < ``_domain`` (data and pure decisions) < ``_settings`` (the only reader of the
environment) < ``_protocol`` (sans-IO flows) < ``_drivers`` (the clients and every other I/O) <
``kit`` < the front ends. ``.importlinter`` states the rule and CI enforces it.
"""

from typing import TYPE_CHECKING, Any

from ._base.errors import (
    AuthenticationError,
    BudgetExceeded,
    ConfigError,
    ContentModerated,
    DownloadError,
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    PredictionFailed,
    PredictionTimeout,
    PreviewError,
    RateLimitError,
    SchemaError,
)
from ._domain import registry as _registry
from ._domain.batch import BatchReport, BatchRow, BatchStatus
from ._domain.inputs import FluxInput
from ._domain.limits import RateLimiter, RateLimits
from ._domain.polling import DurationStats, PollSchedule, RetryPolicy
from ._domain.prediction import GenerationResult, Prediction, Timings
from ._domain.pricing import Budget, Price, PriceTable
from ._domain.registry import DEFAULT_EDIT_MODEL, DEFAULT_MODEL, MODELS, ModelSpec
from ._drivers.batch import agenerate_many, generate_many
from ._drivers.client import AsyncFluxClient, ClientOptions, FluxClient
from ._protocol.flows import Running
from ._settings.environment import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, ENVIRONMENT, EnvVar
from ._settings.settings import Settings
from ._version import __version__

if TYPE_CHECKING:
    from ._domain.registry import (
        Flux2DevInput,
        Flux2FlexInput,
        Flux2Klein4bInput,
        Flux2Klein9bBaseInput,
        Flux2MaxInput,
        Flux2ProInput,
        Flux11ProInput,
        Flux11ProUltraInput,
        FluxDevInput,
        FluxKontextMaxInput,
        FluxKontextProInput,
        FluxProInput,
        FluxSchnellInput,
    )
else:

    def __getattr__(name: str) -> Any:
        # The per-model input classes are compiled from their snapshots on first use, so that
        # importing flux_tools compiles none (about 10 ms each).
        if name in _registry.INPUT_CLASSES:
            return _registry.input_class(name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *_registry.INPUT_CLASSES})


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_EDIT_MODEL",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "ENVIRONMENT",
    "MODELS",
    "AsyncFluxClient",
    "AuthenticationError",
    "BatchReport",
    "BatchRow",
    "BatchStatus",
    "Budget",
    "BudgetExceeded",
    "ClientOptions",
    "ConfigError",
    "ContentModerated",
    "DownloadError",
    "DurationStats",
    "EnvVar",
    "Flux2DevInput",
    "Flux2FlexInput",
    "Flux2Klein4bInput",
    "Flux2Klein9bBaseInput",
    "Flux2MaxInput",
    "Flux2ProInput",
    "Flux11ProInput",
    "Flux11ProUltraInput",
    "FluxAPIError",
    "FluxClient",
    "FluxConnectionError",
    "FluxDevInput",
    "FluxError",
    "FluxInput",
    "FluxInputError",
    "FluxKontextMaxInput",
    "FluxKontextProInput",
    "FluxProInput",
    "FluxSchnellInput",
    "GenerationResult",
    "ModelSpec",
    "PollSchedule",
    "Prediction",
    "PredictionFailed",
    "PredictionTimeout",
    "PreviewError",
    "Price",
    "PriceTable",
    "RateLimitError",
    "RateLimiter",
    "RateLimits",
    "RetryPolicy",
    "Running",
    "SchemaError",
    "Settings",
    "Timings",
    "__version__",
    "agenerate_many",
    "generate_many",
]
