"""The server's configuration: environment variables (what MCP clients pass), then flags.

MCP clients start servers with a whitelist of environment variables plus the ``env`` block of
their configuration, from an arbitrary working directory: every path must be absolute, and the
token can only come from that ``env`` block.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from flux_tools import (
    DEFAULT_EDIT_MODEL,
    DEFAULT_MODEL,
    MODELS,
    ConfigError,
    ModelSpec,
    Settings,
    __version__,
)
from flux_tools.kit import (
    CLIENT_ENVIRONMENT,
    DEFAULT_MAX_IMAGE_BYTES,
    IMAGE_DIRS_ENV,
    SERVER_ENVIRONMENT,
    ArgumentParser,
    edit_spec,
    image_dirs_from,
    is_loopback,
    model_spec,
    read_environment,
    usd_amount,
)

Transport = Literal["stdio", "streamable-http"]

DEFAULT_WAIT_SECONDS = 45.0
#: Server-side deadline sent as ``Cancel-After``: a prediction nobody asks about stops billing.
DEFAULT_CANCEL_AFTER = 600.0
DEFAULT_PREVIEW_SIDE = 768
DEFAULT_PORT = 8000
#: After SIGTERM: long enough for a load balancer's readiness check to see the replica go.
DEFAULT_DRAIN_SECONDS = 1.0
#: Bounds of FLUX_MCP_MAX_IMAGE_BYTES: a local image is sent inline, base64 in the JSON body.
MAX_IMAGE_BYTES_RANGE = (1, 100 * 1024 * 1024)
OFF_WORDS = ("0", "off", "false", "no", "none")
#: What a finished result carries besides its text (always there) and structured content.
CONTENT_PARTS = ("text", "links", "preview")
#: FLUX_MCP_CONTENT's default: by client (see results.content_for), else everything.
CONTENT_AUTO = "auto"
#: FLUX_MCP_OAUTH_SCOPES' default: the scope every access token must grant (and the one clients
#: are told to ask for). Generating images spends money: a token the authorization server issued
#: for this server but without the person's consent to that scope is refused.
DEFAULT_OAUTH_SCOPES = ("flux:generate",)
#: FLUX_MCP_LINK_TTL's default: how long a link to an image opens it (7 days).
DEFAULT_LINK_TTL = 7 * 86400.0
#: The shortest link secret accepted (FLUX_MCP_LINK_SECRET): 32 characters of randomness.
MIN_LINK_SECRET_CHARS = 32
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.I)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: A scope token (RFC 6749 §3.3): printable ASCII without space, '"' and '\\'.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def default_output_dir(home: Path | None = None) -> Path:
    """``~/Pictures/flux-tools`` where a Pictures folder exists, else ``~/flux-tools``."""
    home = home or Path.home()
    pictures = home / "Pictures"
    return (pictures if pictures.is_dir() else home) / "flux-tools"


@dataclass(frozen=True)
class Config:
    """Everything the server needs: the core's :class:`~flux_tools.Settings` (token, API, models,
    image folders and cap), plus the server's own settings. The tokens are kept out of the repr.
    """

    settings: Settings
    output_dir: Path
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    cancel_after: float = DEFAULT_CANCEL_AFTER
    #: Longest side of the inline preview in pixels; 0 turns the preview off.
    preview_side: int = DEFAULT_PREVIEW_SIDE
    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    stateless: bool = False
    auth_token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    #: FLUX_MCP_OAUTH_ISSUER: the authorization server whose access tokens are accepted.
    oauth_issuer: str | None = None
    #: FLUX_MCP_PUBLIC_URL: the MCP endpoint's URL as clients reach it; tokens' audience.
    public_url: str | None = None
    #: FLUX_MCP_OAUTH_SCOPES: the scopes every access token must grant.
    oauth_scopes: tuple[str, ...] = DEFAULT_OAUTH_SCOPES
    log_level: str = "INFO"
    #: FLUX_MCP_CONTENT: "auto", or the parts of CONTENT_PARTS a result carries ("text+links").
    content: str = CONTENT_AUTO
    #: FLUX_MCP_VIEWER: name the MCP App image viewer on the image tools (hosts with Apps).
    viewer: bool = True
    #: FLUX_STATE_URL: the state replicas share (None: in-process). Kept out of the repr: it
    #: may hold the state server's password.
    state_url: str | None = field(default=None, repr=False)
    #: FLUX_STORE_URL: ``s3://bucket/prefix`` where images are kept (None: the output folder).
    store_url: str | None = None
    #: FLUX_MCP_LOG_FORMAT: ``text`` or ``json``.
    log_format: str = "text"
    #: FLUX_MCP_DRAIN_SECONDS: after SIGTERM, how long /readyz says 503 before the port closes.
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    #: FLUX_MCP_USER_BUDGET_USD: most one signed-in person may spend a UTC day (None: no limit).
    user_budget_usd: float | None = None
    #: FLUX_MCP_AUDIT_LOG: the file each create is appended to, one JSON line (None: the
    #: ``mcp_server.audit`` logger only).
    audit_log: Path | None = None
    #: FLUX_MCP_LINK_SECRET: the key links to images are signed with (None: a random one per
    #: process). Kept out of the repr.
    link_secret: str | None = field(default=None, repr=False)
    #: FLUX_MCP_LINK_TTL: seconds a link to an image opens it.
    link_ttl: float = DEFAULT_LINK_TTL

    # The core's settings, by the names the server has always used.
    @property
    def api_token(self) -> str | None:
        return self.settings.token

    @property
    def has_token(self) -> bool:
        return self.settings.has_token

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def edit_model(self) -> str:
        return self.settings.edit_model

    @property
    def image_dirs(self) -> tuple[Path, ...]:
        """Folders local input images may be read from, beside the output folder and roots."""
        return self.settings.image_dirs

    @property
    def max_image_bytes(self) -> int:
        return self.settings.max_image_bytes

    @property
    def oauth(self) -> bool:
        """Whether HTTP requests may bring OAuth access tokens (issuer and public URL set)."""
        return self.oauth_issuer is not None and self.public_url is not None


#: The server's own variables (declared, with the client's, in the one table the package reads
#: the environment by): the settings reference (``docs/reference/settings.md``) and
#: ``flux-mcp --help`` are checked against both.
ENVIRONMENT = SERVER_ENVIRONMENT


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(var.name for var in (*CLIENT_ENVIRONMENT, *SERVER_ENVIRONMENT))
    parser = ArgumentParser(
        prog="flux-mcp",
        description="MCP server for FLUX image generation. Serves over stdio by default. "
        f"Settings come from the environment ({names}); flags override them. The API token "
        "is read only from the environment.",
    )
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], help="default: stdio")
    parser.add_argument("--host", help="HTTP interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"HTTP port (default {DEFAULT_PORT}; 0: any)")
    parser.add_argument(
        "--stateless",
        action="store_true",
        default=None,
        help="HTTP without sessions, for several instances behind a load balancer",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        metavar="HOST[:PORT]",
        help="Host header accepted when serving on another interface (DNS-rebinding "
        "protection; repeatable; 'name:*' allows any port)",
    )
    parser.add_argument(
        "--oauth-issuer",
        metavar="URL",
        help="accept OAuth access tokens from this authorization server (its issuer URL; env "
        "FLUX_MCP_OAUTH_ISSUER); needs --public-url",
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="the MCP endpoint's URL as clients reach it, e.g. https://images.example.com/mcp "
        "(env FLUX_MCP_PUBLIC_URL): the resource access tokens must be issued for",
    )
    parser.add_argument(
        "--oauth-scopes",
        metavar="SCOPES",
        help=f"space-separated scopes every access token must grant (env FLUX_MCP_OAUTH_SCOPES; "
        f"default {' '.join(DEFAULT_OAUTH_SCOPES)}; 'none': no scope required)",
    )
    parser.add_argument("--base-url", help="API base URL (env FLUX_BASE_URL)")
    parser.add_argument("--model", help=f"model to run (env FLUX_MODEL; default {DEFAULT_MODEL})")
    parser.add_argument(
        "--edit-model",
        help=f"model of edit_image (env FLUX_EDIT_MODEL; default {DEFAULT_EDIT_MODEL})",
    )
    parser.add_argument("--output-dir", help="absolute folder for images (env FLUX_OUTPUT_DIR)")
    parser.add_argument(
        "--image-dir",
        action="extend",
        nargs="*",  # several after one flag, as a desktop bundle expands its list of folders
        dest="image_dirs",
        metavar="DIR",
        help=f"absolute folder local input images may be read from, beside the output folder "
        f"and the client's roots (repeatable, or several after one flag; env {IMAGE_DIRS_ENV}, "
        f"separated by {os.pathsep!r})",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        help=f"largest local input image sent, in bytes (env FLUX_MCP_MAX_IMAGE_BYTES; default "
        f"{DEFAULT_MAX_IMAGE_BYTES})",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        help=f"wait budget per tool call (env FLUX_MCP_WAIT_SECONDS; default "
        f"{DEFAULT_WAIT_SECONDS:g})",
    )
    parser.add_argument(
        "--preview-size",
        type=int,
        help=f"longest side of the inline preview (env FLUX_MCP_PREVIEW; default "
        f"{DEFAULT_PREVIEW_SIDE}; 0 turns it off)",
    )
    parser.add_argument("--no-preview", action="store_true", help="return no inline preview image")
    parser.add_argument(
        "--content",
        help="what a result carries (env FLUX_MCP_CONTENT): auto (default: text for LangChain's "
        "MCP clients, everything for the others), or text, text+links, text+preview, "
        "text+links+preview",
    )
    parser.add_argument(
        "--no-viewer",
        action="store_true",
        help="do not offer the MCP App image viewer (env FLUX_MCP_VIEWER=off)",
    )
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING or ERROR (env FLUX_MCP_LOG_LEVEL)"
    )
    parser.add_argument("--version", action="version", version=f"flux-mcp {__version__}")
    return parser


def _number(name: str, text: str, *, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}.") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value:g}.")
    return value


def _preview_side(text: str) -> int:
    if text.strip().lower() in OFF_WORDS:
        return 0
    if text.strip().lower() in ("1", "on", "true", "yes"):
        return DEFAULT_PREVIEW_SIDE
    try:
        side = int(text)
    except ValueError:
        raise ConfigError(
            f"FLUX_MCP_PREVIEW must be 'off' or the longest side in pixels (64-2048), got {text!r}."
        ) from None
    return _check_side(side)


def _check_side(side: int) -> int:
    if side != 0 and not 64 <= side <= 2048:
        raise ConfigError(f"The preview size must be 0 (off) or 64-2048 pixels, got {side}.")
    return side


def _content(text: str, source: str) -> str:
    """``auto``, or a ``+``-joined set of CONTENT_PARTS with ``text``, in their canonical order."""
    value = text.strip().lower()
    if value == CONTENT_AUTO:
        return value
    parts = {part.strip() for part in value.replace(",", "+").split("+") if part.strip()}
    if "text" not in parts or not parts <= set(CONTENT_PARTS):
        raise ConfigError(
            f"{source} must be 'auto' or text with any of links and preview: text, text+links, "
            f"text+preview or text+links+preview; got {text!r}."
        )
    return "+".join(part for part in CONTENT_PARTS if part in parts)


def _path(text: str) -> Path:
    """A configured folder: ``~`` and ``${HOME}`` (what a desktop bundle's defaults say, see
    bundle/manifest.json) are the user's home."""
    return Path(text.replace("${HOME}", str(Path.home()))).expanduser()


