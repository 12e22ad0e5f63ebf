"""The only module that knows which line of the official ``mcp`` SDK is installed.

2.x (``MCPServer``) is the default install; 1.x (``FastMCP``) is what environments holding
``langchain-mcp-adapters`` are pinned to. Both get the same tools, resources and results: the
rest of the package describes them with the plain specs below and never imports ``mcp.server``.
The SDK objects are looked up by name so that type checking under either line stays honest.
"""

from __future__ import annotations

import base64
import contextvars
import importlib
import importlib.util
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import anyio
import mcp.types as types
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from pydantic import BaseModel, ConfigDict, ValidationError

from .identity import IDENTITY_KEY, Identity

logger = logging.getLogger("mcp_server")
SDK_LINE = 2 if importlib.util.find_spec("mcp.server.mcpserver") is not None else 1
_PACKAGE = "mcp.server.mcpserver" if SDK_LINE == 2 else "mcp.server.fastmcp"
_server_module = importlib.import_module(_PACKAGE)
_exceptions = importlib.import_module(f"{_PACKAGE}.exceptions")

_ServerClass: Any = getattr(_server_module, "MCPServer" if SDK_LINE == 2 else "FastMCP")
_Context: Any = _server_module.Context
_Tool: Any = importlib.import_module(f"{_PACKAGE}.tools").Tool
_ArgModelBase: Any = importlib.import_module(f"{_PACKAGE}.utilities.func_metadata").ArgModelBase

#: Raise these from a handler: the SDK turns them into ``isError`` results / resource errors.
ToolError: type[Exception] = _exceptions.ToolError
ResourceError: type[Exception] = _exceptions.ResourceError
CallToolResult = types.CallToolResult
ResourceLink = types.ResourceLink
#: The one variable of every resource template registered here, e.g. ``flux://images/{stem}.png``.
TEMPLATE_VARIABLE = "stem"
#: How long a client may take to answer ``roots/list`` before the call goes on without roots.
ROOTS_TIMEOUT = 10.0
#: MCP Apps (``io.modelcontextprotocol/ui``): the extension's id and the MIME type of its views.
APPS_EXTENSION = "io.modelcontextprotocol/ui"
APP_MIME_TYPE = "text/html;profile=mcp-app"


class Reporter(Protocol):
    """Sends a progress notification, if the client asked for progress (a no-op otherwise)."""

    async def __call__(self, progress: float, message: str) -> None: ...


class NoRoots(Exception):
    """The client declared no roots capability, or cannot be asked on this connection."""


@dataclass(frozen=True)
class ClientInfo:
    """Who is calling: the ``clientInfo`` name it gave, and whether it renders MCP Apps."""

    #: ``clientInfo.name`` from ``initialize`` (None when the client sent none).
    name: str | None = None
    #: The client declared the MCP Apps extension with the ``text/html;profile=mcp-app`` type.
    apps: bool = False


@dataclass(frozen=True)
class CallContext:
    """What a tool handler may ask of the client during one call."""

    #: Progress notifications.
    report: Reporter
    #: The client's roots as URIs (``roots/list``); raises :class:`NoRoots` or the SDK's error.
    roots: Callable[[], Awaitable[list[str]]]
    #: The calling client, as it introduced itself.
    client: ClientInfo = field(default_factory=ClientInfo)
    #: Who is calling, as the HTTP request's bearer token proved it (None: no token checked,
    #: e.g. stdio). See :mod:`mcp_server.identity`.
    identity: Identity | None = None


ToolHandler = Callable[[CallContext, dict[str, Any]], Awaitable[types.CallToolResult]]


@dataclass(frozen=True)
class ToolSpec:
    """A tool whose arguments arrive as a raw dict, validated by the handler itself.

    ``input_schema`` is published as is: the server derives it from its pydantic input model, so
    validation errors can name the field and the allowed values, and unknown fields are refused
    rather than silently dropped.
    """

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_model: type[BaseModel]
    handler: ToolHandler
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = True
    #: Whether a call with these (raw) arguments needs the client's roots (a local path).
    #: Under protocol 2026-07-28 they are asked for before the call runs (the SDK's resolver).
    wants_roots: Callable[[dict[str, Any]], bool] | None = None


