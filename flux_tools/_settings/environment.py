"""The environment: every variable flux-tools reads, declared once, and the one reader of it.

:data:`ENVIRONMENT` is the table of every ``FLUX_*`` (and ``REPLICATE_*``) variable, the client's
and the MCP server's, with its meaning: the settings reference (``docs/reference/settings.md``)
and ``flux-mcp --help`` are checked against it. :func:`read_environment` is the only place in
the package that touches ``os.environ``: every other layer is handed the mapping it returns (or
a test's own).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .._domain.registry import DEFAULT_EDIT_MODEL, DEFAULT_MODEL

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
#: Overall deadline of a wait or a generation, in seconds.
DEFAULT_TIMEOUT = 300.0
#: The variable naming folders (separated by os.pathsep) from which local images may be read.
IMAGE_DIRS_ENV = "FLUX_IMAGE_DIRS"


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: its name, the front ends that read it, what it means."""

    name: str
    used_by: str
    meaning: str


#: The client's variables: every front end reads them.
CLIENT_ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar("FLUX_API_TOKEN", "all", "API token (Replicate `r8_...` or a gateway's key)"),
    EnvVar("REPLICATE_API_TOKEN", "all", "used when `FLUX_API_TOKEN` is not set"),
    EnvVar(
        "FLUX_BASE_URL",
        "all",
        "the API's full base, default `https://api.replicate.com/v1`; a gateway: "
        "`https://HOST/replicate/v1`",
    ),
    EnvVar(
        "REPLICATE_BASE_URL",
        "all",
        "used when `FLUX_BASE_URL` is not set; an origin as the official client reads it "
        "(`https://api.replicate.com`, to which `/v1` is added); a value ending in `/v1` works too",
    ),
    EnvVar("FLUX_MODEL", "all", f"model of `generate`, default `{DEFAULT_MODEL}`"),
    EnvVar("FLUX_EDIT_MODEL", "all", f"model of `edit`, default `{DEFAULT_EDIT_MODEL}`"),
    EnvVar(
        "FLUX_IMAGE_DIRS",
        "all",
        "absolute folders (separated by `:`, `;` on Windows) from which local images may be "
        "read as inputs; nothing else is opened (the MCP server adds its output folder and "
        "the client's roots)",
    ),
    EnvVar("FLUX_TIMEOUT", "all", "overall deadline of one generation in seconds (default 300)"),
    EnvVar(
        "FLUX_BUDGET_USD",
        "all",
        "most a process (or server) may spend, in USD; a create that would exceed it is "
        "refused before it is sent",
    ),
    EnvVar("FLUX_MAX_CALL_USD", "all", "most one call may cost, in USD"),
    EnvVar(
        "FLUX_PRICES",
        "all",
        'a gateway\'s own prices: JSON `{"model": usd_per_image, "model": {"usd": x, "unit": '
        '"megapixel"}}` or the path of a file holding it',
    ),
    EnvVar(
        "FLUX_CREATES_PER_MINUTE",
        "all",
        "the account's rate limit of creates (default Replicate's: 600)",
    ),
    EnvVar(
        "FLUX_READS_PER_MINUTE",
        "all",
        "the account's rate limit of other requests (default Replicate's: 3000)",
    ),
    EnvVar(
        "FLUX_CACHE_DIR",
        "all",
        "where learned durations are kept (default `$XDG_CACHE_HOME/flux-tools` or "
        "`~/.cache/flux-tools`)",
    ),
)