def _output_dir(text: str | None, source: str) -> Path:
    if not text:
        return default_output_dir()
    path = _path(text)
    if not path.is_absolute():
        raise ConfigError(
            f"{source}={text!r} is a relative path. MCP clients start servers from arbitrary "
            "working directories (often '/'), so a relative folder would end up somewhere "
            f"unexpected. Give an absolute path, e.g. {default_output_dir()}."
        )
    return path


def _model(name: str, value: str, *, edit: bool) -> ModelSpec:
    """The registry entry of a configured model, or a ConfigError naming the variable."""
    try:
        known = edit_spec(value) if edit else model_spec(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r}: {exc}.") from None
    if known is None:
        raise ConfigError(
            f"{name}={value!r} is not a model this server knows, so it cannot offer its "
            f"parameters. Known models: {', '.join(MODELS)}."
        )
    return known


def _image_dirs(flags: Sequence[str] | None, env: Mapping[str, str]) -> tuple[Path, ...]:
    source = "--image-dir" if flags and any(text.strip() for text in flags) else IMAGE_DIRS_ENV
    if source == "--image-dir":
        folders = tuple(_path(text.strip()) for text in flags or () if text.strip())
    else:
        folders = tuple(_path(str(path)) for path in image_dirs_from(env.get(IMAGE_DIRS_ENV, "")))
    for path in folders:
        if not path.is_absolute():
            raise ConfigError(
                f"{source} holds the relative path {str(path)!r}. MCP clients start servers "
                "from arbitrary working directories, so give absolute folders."
            )
    return folders