@dataclass(frozen=True)
class TemplateSpec:
    """A resource template with one ``{stem}`` variable, read as bytes."""

    uri_template: str
    name: str
    description: str
    mime_type: str
    reader: Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True)
class ResourceEntry:
    """A resource named in ``resources/list`` (read through a template)."""

    uri: str
    name: str
    mime_type: str
    size: int | None = None
    description: str | None = None


#: The resources listed for the caller (read :func:`calling_identity` to know who it is).
ResourceLister = Callable[[], Awaitable[list[ResourceEntry]]]


@dataclass(frozen=True)
class AppSpec:
    """An MCP App view: a ``ui://`` HTML resource the named tools' results are shown in.

    Hosts that render Apps fetch it and show each result of those tools in it; other clients
    see the tools and results exactly as without it (the link is only ``_meta`` in tools/list).
    """

    uri: str
    name: str
    title: str
    description: str
    html: str
    tools: Sequence[str]


@dataclass(frozen=True)
class HTTPOptions:
    host: str
    stateless: bool
    #: Host headers accepted (DNS-rebinding protection); empty disables the check.
    allowed_hosts: Sequence[str] = field(default_factory=tuple)
    allowed_origins: Sequence[str] = field(default_factory=tuple)


def _dump_arguments(self: Any) -> dict[str, Any]:
    return {"arguments": dict(self.model_extra or {})}


# Accepts any arguments and hands them over as one dict: the handler validates them.
_RawArguments: Any = type(
    "RawArguments",
    (_ArgModelBase,),
    {"model_config": ConfigDict(extra="allow"), "model_dump_one_level": _dump_arguments},
)


def _reporter(ctx: Any) -> Reporter:
    async def report(progress: float, message: str) -> None:
        await ctx.report_progress(progress, None, message)

    return report


_ROOTS_CAPABILITY = types.ClientCapabilities.model_validate({"roots": {}})


def _roots(ctx: Any, resolved: Any = None) -> Callable[[], Awaitable[list[str]]]:
    async def roots() -> list[str]:
        if resolved is not None:  # 2026-07-28: the SDK asked with the call (InputRequiredResult)
            return [str(root.uri) for root in resolved.roots]
        request_context = ctx.request_context
        session = request_context.session
        if not session.check_client_capability(_ROOTS_CAPABILITY):
            raise NoRoots("the client declared no roots capability")
        request: Any = types.ListRootsRequest.model_validate({"method": "roots/list"})
        if SDK_LINE == 1:  # 1.x wraps server requests in a root model
            sdk_types: Any = types
            request = sdk_types.ServerRequest(request)
        # Sent on this call's own stream: over HTTP the client need not keep a GET stream open.
        metadata = ServerMessageMetadata(related_request_id=request_context.request_id)
        with anyio.fail_after(ROOTS_TIMEOUT):
            result = await session.send_request(request, types.ListRootsResult, metadata=metadata)
        return [str(root.uri) for root in result.roots]

    return roots


#: From protocol 2026-07-28 a server cannot send ``roots/list`` as a request: the SDK's resolvers
#: (2.x) ask the client for them with the call's own result, then run the tool with the answer.
MODERN_PROTOCOL = "2026-07-28"


def _roots_resolver(spec: ToolSpec) -> Any:
    """2.x: a resolver that asks for the client's roots, under the 2026-07-28 era only, when the
    call needs them and the client declared them. None otherwise (the older era asks mid-call)."""
    resolve: Any = importlib.import_module("mcp.server.mcpserver.resolve")
    version: Any = importlib.import_module("mcp_types.version")
    wants = spec.wants_roots

    async def client_roots(ctx: Any) -> Any:
        identity = _identity(ctx)
        if identity is not None and identity.kind == "oauth":
            return None  # a remote person's roots are folders on their machine, not here
        protocol = getattr(ctx, "protocol_version", None)
        if not protocol or not version.is_version_at_least(protocol, MODERN_PROTOCOL):
            return None
        capabilities = getattr(ctx, "client_capabilities", None)
        if capabilities is None or capabilities.roots is None:
            return None
        params = ctx.request_context.params or {}
        arguments = params.get("arguments") if isinstance(params, dict) else None
        if wants is None or not isinstance(arguments, dict) or not wants(arguments):
            return None
        return resolve.ListRoots()

    client_roots.__annotations__ = {"ctx": _Context, "return": resolve.ListRoots | None}
    client_roots.__qualname__ = f"client_roots_{spec.name}"
    return resolve.Resolve(client_roots)


