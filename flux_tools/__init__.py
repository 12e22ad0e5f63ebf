"""flux-tools: FLUX image generation for AI agents.

A typed client of Replicate-compatible predictions APIs (sync and async), the FLUX input schemas
it validates with, and the errors it raises. Front ends live in submodules that import their
heavy dependencies only when used: ``flux_tools.langchain``, ``flux_tools.emulator``, the
``mcp_server`` package and the ``flux-tools`` command.
"""

from ._client import DEFAULT_BASE_URL, AsyncFluxClient, FluxClient
from ._downloads import DownloadError
from ._exceptions import (
    AuthenticationError,
    ContentModerated,
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    PredictionFailed,
    PredictionTimeout,
    RateLimitError,
)
from ._inputs import FluxInput, FluxProInput
from ._policy import TERMINAL_STATUSES, PollSchedule, RetryPolicy
from ._prediction import GenerationResult, Prediction, Timings
from ._registry import DEFAULT_MODEL, MODELS, ModelSpec, model_spec
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "MODELS",
    "TERMINAL_STATUSES",
    "AsyncFluxClient",
    "AuthenticationError",
    "ContentModerated",
    "DownloadError",
    "FluxAPIError",
    "FluxClient",
    "FluxConnectionError",
    "FluxError",
    "FluxInput",
    "FluxInputError",
    "FluxProInput",
    "GenerationResult",
    "ModelSpec",
    "PollSchedule",
    "Prediction",
    "PredictionFailed",
    "PredictionTimeout",
    "RateLimitError",
    "RetryPolicy",
    "Timings",
    "__version__",
    "model_spec",
]