def _max_image_bytes(flag: int | None, env: Mapping[str, str]) -> int:
    name = "--max-image-bytes" if flag is not None else "FLUX_MCP_MAX_IMAGE_BYTES"
    text = str(flag) if flag is not None else env.get(name, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_BYTES
    low, high = MAX_IMAGE_BYTES_RANGE
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a number of bytes from {low} to {high}, got {text!r}.")
    return value


def _oauth_url(name: str, text: str, example: str) -> str:
    """An absolute https URL (http only on a loopback host), without query or fragment; its
    scheme and host lowercased, as RFC 8707 canonical URIs are."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a URL, e.g. {example}.") from None
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ConfigError(f"{name}={text!r} is not an absolute http(s) URL, e.g. {example}.")
    if parts.query or parts.fragment or "#" in text or parts.username or parts.password:
        raise ConfigError(
            f"{name}={text!r} must not carry a query, a fragment or credentials, e.g. {example}."
        )
    if parts.scheme.lower() == "http" and not is_loopback(host):
        raise ConfigError(
            f"{name}={text!r} uses http: tokens and sign-ins must travel over https (http is "
            f"accepted only on loopback, for local tests), e.g. {example}."
        )
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path}"


def _oauth_scopes(text: str | None, source: str) -> tuple[str, ...]:
    if text is None or not text.strip():
        return DEFAULT_OAUTH_SCOPES
    if text.strip().lower() in OFF_WORDS:
        return ()
    scopes = tuple(dict.fromkeys(text.replace(",", " ").split()))
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ConfigError(
                f"{source} holds {scope!r}, which is not a scope (printable ASCII without "
                "quotes or backslashes); separate scopes with spaces, or say 'none'."
            )
    return scopes


def _oauth(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The issuer and public URL: both, or neither."""
    issuer_source = "--oauth-issuer" if args.oauth_issuer else "FLUX_MCP_OAUTH_ISSUER"
    public_source = "--public-url" if args.public_url else "FLUX_MCP_PUBLIC_URL"
    issuer_text = (args.oauth_issuer or env.get("FLUX_MCP_OAUTH_ISSUER") or "").strip()
    public_text = (args.public_url or env.get("FLUX_MCP_PUBLIC_URL") or "").strip()
    if issuer_text and not public_text:
        raise ConfigError(
            f"{issuer_source} is set but FLUX_MCP_PUBLIC_URL is not: OAuth access tokens are "
            "issued for one server, named by its public URL. Set FLUX_MCP_PUBLIC_URL to the MCP "
            "endpoint's URL as clients reach it, e.g. https://images.example.com/mcp."
        )
    if public_text and not issuer_text:
        raise ConfigError(
            f"{public_source} is set but FLUX_MCP_OAUTH_ISSUER is not: name the authorization "
            "server whose tokens are accepted, e.g. https://sso.example.com/realms/team."
        )
    if not issuer_text:
        return None, None
    # The issuer is compared with the tokens' iss exactly: only checked, never rewritten.
    _oauth_url(issuer_source, issuer_text, "https://sso.example.com/realms/team")
    public = _oauth_url(public_source, public_text, "https://images.example.com/mcp")
    return issuer_text, public


def _duration(name: str, text: str, *, low: float, high: float) -> float:
    """``3600``, ``90s``, ``30m``, ``12h``, ``7d``: seconds; a ConfigError naming ``name``."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(
            f"{name} must be a duration: seconds (3600) or a number with s, m, h or d "
            f"(90s, 30m, 12h, 7d); got {text!r}."
        )
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not low <= seconds <= high:
        raise ConfigError(
            f"{name} must be between {low:g} seconds and {high / 86400:g} days, got {text!r}."
        )
    return seconds


def _link_secret(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    if len(text.strip()) < MIN_LINK_SECRET_CHARS:
        raise ConfigError(
            f"FLUX_MCP_LINK_SECRET is too short: use at least {MIN_LINK_SECRET_CHARS} random "
            "characters (e.g. the output of `openssl rand -hex 32`), the same on every replica."
        )
    return text.strip()


def _audit_log(text: str | None) -> Path | None:
    if text is None or not text.strip():
        return None
    path = _path(text.strip())
    if not path.is_absolute():
        raise ConfigError(
            f"FLUX_MCP_AUDIT_LOG={text!r} is a relative path: give an absolute file, e.g. "
            "/var/log/flux-mcp/audit.jsonl (one per replica, or one on a local disk they share)."
        )
    if path.is_dir():
        raise ConfigError(f"FLUX_MCP_AUDIT_LOG={text!r} is a folder: name the file to append to.")
    if not path.parent.is_dir():
        raise ConfigError(
            f"FLUX_MCP_AUDIT_LOG={text!r}: the folder {path.parent} does not exist; make it first."
        )
    return path


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the environment, then the flags. Raises :class:`ConfigError` with a clear message."""
    env = read_environment(environ)
    args = _parser().parse_args(argv)

    known = _model(
        "--model" if args.model else "FLUX_MODEL",
        args.model or env.get("FLUX_MODEL", "").strip() or DEFAULT_MODEL,
        edit=False,
    )
    editor = _model(
        "--edit-model" if args.edit_model else "FLUX_EDIT_MODEL",
        args.edit_model or env.get("FLUX_EDIT_MODEL", "").strip() or DEFAULT_EDIT_MODEL,
        edit=True,
    )

    # The core reads the token, the API (FLUX_BASE_URL, or REPLICATE_BASE_URL as the official
    # client reads it) and the image folders; --image-dir flags replace FLUX_IMAGE_DIRS.
    core_env = {k: v for k, v in env.items() if k != IMAGE_DIRS_ENV}
    try:
        settings = Settings.from_env(
            core_env,
            base_url=args.base_url,
            model=known.name,
            edit_model=editor.name,
            image_dirs=_image_dirs(args.image_dirs, env),
            max_image_bytes=_max_image_bytes(args.max_image_bytes, env),
        )
    except ConfigError:
        raise
    except ValueError as exc:
        name = "--base-url" if args.base_url else "FLUX_BASE_URL"
        raise ConfigError(str(exc) if "FLUX_" in str(exc) else f"{name}: {exc}") from None

    if args.output_dir:
        output_dir = _output_dir(args.output_dir, "--output-dir")
    else:
        output_dir = _output_dir(env.get("FLUX_OUTPUT_DIR"), "FLUX_OUTPUT_DIR")

    if args.wait_seconds is not None:
        wait = _number("--wait-seconds", str(args.wait_seconds), low=1, high=3600)
    else:
        wait = _number(
            "FLUX_MCP_WAIT_SECONDS",
            env.get("FLUX_MCP_WAIT_SECONDS") or str(DEFAULT_WAIT_SECONDS),
            low=1,
            high=3600,
        )
    cancel_after = _number(
        "FLUX_MCP_CANCEL_AFTER",
        env.get("FLUX_MCP_CANCEL_AFTER") or str(DEFAULT_CANCEL_AFTER),
        low=10,
        high=86400,
    )
    if cancel_after < wait:
        raise ConfigError(
            f"FLUX_MCP_CANCEL_AFTER ({cancel_after:g} s) must not be shorter than the wait "
            f"budget ({wait:g} s)."
        )

    if args.no_preview:
        preview = 0
    elif args.preview_size is not None:
        preview = _check_side(args.preview_size)
    else:
        preview = _preview_side(env.get("FLUX_MCP_PREVIEW") or str(DEFAULT_PREVIEW_SIDE))

    transport: Transport = args.transport or "stdio"
    host = args.host or env.get("FLUX_MCP_HOST") or "127.0.0.1"
    try:
        port = args.port if args.port is not None else int(env.get("FLUX_MCP_PORT") or DEFAULT_PORT)
    except ValueError:
        raise ConfigError(
            f"FLUX_MCP_PORT must be a port number, got {env['FLUX_MCP_PORT']!r}."
        ) from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {port}.")
    stateless = bool(args.stateless) or env.get("FLUX_MCP_STATELESS", "").lower() in (
        "1",
        "true",
        "yes",
        "on",
    )
    auth_token = env.get("FLUX_MCP_AUTH_TOKEN") or None
    oauth_issuer, public_url = _oauth(args, env)
    oauth_scopes = _oauth_scopes(
        args.oauth_scopes if args.oauth_scopes is not None else env.get("FLUX_MCP_OAUTH_SCOPES"),
        "--oauth-scopes" if args.oauth_scopes is not None else "FLUX_MCP_OAUTH_SCOPES",
    )
    if (
        transport == "streamable-http"
        and not is_loopback(host)
        and not auth_token
        and not oauth_issuer
    ):
        raise ConfigError(
            f"Refusing to serve on {host}: any machine that can reach it could generate "
            "images on your account. Let people sign in with OAuth (set FLUX_MCP_OAUTH_ISSUER "
            "and FLUX_MCP_PUBLIC_URL), or set FLUX_MCP_AUTH_TOKEN to a long random secret "
            "(clients then send 'Authorization: Bearer <secret>'), or bind 127.0.0.1."
        )
    if auth_token is not None and len(auth_token) < 16:
        raise ConfigError("FLUX_MCP_AUTH_TOKEN is too short: use at least 16 random characters.")
    allowed = tuple(args.allowed_hosts or ()) or tuple(
        h.strip() for h in env.get("FLUX_MCP_ALLOWED_HOSTS", "").split(",") if h.strip()
    )
    level = (args.log_level or env.get("FLUX_MCP_LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"The log level must be DEBUG, INFO, WARNING or ERROR, got {level!r}.")

    content = _content(
        args.content or env.get("FLUX_MCP_CONTENT") or CONTENT_AUTO,
        "--content" if args.content else "FLUX_MCP_CONTENT",
    )
    viewer = not args.no_viewer and env.get("FLUX_MCP_VIEWER", "").strip().lower() not in OFF_WORDS
    state_url = env.get("FLUX_STATE_URL", "").strip() or None
    store_url = env.get("FLUX_STORE_URL", "").strip() or None
    if store_url is not None and not store_url.startswith("s3://"):
        raise ConfigError(
            f"FLUX_STORE_URL must be s3://BUCKET/PREFIX (any S3-compatible service; endpoint and "
            f"keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), got {store_url!r}."
        )
    drain = _number(
        "FLUX_MCP_DRAIN_SECONDS",
        env.get("FLUX_MCP_DRAIN_SECONDS") or str(DEFAULT_DRAIN_SECONDS),
        low=0,
        high=300,
    )
    log_format = (env.get("FLUX_MCP_LOG_FORMAT") or "text").strip().lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"FLUX_MCP_LOG_FORMAT must be text or json, got {log_format!r}.")

    try:
        user_budget = usd_amount(
            "FLUX_MCP_USER_BUDGET_USD", env.get("FLUX_MCP_USER_BUDGET_USD", "")
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    link_ttl = _duration(
        "FLUX_MCP_LINK_TTL",
        env.get("FLUX_MCP_LINK_TTL") or f"{DEFAULT_LINK_TTL:g}",
        low=1,
        high=366 * 86400,
    )

    return Config(
        settings=settings,
        output_dir=output_dir,
        wait_seconds=wait,
        cancel_after=cancel_after,
        preview_side=preview,
        transport=transport,
        host=host,
        port=port,
        stateless=stateless,
        auth_token=auth_token,
        allowed_hosts=allowed,
        oauth_issuer=oauth_issuer,
        public_url=public_url,
        oauth_scopes=oauth_scopes,
        log_level=level,
        content=content,
        viewer=viewer,
        state_url=state_url,
        store_url=store_url,
        log_format=log_format,
        drain_seconds=drain,
        user_budget_usd=user_budget,
        audit_log=_audit_log(env.get("FLUX_MCP_AUDIT_LOG")),
        link_secret=_link_secret(env.get("FLUX_MCP_LINK_SECRET")),
        link_ttl=link_ttl,
    )


__all__ = [
    "DEFAULT_CANCEL_AFTER",
    "DEFAULT_LINK_TTL",
    "DEFAULT_OAUTH_SCOPES",
    "DEFAULT_PORT",
    "DEFAULT_PREVIEW_SIDE",
    "DEFAULT_WAIT_SECONDS",
    "ENVIRONMENT",
    "Config",
    "ConfigError",
    "Transport",
    "default_output_dir",
    "is_loopback",
    "load_config",
]