#: Set by the HTTP front (``mcp_server.http``) in each request's ASGI scope: an event set when
#: that HTTP request's connection is gone.
CLIENT_GONE_KEY = "flux_mcp.client_gone"


def _request_scope(ctx: Any) -> dict[str, Any]:
    """The ASGI scope of the HTTP request carrying this call (empty on stdio)."""
    try:
        request = ctx.request_context.request
    except Exception:
        return {}
    scope = getattr(request, "scope", None)
    return scope if isinstance(scope, dict) else {}


def _client_gone(ctx: Any) -> anyio.Event | None:
    """The event of this call's HTTP connection going away, over HTTP (None on stdio)."""
    event = _request_scope(ctx).get(CLIENT_GONE_KEY)
    return event if isinstance(event, anyio.Event) else None


def _identity(ctx: Any) -> Identity | None:
    """The caller the HTTP front verified for the request carrying this call (None: none)."""
    identity = _request_scope(ctx).get(IDENTITY_KEY)
    return identity if isinstance(identity, Identity) else None


class ClientGone(Exception):
    """The HTTP client dropped the connection mid-call (without notifications/cancelled)."""


async def _unless_gone(
    work: Callable[[], Awaitable[types.CallToolResult]], gone: anyio.Event
) -> types.CallToolResult:
    """Run ``work``; if the client's connection drops first, cancel it, as a cancel from the
    client would (the prediction the call owns is canceled upstream; stdio does the same)."""
    box: dict[str, Any] = {}

    async def run(scope: anyio.CancelScope) -> None:
        try:
            box["result"] = await work()
        except Exception as exc:
            box["error"] = exc
        finally:
            scope.cancel()

    async def watch(scope: anyio.CancelScope) -> None:
        await gone.wait()
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, tg.cancel_scope)
        tg.start_soon(watch, tg.cancel_scope)
    if "error" in box:
        raise box["error"]
    if "result" in box:
        return box["result"]  # type: ignore[no-any-return]
    raise ClientGone("the client closed the connection before the call finished")


def _client_info(ctx: Any) -> ClientInfo:
    """The calling client's name and Apps support, under either line (never raises)."""
    try:
        session = ctx.request_context.session
        params = getattr(session, "client_params", None)
        info = getattr(params, "client_info", None) or getattr(params, "clientInfo", None)
        capabilities = getattr(session, "client_capabilities", None) or getattr(
            params, "capabilities", None
        )
    except Exception:  # outside a request, or an SDK that names these otherwise
        return ClientInfo()
    name = getattr(info, "name", None)
    declared: dict[str, Any] = {}
    if isinstance(capabilities, BaseModel):
        declared = capabilities.model_dump(by_alias=True, exclude_none=True)
    settings = (declared.get("extensions") or {}).get(APPS_EXTENSION)
    mime_types = settings.get("mimeTypes") if isinstance(settings, dict) else None
    apps = isinstance(mime_types, list) and APP_MIME_TYPE in mime_types
    return ClientInfo(name=name if isinstance(name, str) else None, apps=apps)


_calling: contextvars.ContextVar[ClientInfo] = contextvars.ContextVar("calling")
_caller: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("caller")


def calling_client() -> ClientInfo:
    """The client of the tool call being handled (an unnamed one outside a call)."""
    return _calling.get(ClientInfo())


def calling_identity() -> Identity | None:
    """Who made the tool call (or the ``resources/read`` or ``resources/list`` request) being
    handled, as its HTTP request's token proved it (None outside one, and when no token is
    checked)."""
    return _caller.get(None)


def _scope_identity(request: Any) -> Identity | None:
    """The identity in the ASGI scope of an HTTP request (a Starlette request), if any."""
    scope = getattr(request, "scope", None)
    identity = scope.get(IDENTITY_KEY) if isinstance(scope, dict) else None
    return identity if isinstance(identity, Identity) else None


def _listed(entries: Sequence[ResourceEntry]) -> list[types.Resource]:
    return [
        types.Resource.model_validate(
            {
                "uri": entry.uri,
                "name": entry.name,
                "mimeType": entry.mime_type,
                **({"size": entry.size} if entry.size is not None else {}),
                **({"description": entry.description} if entry.description else {}),
            }
        )
        for entry in entries
    ]


