"""One settings object, read from the environment once, taken by every front end.

``Settings.from_env()`` is the only place that reads the client's environment variables; the
clients, the LangChain tools, the CLI and the MCP server (which adds its own settings on top)
all take a ``Settings``. :data:`ENVIRONMENT` lists the variables with their meaning: the README's
configuration table is checked against it by a test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import httpx2
from pydantic import SecretStr

from ._exceptions import TOKEN_ENV_VARS
from ._image_inputs import DEFAULT_MAX_IMAGE_BYTES
from ._limits import RateLimits
from ._pricing import Budget, PriceTable
from ._registry import DEFAULT_EDIT_MODEL, DEFAULT_MODEL, normalize_model_name

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
#: Overall deadline of a wait or a generation, in seconds.
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: its name, the front ends that read it, what it means."""

    name: str
    used_by: str
    meaning: str


#: The client's variables (the MCP server adds its own in ``mcp_server.config``).
ENVIRONMENT: tuple[EnvVar, ...] = (
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


def base_url_from_env(environ: Mapping[str, str]) -> str | None:
    """``FLUX_BASE_URL`` as the full base; else ``REPLICATE_BASE_URL`` read as the official
    client reads it: an origin to which ``/v1`` is added (a value that already ends in ``/v1``,
    or has another path, is taken as it is)."""
    if environ.get("FLUX_BASE_URL", "").strip():
        return environ["FLUX_BASE_URL"]
    official = environ.get("REPLICATE_BASE_URL", "").strip().rstrip("/")
    if not official:
        return None
    try:
        path = httpx2.URL(official).path
    except httpx2.InvalidURL:
        return official  # check_base_url says what is wrong with it
    return official + "/v1" if path in ("", "/") else official


def check_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    try:
        parsed = httpx2.URL(url)
        valid = parsed.scheme in ("http", "https") and bool(parsed.host)
    except httpx2.InvalidURL:
        valid = False
    if not valid:
        raise ValueError(f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {url!r}")
    return url


def _dirs(raw: str) -> tuple[Path, ...]:
    return tuple(Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip())


@dataclass(frozen=True)
class Settings:
    """What a client needs to know, whichever front end runs it.

    Build it with :meth:`from_env` (the environment, then your overrides), or directly. The
    token is a :class:`~pydantic.SecretStr`: it never shows in a repr.
    """

    api_token: SecretStr | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    edit_model: str = DEFAULT_EDIT_MODEL
    #: Folders from which local image inputs may be read.
    image_dirs: tuple[Path, ...] = ()
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    #: Overall deadline of a wait or a generation, in seconds.
    timeout: float = DEFAULT_TIMEOUT
    #: ``Prefer: wait`` seconds for ``generate`` (0: never hold the create request).
    sync_wait: int = 60
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    #: The account's request budgets (None: Replicate's published limits).
    rate_limits: RateLimits | None = None
    #: Most the process may spend, and most one call may cost, in USD (None: no limit).
    budget_usd: float | None = None
    max_call_usd: float | None = None
    #: A gateway's own prices (None: the registry's, Replicate's list prices).
    prices: PriceTable | None = None
    #: Where learned durations are kept (None: ``$XDG_CACHE_HOME/flux-tools`` or
    #: ``~/.cache/flux-tools``).
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.api_token, str):  # a plain string is accepted, and hidden
            object.__setattr__(self, "api_token", SecretStr(self.api_token) or None)
        if self.api_token is not None and not self.api_token.get_secret_value():
            object.__setattr__(self, "api_token", None)
        object.__setattr__(self, "base_url", check_base_url(self.base_url))
        object.__setattr__(self, "model", normalize_model_name(self.model))
        object.__setattr__(self, "edit_model", normalize_model_name(self.edit_model))
        object.__setattr__(self, "image_dirs", tuple(Path(d) for d in self.image_dirs))
        if self.timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The environment's settings, with ``overrides`` (None values are ignored) on top.

        Image folders add up: ``image_dirs`` given here come before ``FLUX_IMAGE_DIRS``.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        token = next((env[name] for name in TOKEN_ENV_VARS if env.get(name)), None)
        if token:
            values["api_token"] = SecretStr(token)
        base = base_url_from_env(env)
        if base:
            values["base_url"] = base
        for name, key in (("FLUX_MODEL", "model"), ("FLUX_EDIT_MODEL", "edit_model")):
            if env.get(name, "").strip():
                values[key] = env[name]
        if env.get("FLUX_TIMEOUT", "").strip():
            try:
                values["timeout"] = float(env["FLUX_TIMEOUT"])
            except ValueError:
                raise ValueError(
                    f"FLUX_TIMEOUT must be a number of seconds, got {env['FLUX_TIMEOUT']!r}"
                ) from None
        values["rate_limits"] = RateLimits.from_env(env)
        budget = Budget.from_env(env)
        values["budget_usd"], values["max_call_usd"] = budget.limit, budget.per_call
        values["prices"] = PriceTable.from_env(env)
        values["cache_dir"] = default_cache_dir(env)
        env_dirs = _dirs(env.get("FLUX_IMAGE_DIRS", ""))
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(chosen.get("api_token"), str):
            chosen["api_token"] = SecretStr(chosen["api_token"])
        extra_dirs: Sequence[Path | str] = chosen.pop("image_dirs", ())
        values["image_dirs"] = (*(Path(d) for d in extra_dirs), *env_dirs)
        values.update(chosen)
        return cls(**values)

    def with_options(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` (None values are ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def token(self) -> str | None:
        """The token in clear, for the one place that sends it (the client's auth)."""
        return self.api_token.get_secret_value() if self.api_token else None

    @property
    def has_token(self) -> bool:
        return self.api_token is not None


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where flux-tools keeps what it learns between processes: ``$FLUX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/flux-tools``, else ``~/.cache/flux-tools``."""
    env = os.environ if environ is None else environ
    if env.get("FLUX_CACHE_DIR", "").strip():
        return Path(env["FLUX_CACHE_DIR"]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else None
    return (base or Path.home() / ".cache") / "flux-tools"


__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "ENVIRONMENT", "EnvVar", "Settings"]