#: The MCP server's own variables (``mcp_server.config`` parses them).
SERVER_ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar("FLUX_OUTPUT_DIR", "MCP", "where images are saved (an absolute path)"),
    EnvVar("FLUX_MCP_WAIT_SECONDS", "MCP", "how long one tool call waits for the image"),
    EnvVar("FLUX_MCP_PREVIEW", "MCP", "off, or the longest side of the inline preview"),
    EnvVar("FLUX_MCP_CONTENT", "MCP", "what a finished result carries beside its text"),
    EnvVar("FLUX_MCP_VIEWER", "MCP", "off to leave out the MCP App image viewer"),
    EnvVar("FLUX_MCP_MAX_IMAGE_BYTES", "MCP", "largest local image sent as an input"),
    EnvVar("FLUX_MCP_AUTH_TOKEN", "MCP", "bearer token of the HTTP transport"),
    EnvVar("FLUX_MCP_OAUTH_ISSUER", "MCP", "authorization server whose access tokens are accepted"),
    EnvVar("FLUX_MCP_PUBLIC_URL", "MCP", "the MCP endpoint's URL as clients reach it (OAuth)"),
    EnvVar("FLUX_MCP_OAUTH_SCOPES", "MCP", "scopes every access token must grant"),
    EnvVar(
        "FLUX_MCP_USER_BUDGET_USD",
        "MCP",
        "most one signed-in person may spend a UTC day, in USD, beside the server's total "
        "`FLUX_BUDGET_USD`; a create past it is refused before it is sent",
    ),
    EnvVar(
        "FLUX_MCP_AUDIT_LOG",
        "MCP",
        "absolute path of a file each create is appended to, one JSON line (who, prediction, "
        "model, estimated cost); also logged to the `mcp_server.audit` logger",
    ),
    EnvVar(
        "FLUX_MCP_LINK_SECRET",
        "MCP",
        "the key (32+ random characters) links to images are signed with; the same on every "
        "replica; unset: a random key per process (links break on restart)",
    ),
    EnvVar(
        "FLUX_MCP_LINK_TTL",
        "MCP",
        "how long a link to an image opens it: seconds or `30m`, `12h`, `7d` (default 7 days)",
    ),
    EnvVar("FLUX_MCP_LOG_LEVEL", "MCP", "DEBUG, INFO, WARNING or ERROR"),
    EnvVar("FLUX_MCP_CANCEL_AFTER", "MCP", "seconds after which the API stops a prediction"),
    EnvVar("FLUX_MCP_HOST", "MCP", "HTTP interface to bind"),
    EnvVar("FLUX_MCP_PORT", "MCP", "HTTP port"),
    EnvVar("FLUX_MCP_STATELESS", "MCP", "HTTP without sessions"),
    EnvVar("FLUX_MCP_ALLOWED_HOSTS", "MCP", "Host headers accepted (comma-separated)"),
    EnvVar(
        "FLUX_STATE_URL",
        "MCP",
        "`redis://HOST:6379/0` (Valkey or Redis): the state replicas share (rate limits, "
        "budgets, the journal, ownership, learned durations); unset: in-process",
    ),
    EnvVar(
        "FLUX_STORE_URL",
        "MCP",
        "`s3://BUCKET/PREFIX`: where images and sidecars are kept (endpoint and keys from "
        "`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...); unset: the output folder only",
    ),
    EnvVar("FLUX_MCP_LOG_FORMAT", "MCP", "`text` (default) or `json`, one object a line"),
    EnvVar(
        "FLUX_MCP_DRAIN_SECONDS",
        "MCP",
        "after SIGTERM, seconds `/readyz` answers 503 before the port closes (default 1)",
    ),
)

#: Every variable flux-tools reads.
ENVIRONMENT: tuple[EnvVar, ...] = (*CLIENT_ENVIRONMENT, *SERVER_ENVIRONMENT)
#: Variables of the system read beside them (where the cache folder goes by default).
SYSTEM_VARIABLES = ("XDG_CACHE_HOME",)


def read_environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The declared variables that are set: of ``environ`` when given (a test's, a client
    configuration's), else of the process. The one place that reads ``os.environ``."""
    source = os.environ if environ is None else environ
    names = [var.name for var in ENVIRONMENT] + list(SYSTEM_VARIABLES)
    return {name: source[name] for name in names if name in source}


__all__ = [
    "CLIENT_ENVIRONMENT",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "ENVIRONMENT",
    "IMAGE_DIRS_ENV",
    "SERVER_ENVIRONMENT",
    "EnvVar",
    "read_environment",
]