def _with_caller_v2(handler: Any, lister: ResourceLister | None) -> Any:
    """2.x: a lowlevel handler of resources/read or resources/list run with the caller of its
    own request (never the session's first one: see mcp_server.identity); a list gets the
    caller's own resources added."""

    async def handle(ctx: Any, params: Any) -> Any:
        token = _caller.set(_scope_identity(getattr(ctx, "request", None)))
        try:
            result = await handler(ctx, params)
            if lister is not None and isinstance(result, types.ListResourcesResult):
                extra = _listed(await lister())
                result = result.model_copy(update={"resources": [*result.resources, *extra]})
            return result
        finally:
            _caller.reset(token)

    return handle


def _with_caller_v1(lowlevel: Any, handler: Any, lister: ResourceLister | None) -> Any:
    """1.x: the same, for a handler keyed by request type (the request context is the SDK's
    context variable, set for this request)."""

    async def handle(request: Any) -> Any:
        try:
            identity = _scope_identity(lowlevel.request_context.request)
        except LookupError:
            identity = None
        token = _caller.set(identity)
        try:
            result = await handler(request)
            inner = getattr(result, "root", None)
            if lister is not None and isinstance(inner, types.ListResourcesResult):
                extra = _listed(await lister())
                sdk_types: Any = types
                result = sdk_types.ServerResult(
                    inner.model_copy(update={"resources": [*inner.resources, *extra]})
                )
            return result
        finally:
            _caller.reset(token)

    return handle


def _tool(spec: ToolSpec, *, output_schema: bool, meta: dict[str, Any] | None) -> Any:
    async def call(ctx: Any, arguments: dict[str, Any], roots: Any = None) -> types.CallToolResult:
        client = _client_info(ctx)
        identity = _identity(ctx)
        token = _calling.set(client)
        caller = _caller.set(identity)
        context = CallContext(_reporter(ctx), _roots(ctx, roots), client, identity)
        if identity is not None:
            logger.debug("%s called by %s", spec.name, identity)
        gone = _client_gone(ctx)
        try:
            if gone is None:
                return await spec.handler(context, arguments)
            return await _unless_gone(lambda: spec.handler(context, arguments), gone)
        finally:
            _caller.reset(caller)
            _calling.reset(token)

    # What the SDK inspects: a context parameter and a result validated against output_model;
    # on 2.x, the client's roots resolved before the call under the 2026-07-28 era.
    returns = Annotated[types.CallToolResult, spec.output_model]
    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_Context)
    ]
    hints: dict[str, Any] = {"ctx": _Context, "return": returns}
    if SDK_LINE == 2 and spec.wants_roots is not None:
        roots_type = Annotated[Any, _roots_resolver(spec)]
        parameters.append(
            inspect.Parameter(
                "roots", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=roots_type
            )
        )
        hints["roots"] = roots_type
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=returns
    )
    call.__annotations__ = hints
    call.__name__ = spec.name
    # The tool's title is published at the top level; annotations carry the hints only.
    annotations = types.ToolAnnotations.model_validate(
        {
            "readOnlyHint": spec.read_only,
            "destructiveHint": spec.destructive,
            "idempotentHint": spec.idempotent,
            "openWorldHint": spec.open_world,
        }
    )
    tool = _Tool.from_function(
        call,
        name=spec.name,
        title=spec.title,
        description=spec.description,
        context_kwarg="ctx",
        annotations=annotations,
        meta=meta,
        structured_output=True,
    )
    tool.fn_metadata.arg_model = _RawArguments
    tool.parameters = lean_schema(spec.input_schema)
    # Published once per output model (the first tool returning it); both lines validate the
    # structured content against the model only where a schema is published.
    tool.fn_metadata.output_schema = (
        lean_schema(spec.output_model.model_json_schema(), output=True) if output_schema else None
    )
    return tool


# -- what tools/list publishes -------------------------------------------------------------------
# Every conversation pays for tools/list. pydantic's schemas carry a title on every property (the
# field name again), nullable fields as anyOf [X, null], and shared models as $defs: what a
# model reads is the same with less. Nothing is retyped: the schema is derived, then trimmed.


