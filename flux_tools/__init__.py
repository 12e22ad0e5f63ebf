"""flux-tools: FLUX image generation for AI agents.

A typed client of Replicate-compatible predictions APIs (sync and async), the FLUX input schemas
it validates with, and the errors it raises. Front ends live in submodules that import their
heavy dependencies only when used: ``flux_tools.langchain``, ``flux_tools.emulator``, the
``mcp_server`` package and the ``flux-tools`` command.
"""

from typing import TYPE_CHECKING, Any

from ._batch import BatchReport, BatchStatus, agenerate_many, generate_many
from ._client import AsyncFluxClient, ClientOptions, FluxClient
from ._downloads import MEDIA_TYPES, safe_stem, write_text_atomic
from ._exceptions import (
    TOKEN_ENV_VARS,
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
    redact,
)
from ._frontend import (
    Progress,
    ProgressUpdate,
    ResultFacts,
    advice,
    display_name,
    error_text,
    result_text,
    resume_step,
    running_text,
    safe_text,
)
from ._image_inputs import DEFAULT_MAX_IMAGE_BYTES, IMAGE_DIRS_ENV
from ._inputs import IMAGE_URI_PREFIXES, FluxInput, ImageField
from ._journal import JOURNAL_DIR, RETENTION_SECONDS, Journal, PendingPrediction
from ._limits import RateLimiter, RateLimits, Spending
from ._policy import TERMINAL_STATUSES, DurationStats, PollSchedule, RetryPolicy
from ._prediction import GenerationResult, Prediction, Timings, abbreviate
from ._preview import DEFAULT_MAX_BYTES as DEFAULT_PREVIEW_BYTES
from ._preview import Preview, make_preview
from ._pricing import Budget, Price, PriceTable
from ._protocol import Running
from ._registry import (
    DEFAULT_EDIT_MODEL,
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    edit_arguments,
    edit_spec,
    known_model,
    model_spec,
)
from ._schemas import (
    input_model_from_schema,
    snapshot_document,
    snapshot_schema,
)
from ._settings import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, ENVIRONMENT, EnvVar, Settings
from ._version import __version__

if TYPE_CHECKING:
    from ._registry import (
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
        from . import _registry

        if name in _registry._INPUT_CLASSES:
            return _registry.input_class(name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        from . import _registry

        return sorted({*globals(), *_registry._INPUT_CLASSES})


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_EDIT_MODEL",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MODEL",
    "DEFAULT_PREVIEW_BYTES",
    "DEFAULT_TIMEOUT",
    "ENVIRONMENT",
    "IMAGE_DIRS_ENV",
    "IMAGE_URI_PREFIXES",
    "JOURNAL_DIR",
    "MEDIA_TYPES",
    "MODELS",
    "RETENTION_SECONDS",
    "TERMINAL_STATUSES",
    "TOKEN_ENV_VARS",
    "AsyncFluxClient",
    "AuthenticationError",
    "BatchReport",
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
    "ImageField",
    "Journal",
    "ModelSpec",
    "PendingPrediction",
    "PollSchedule",
    "Prediction",
    "PredictionFailed",
    "PredictionTimeout",
    "Preview",
    "PreviewError",
    "Price",
    "PriceTable",
    "Progress",
    "ProgressUpdate",
    "RateLimitError",
    "RateLimiter",
    "RateLimits",
    "ResultFacts",
    "RetryPolicy",
    "Running",
    "SchemaError",
    "Settings",
    "Spending",
    "Timings",
    "__version__",
    "abbreviate",
    "advice",
    "agenerate_many",
    "display_name",
    "edit_arguments",
    "edit_spec",
    "error_text",
    "generate_many",
    "input_model_from_schema",
    "known_model",
    "make_preview",
    "model_spec",
    "redact",
    "result_text",
    "resume_step",
    "running_text",
    "safe_stem",
    "safe_text",
    "snapshot_document",
    "snapshot_schema",
    "write_text_atomic",
]
