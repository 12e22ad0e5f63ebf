"""One settings object, read from the environment once, taken by every front end.

``Settings.from_env()`` reads the client's variables (through :func:`.environment.read_environment`,
the package's one reader of ``os.environ``); the clients, the LangChain tools, the CLI and the MCP
server (which parses its own variables from the same reader) all take a ``Settings``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import httpx2
from pydantic import SecretStr

from .._base.errors import TOKEN_ENV_VARS, ConfigError
from .._domain.images import DEFAULT_MAX_IMAGE_BYTES
from .._domain.limits import DEFAULT_CREATES_PER_MINUTE, DEFAULT_READS_PER_MINUTE, RateLimits
from .._domain.pricing import PriceTable, usd_amount
from .._domain.registry import DEFAULT_EDIT_MODEL, DEFAULT_MODEL, normalize_model_name
from .environment import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, IMAGE_DIRS_ENV, read_environment


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


def image_dirs_from(raw: str) -> tuple[Path, ...]:
    """Folders as ``FLUX_IMAGE_DIRS`` lists them: separated by ``os.pathsep``, ``~`` expanded."""
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
        env = read_environment(environ)
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
        values["rate_limits"] = rate_limits_from_env(env)
        values["budget_usd"], values["max_call_usd"] = budget_from_env(env)
        values["prices"] = prices_from_env(env)
        values["cache_dir"] = default_cache_dir(env)
        env_dirs = image_dirs_from(env.get(IMAGE_DIRS_ENV, ""))
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
    env = read_environment(environ)
    if env.get("FLUX_CACHE_DIR", "").strip():
        return Path(env["FLUX_CACHE_DIR"]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else None
    return (base or Path.home() / ".cache") / "flux-tools"


def rate_limits_from_env(environ: Mapping[str, str] | None = None) -> RateLimits:
    """``FLUX_CREATES_PER_MINUTE`` and ``FLUX_READS_PER_MINUTE`` (e.g. ``6`` for an account with
    little credit); unset: Replicate's published limits (see :meth:`RateLimits.for_rates`)."""
    env = read_environment(environ)

    def number(name: str, default: float) -> float:
        text = env.get(name, "").strip()
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(
                f"{name} must be a positive number of requests a minute, got {text!r}"
            )
        return value

    return RateLimits.for_rates(
        number("FLUX_CREATES_PER_MINUTE", DEFAULT_CREATES_PER_MINUTE),
        number("FLUX_READS_PER_MINUTE", DEFAULT_READS_PER_MINUTE),
    )


def prices_from_env(environ: Mapping[str, str] | None = None) -> PriceTable:
    """Prices from ``FLUX_PRICES``: a JSON object, or the path of a file holding one."""
    env = read_environment(environ)
    text = env.get("FLUX_PRICES", "").strip()
    if not text:
        return PriceTable()
    if not text.startswith("{"):
        try:
            text = Path(text).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"FLUX_PRICES names a file that cannot be read ({exc.strerror}): give a "
                'JSON object such as {"flux-pro": 0.055}, or the path of a file holding one'
            ) from None
    return PriceTable.from_json(text)


def budget_from_env(environ: Mapping[str, str] | None = None) -> tuple[float | None, float | None]:
    """``FLUX_BUDGET_USD`` and ``FLUX_MAX_CALL_USD``: the ceiling and the per-call limit."""
    env = read_environment(environ)
    return (
        usd_amount("FLUX_BUDGET_USD", env.get("FLUX_BUDGET_USD", "")),
        usd_amount("FLUX_MAX_CALL_USD", env.get("FLUX_MAX_CALL_USD", "")),
    )


__all__ = [
    "Settings",
    "base_url_from_env",
    "budget_from_env",
    "check_base_url",
    "default_cache_dir",
    "image_dirs_from",
    "prices_from_env",
    "rate_limits_from_env",
]