def lean_schema(schema: dict[str, Any], *, output: bool = False) -> dict[str, Any]:
    """A JSON schema as tools/list publishes it: the same constraints, fewer bytes.

    Drops the ``title`` keywords (pydantic's restatement of each name), inlines ``$defs`` and
    leaves out the top-level description (the tool's description says it). An optional
    parameter that may be null (``anyOf: [X, {"type": "null"}]``, default null) becomes ``X``
    with no default: leaving it out is how a model says "not given" (this server also takes a
    null). Every parameter keeps its type, description, default, enum and range.

    ``output=True``, for output schemas (which clients validate and no model reads): nulls stay
    allowed (``"type": [t, "null"]``, as the structured content holds them), and descriptions
    and defaults are dropped.
    """
    definitions = schema.get("$defs", {})
    dropped = {"title", "$defs", *(("description", "default") if output else ())}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node and node["$ref"].startswith("#/$defs/"):
            target = definitions[node["$ref"].removeprefix("#/$defs/")]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in dropped:
                continue
            if key == "properties":
                out[key] = {name: walk(prop) for name, prop in value.items()}
            else:
                out[key] = walk(value)
        return _nullable(out, keep_null=output)

    lean: dict[str, Any] = walk(schema)
    lean.pop("description", None)
    return lean


def _nullable(node: dict[str, Any], *, keep_null: bool) -> dict[str, Any]:
    options = node.get("anyOf")
    if not isinstance(options, list) or len(options) != 2 or {"type": "null"} not in options:
        return node
    [other] = [option for option in options if option != {"type": "null"}]
    if not isinstance(other, dict) or not isinstance(other.get("type"), str):
        return node
    if not keep_null and node.get("default", ...) is not None:
        return node  # a null that is more than "not given": keep it as declared
    merged = {**other, **{k: v for k, v in node.items() if k != "anyOf"}}
    if keep_null:
        merged["type"] = [other["type"], "null"]
    else:
        merged.pop("default")
    return merged


def _app_meta(uri: str) -> dict[str, Any]:
    # The nested key of the Apps spec (2026-01-26); the flat "ui/resourceUri" of its drafts
    # would add its bytes to every conversation for hosts that all read this one now.
    return {"ui": {"resourceUri": uri}}


def _template_reader(spec: TemplateSpec) -> Callable[..., Awaitable[bytes]]:
    async def read(stem: str) -> bytes:
        return await spec.reader(stem)

    return read


def _security(options: HTTPOptions) -> Any:
    from mcp.server.transport_security import TransportSecuritySettings

    if not options.allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(options.allowed_hosts),
        allowed_origins=list(options.allowed_origins),
    )


def _apps_extension(app: AppSpec) -> Any:
    """2.x: the SDK's own MCP Apps extension, serving the view and advertising the capability."""
    apps_module: Any = importlib.import_module("mcp.server.apps")
    apps = apps_module.Apps()
    apps.add_html_resource(
        app.uri,
        app.html,
        name=app.name,
        title=app.title,
        description=app.description,
        # No domains at all: the view may load and connect to nothing.
        csp=apps_module.ResourceCsp(),
        prefers_border=True,
    )
    return apps


def _app_resource_v1(app: AppSpec) -> Any:
    resources: Any = importlib.import_module(f"{_PACKAGE}.resources")
    return resources.TextResource(
        uri=app.uri,
        name=app.name,
        title=app.title,
        description=app.description,
        mime_type=APP_MIME_TYPE,
        text=app.html,
        meta={"ui": {"csp": {}, "prefersBorder": True}},
    )


