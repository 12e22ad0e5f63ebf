"""The only module that knows which line of the official ``mcp`` SDK is installed.

2.x (``MCPServer``) is the default install; 1.x (``FastMCP``) is what environments holding
``langchain-mcp-adapters`` are pinned to. Both get the same tools, resources and results: the
rest of the package describes them with the plain specs below and never imports ``mcp.server``.
The SDK objects are looked up by name so that type checking under either line stays honest.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import anyio
import mcp.types as types
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel, ConfigDict

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


class Reporter(Protocol):
    """Sends a progress notification, if the client asked for progress (a no-op otherwise)."""

    async def __call__(self, progress: float, message: str) -> None: ...


class NoRoots(Exception):
    """The client declared no roots capability, or cannot be asked on this connection."""


@dataclass(frozen=True)
class CallContext:
    """What a tool handler may ask of the client during one call."""

    #: Progress notifications.
    report: Reporter
    #: The client's roots as URIs (``roots/list``); raises :class:`NoRoots` or the SDK's error.
    roots: Callable[[], Awaitable[list[str]]]


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


@dataclass(frozen=True)
class TemplateSpec:
    """A resource template with one ``{stem}`` variable, read as bytes."""

    uri_template: str
    name: str
    description: str
    mime_type: str
    reader: Callable[[str], Awaitable[bytes]]


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


def _roots(ctx: Any) -> Callable[[], Awaitable[list[str]]]:
    async def roots() -> list[str]:
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


def _tool(spec: ToolSpec) -> Any:
    async def call(ctx: Any, arguments: dict[str, Any]) -> types.CallToolResult:
        return await spec.handler(CallContext(_reporter(ctx), _roots(ctx)), arguments)

    # What the SDK inspects: a context parameter and a result validated against output_model.
    returns = Annotated[types.CallToolResult, spec.output_model]
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_Context)],
        return_annotation=returns,
    )
    call.__annotations__ = {"ctx": _Context, "return": returns}
    call.__name__ = spec.name
    annotations = types.ToolAnnotations.model_validate(
        {
            "title": spec.title,
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
        structured_output=True,
    )
    tool.fn_metadata.arg_model = _RawArguments
    tool.parameters = spec.input_schema
    return tool


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
    ) -> None:
        self._http = http
        built = [_tool(spec) for spec in tools]
        if SDK_LINE == 2:
            self._impl: Any = _ServerClass(
                name=name,
                title=title,
                version=version,
                instructions=instructions,
                tools=built,
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
        for spec in templates:
            self._impl.resource(
                spec.uri_template,
                name=spec.name,
                description=spec.description,
                mime_type=spec.mime_type,
            )(_template_reader(spec))

    async def run_stdio(self) -> None:
        await self._impl.run_stdio_async()

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
) -> types.CallToolResult:
    return types.CallToolResult.model_validate(
        {"content": list(content), "structuredContent": structured, "isError": False}
    )


def wire_size(result: types.CallToolResult) -> int:
    """Bytes of the result as JSON (camelCase, no nulls), as both lines send it."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


__all__ = [
    "SDK_LINE",
    "TEMPLATE_VARIABLE",
    "CallContext",
    "CallToolResult",
    "HTTPOptions",
    "NoRoots",
    "Reporter",
    "ResourceError",
    "ResourceLink",
    "SDKServer",
    "TemplateSpec",
    "ToolError",
    "ToolSpec",
    "image_content",
    "resource_link",
    "text_content",
    "tool_result",
    "wire_size",
]