class SDKServer:
    """The SDK's server with our tools and resources, whichever line is installed."""

    def __init__(
        self,
        *,
        name: str,
        title: str,
        version: str,
        instructions: str,
        tools: Sequence[ToolSpec],
        templates: Sequence[TemplateSpec],
        http: HTTPOptions | None = None,
        log_level: str = "INFO",
        app: AppSpec | None = None,
        list_resources: ResourceLister | None = None,
    ) -> None:
        self._http = http
        bound = set(app.tools) if app is not None else set()
        published: set[type[BaseModel]] = set()
        built = []
        for spec in tools:
            first = spec.output_model not in published
            published.add(spec.output_model)
            meta = _app_meta(app.uri) if app is not None and spec.name in bound else None
            built.append(_tool(spec, output_schema=first, meta=meta))
        extensions = [_apps_extension(app)] if app is not None and SDK_LINE == 2 else []
        if SDK_LINE == 2:
            self._impl: Any = _ServerClass(
                name=name,
                title=title,
                version=version,
                instructions=instructions,
                tools=built,
                extensions=extensions,
                log_level=log_level,
            )
        else:
            extra: dict[str, Any] = {}
            if http is not None:
                extra = {
                    "host": http.host,
                    "stateless_http": http.stateless,
                    "transport_security": _security(http),
                }
            self._impl = _ServerClass(
                name=name, instructions=instructions, tools=built, log_level=log_level, **extra
            )
            # FastMCP takes no version; the low-level server reports this one at initialize.
            self._impl._mcp_server.version = version
            if app is not None:  # 1.x has no Apps helpers: the same resource, by hand
                self._impl.add_resource(_app_resource_v1(app))
        for template in templates:
            self._impl.resource(
                template.uri_template,
                name=template.name,
                description=template.description,
                mime_type=template.mime_type,
            )(_template_reader(template))
        self._identify_resource_requests(list_resources)

    def _identify_resource_requests(self, lister: ResourceLister | None) -> None:
        """resources/read and resources/list know who asks (:func:`calling_identity`), as tool
        calls do: their handlers are wrapped, under either line."""
        if SDK_LINE == 2:
            lowlevel = self._impl._lowlevel_server
            for method in ("resources/read", "resources/list"):
                entry = lowlevel.get_request_handler(method)
                if entry is not None:
                    wrapped = _with_caller_v2(entry.handler, lister)
                    lowlevel.add_request_handler(method, entry.params_type, wrapped)
            return
        lowlevel = self._impl._mcp_server
        sdk_types: Any = types
        for kind in (sdk_types.ReadResourceRequest, sdk_types.ListResourcesRequest):
            handler = lowlevel.request_handlers.get(kind)
            if handler is not None:
                lowlevel.request_handlers[kind] = _with_caller_v1(lowlevel, handler, lister)

    async def run_stdio(self) -> None:
        # The SDK's run_stdio_async(), with unreadable messages answered (_answer_unreadable).
        stdio_server = importlib.import_module("mcp.server.stdio").stdio_server
        lowlevel = self._impl._lowlevel_server if SDK_LINE == 2 else self._impl._mcp_server
        async with stdio_server() as (read_stream, write_stream):
            forward, receive = anyio.create_memory_object_stream[Any](0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_answer_unreadable, read_stream, forward, write_stream)
                await lowlevel.run(receive, write_stream, lowlevel.create_initialization_options())
                tg.cancel_scope.cancel()

    def http_app(self) -> Any:
        """The streamable HTTP ASGI app (its lifespan runs the session manager)."""
        if self._http is None:
            raise RuntimeError("this server was built without HTTP options")
        if SDK_LINE == 2:
            return self._impl.streamable_http_app(
                stateless_http=self._http.stateless,
                transport_security=_security(self._http),
                host=self._http.host,
            )
        return self._impl.streamable_http_app()


# -- messages the SDK cannot read -----------------------------------------------------------------
# Over stdio the SDK drops a line it cannot parse (nested too deep, a number too large, a lone
# surrogate, bad JSON, not JSON-RPC) without a word: the caller waits for its own timeout. Here
# each one gets a JSON-RPC error naming the limit. (Over HTTP the SDK answers 400 by itself.)

_PARSER_LIMITS = (
    ("recursion limit", "is nested deeper than the JSON parser's limit of about 200 levels"),
    ("number out of range", "holds a number larger than the JSON parser's limit (4300 digits)"),
    ("hex escape", "holds a lone UTF-16 surrogate escape such as \\ud800 (not valid Unicode)"),
    ("surrogate", "holds a lone UTF-16 surrogate escape such as \\ud800 (not valid Unicode)"),
)
_HUGE = object()


def _lenient_id(raw: Any) -> tuple[bool, str | int | None]:
    """(is a notification, the request id) read leniently from an unreadable message."""
    doc = raw
    if isinstance(raw, (str, bytes)) and len(raw) <= 64 * 1024 * 1024:
        try:
            doc = json.loads(raw, parse_int=lambda s: int(s) if len(s) <= 4000 else _HUGE)
        except (ValueError, RecursionError):
            return False, None
    if not isinstance(doc, dict):
        return False, None
    ident = doc.get("id")
    if "id" not in doc and isinstance(doc.get("method"), str):
        return True, None
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        return False, None
    if isinstance(ident, str) and len(ident) > 200:
        return False, None
    return False, ident


def unreadable_reply(exc: Exception) -> dict[str, Any] | None:
    """The JSON-RPC error answering a message the SDK could not read (None: a notification)."""
    errors = [dict(e) for e in exc.errors()] if isinstance(exc, ValidationError) else []
    first: dict[str, Any] = errors[0] if errors else {}
    # The raw line (a parse error), or the message as a dict (a missing field's input).
    notification, ident = False, None
    for error in errors:
        notification, ident = _lenient_id(error.get("input"))
        if notification or ident is not None:
            break
    if notification:
        return None
    detail = str(first.get("msg") or type(exc).__name__)[:200]
    if first.get("type") == "json_invalid":
        why = next((hint for key, hint in _PARSER_LIMITS if key in detail), "is not valid JSON")
        code, text = -32700, f"Parse error: the message {why} ({detail})."
    else:
        where = ".".join(str(part) for part in first.get("loc", ())[1:])[:100]
        code = -32600
        text = (
            "Invalid request: not a JSON-RPC 2.0 request, notification or response "
            f"({where + ': ' if where else ''}{detail})."
        )
    return {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": text}}


def _session_message(reply: dict[str, Any]) -> Any:
    error = types.JSONRPCError.model_construct(
        jsonrpc="2.0",
        id=reply["id"],
        error=types.ErrorData.model_construct(**reply["error"]),
    )
    if SDK_LINE == 1:  # 1.x wraps messages in a root model
        sdk_types: Any = types
        return SessionMessage(sdk_types.JSONRPCMessage.model_construct(root=error))
    return SessionMessage(error)


async def _answer_unreadable(read_stream: Any, forward: Any, write_stream: Any) -> None:
    async with forward:
        async for item in read_stream:
            if isinstance(item, Exception):
                reply = unreadable_reply(item)
                logger.warning("unreadable message on stdin: %s", (reply or {}).get("error"))
                if reply is not None:
                    await write_stream.send(_session_message(reply))
                continue
            await forward.send(item)


# -- result content ------------------------------------------------------------------------------
# Built from wire-format dicts: both lines accept the camelCase field names.


def text_content(text: str) -> types.TextContent:
    return types.TextContent.model_validate({"type": "text", "text": text})


def image_content(data: bytes, mime_type: str) -> types.ImageContent:
    encoded = base64.b64encode(data).decode("ascii")
    return types.ImageContent.model_validate(
        {"type": "image", "data": encoded, "mimeType": mime_type}
    )


def resource_link(
    uri: str, *, name: str, mime_type: str, size: int, description: str
) -> types.ResourceLink:
    return types.ResourceLink.model_validate(
        {
            "type": "resource_link",
            "uri": uri,
            "name": name,
            "mimeType": mime_type,
            "size": size,
            "description": description,
        }
    )


def tool_result(
    content: Sequence[types.TextContent | types.ImageContent | types.ResourceLink],
    structured: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> types.CallToolResult:
    data: dict[str, Any] = {"content": list(content), "structuredContent": structured}
    data["isError"] = False
    if meta:
        data["_meta"] = meta
    return types.CallToolResult.model_validate(data)


def wire_size(result: types.CallToolResult) -> int:
    """Bytes of the result as JSON (camelCase, no nulls), as both lines send it."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


__all__ = [
    "APPS_EXTENSION",
    "APP_MIME_TYPE",
    "SDK_LINE",
    "TEMPLATE_VARIABLE",
    "AppSpec",
    "CallContext",
    "CallToolResult",
    "ClientInfo",
    "HTTPOptions",
    "NoRoots",
    "Reporter",
    "ResourceEntry",
    "ResourceError",
    "ResourceLink",
    "ResourceLister",
    "SDKServer",
    "TemplateSpec",
    "ToolError",
    "ToolSpec",
    "calling_client",
    "calling_identity",
    "image_content",
    "lean_schema",
    "resource_link",
    "text_content",
    "tool_result",
    "wire_size",
]
