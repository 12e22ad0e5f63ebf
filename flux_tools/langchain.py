"""``FluxImageTool``: FLUX image generation as a LangChain tool.

    from flux_tools.langchain import FluxImageTool

    tool = FluxImageTool(output_dir="images")  # token: FLUX_API_TOKEN or REPLICATE_API_TOKEN
    model_with_tools = chat_model.bind_tools([tool])
    message = tool.invoke(ai_message.tool_calls[0])  # ToolMessage: text + result artifact

The arguments are :class:`~flux_tools.FluxProInput` itself (the model's registry entry), so the
schema a chat model sees is the one the client validates with. ``_run`` drives a
:class:`~flux_tools.FluxClient` and ``_arun`` an :class:`~flux_tools.AsyncFluxClient` (fifty
concurrent async calls cost no thread). Only the public API of :mod:`flux_tools` is used here.
Needs the ``langchain`` extra (``langchain-core`` 1.x: its standard content blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, ClassVar, Literal, TypeVar

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForToolRun,
        CallbackManagerForToolRun,
    )
    from langchain_core.messages.content import create_image_block, create_text_block
    from langchain_core.tools import BaseTool, BaseToolkit, ToolException
except ImportError as exc:  # installed without the extra: say which one, in one line
    raise ModuleNotFoundError(
        f"flux_tools.langchain needs the langchain extra ({exc}): "
        "pip install 'flux-tools[langchain]'",
        name=exc.name,
    ) from None
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    SkipValidation,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from flux_tools import (
    MODELS,
    AsyncFluxClient,
    FluxClient,
    FluxError,
    FluxInputError,
    GenerationResult,
    Prediction,
    Settings,
)
from flux_tools.kit import (
    TOKEN_ENV_VARS,
    Progress,
    Spending,
    asave_or_explain,
    edit_arguments,
    edit_spec,
    error_text,
    model_spec,
    redact,
    result_text,
    safe_text,
    save_or_explain,
)

__all__ = [
    "PROGRESS_EVENT",
    "FluxImageEditTool",
    "FluxImageTool",
    "FluxToolkit",
    "validation_error_text",
]

#: Name of the custom callback event sent on each status change while a generation runs.
#: Its data: ``{"prediction_id": str, "status": str, "elapsed": float, "message": str}``
#: (``elapsed`` in seconds; ``message`` as the CLI and the MCP server word it).
PROGRESS_EVENT = "flux_progress"

ToolContent = str | list[str | dict[str, Any]]
#: What ``_run`` / ``_arun`` hand back: the content for the model and the result as data.
ToolOutput = tuple[ToolContent, dict[str, Any]]

DESCRIPTION = (
    "Generate an image from a text description with a FLUX model. Returns the image URL "
    "(temporary: it expires after about an hour), the saved file path when the tool keeps "
    "files, and the seed. Takes about 5 to 30 seconds. Write a detailed prompt: subject, "
    "setting, style, lighting, composition. To reproduce or vary an earlier image, call it "
    "again with the same prompt and that image's seed."
)

EDIT_DESCRIPTION = (
    "Edit an existing image as an instruction says ('make the car gold', 'replace the sky with "
    "a sunset', 'turn it into a watercolor'), keeping the rest of it. The image can be an "
    "https URL, a data: URI, a saved file's path, or the prediction id of an image generated "
    "earlier (to edit the image just made, pass its prediction id). Returns the new image's URL "
    "(temporary), its saved path, and the seed."
)

_INPUT_MODELS: dict[str, type[BaseModel]] = {
    name: model
    for spec in MODELS.values()
    for name, model in [(spec.input_model.__name__, spec.input_model)]
    + ([(f"{spec.input_model.__name__}Edit", spec.input_model)] if spec.can_edit else [])
}
#: Longest text of an OS error shown to the model (a file name may be kilobytes of base64).
_MAX_ERROR_TEXT = 300


def validation_error_text(error: Exception) -> str:
    """The default ``handle_validation_error``: which field is wrong and what it allows.

    Uses the client's own summary (:meth:`FluxInputError.from_validation_error`), so a chat
    model reads the same guidance as a Python caller, instead of "Tool input validation error".
    """
    if not isinstance(error, ValidationError):  # a pydantic.v1 error from a custom schema
        summary = FluxInputError.one("input", safe_text(error, _MAX_ERROR_TEXT)).message
        return f"{summary}\nFix these arguments and call the tool again."
    input_model = _INPUT_MODELS.get(error.title)
    schema = input_model.model_json_schema() if input_model else {}
    summary = FluxInputError.from_validation_error(error, schema).message
    return f"{summary}\nFix these arguments and call the tool again."


_Tool = TypeVar("_Tool", bound="_FluxTool")


class _FluxTool(BaseTool):
    """What the generate and edit tools share: configuration, clients, output, errors.

    ``response_format="content_and_artifact"``: the content is text for the chat model (URLs,
    saved paths, seed; with ``include_image_blocks=True``, LangChain standard content blocks:
    the text block first, then one image block per image); the artifact is
    :meth:`GenerationResult.summary` (urls, prediction_id, model, seed, timings, input, files).
    Errors come back as a ``ToolMessage`` with ``status="error"`` and a text saying what to
    change (with the prediction id once one exists); status changes are sent to callbacks as
    the custom event :data:`PROGRESS_EVENT`.

    Clients: the calls running on one event loop share an :class:`~flux_tools.AsyncFluxClient`,
    opened by the first and closed when the last ends, so no client outlives its loop
    (``asyncio.run`` twice works) and nothing is left open. ``invoke`` reuses one
    :class:`~flux_tools.FluxClient`, built on first use and closed by :meth:`close` or at the
    end of a ``with tool:`` block. Every client a tool builds spends from the same account
    (:class:`~flux_tools.Spending`: request rate limits, money budget, learned run times),
    whatever the loop or thread. Injected ``client`` / ``async_client`` are used as they are
    (their base URL, model and account then apply) and are left to their owner.
    """

    # A misspelt option is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    # Derived, never retyped: from the registry's input model of ``model`` (set in _configure).
    args_schema: Annotated[Any, SkipValidation()] = None
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: Any = True
    handle_validation_error: Any = validation_error_text

    api_token: SecretStr | None = None
    """API token; defaults to ``FLUX_API_TOKEN``, else ``REPLICATE_API_TOKEN``."""
    base_url: str | None = None
    """API base URL; defaults to ``FLUX_BASE_URL``, ``REPLICATE_BASE_URL``, else Replicate's."""
    model: str | None = None
    """``owner/name`` of the model; defaults to ``FLUX_MODEL``, else flux-pro."""
    output_dir: Path | None = None
    """Download each image here as soon as it is ready: provider URLs expire within the hour.
    Images in it may also be given as inputs (by path or prediction id). A folder that cannot
    be created or written is reported before anything is sent (nothing is paid)."""
    image_dirs: list[Path] = Field(default_factory=list)
    """Further folders from which local images may be read as inputs (plus ``FLUX_IMAGE_DIRS``).
    A path outside them is refused without being opened."""
    timeout: float | None = Field(default=None, gt=0)
    """Deadline of one generation in seconds (default: the client's, 300). Past it the
    prediction is canceled upstream and the tool answers with an error naming its id."""
    include_image_blocks: bool = False
    """Add image content blocks after the text. Off by default: OpenAI chat models accept only
    text in tool messages; Anthropic and Gemini models can look at the image. Only http(s)
    URLs and inline ``data:`` images become blocks (as ``url`` or ``base64``)."""
    # Injected clients serve invoke (client) and ainvoke (async_client); a path without one
    # gets a client built from the fields above.
    client: FluxClient | None = Field(default=None, exclude=True, repr=False)
    async_client: AsyncFluxClient | None = Field(default=None, exclude=True, repr=False)

    # Everything the clients this tool builds need: the fields above over the environment's
    # settings (or over an injected client's), resolved once by the core's Settings.
    _settings: Settings = PrivateAttr()
    # What every client this tool builds spends from (Spending.resolve: one account).
    _spending: dict[str, Any] = PrivateAttr(default_factory=dict)
    # The async client each event loop's calls share, with how many calls use it.
    _aclients: dict[asyncio.AbstractEventLoop, _Shared] = PrivateAttr(default_factory=dict)
    # The blocking client built by invoke (None until the first call, and after close()).
    _client: FluxClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_token": TOKEN_ENV_VARS[0]}

    @field_validator("output_dir")
    @classmethod
    def _absolute_dir(cls, value: Path | None) -> Path | None:
        # Resolved once, so a later chdir does not move where images land.
        return value.expanduser().resolve() if value is not None else None

    @model_validator(mode="after")
    def _configure(self) -> _FluxTool:
        injected = self.client or self.async_client
        base = injected.settings if injected is not None else Settings.from_env()
        settings = self._with_model(
            base.with_options(api_token=self.api_token, base_url=self.base_url)
        )
        self._settings = settings
        self._spending = Spending().resolve(settings)
        self.api_token, self.base_url = settings.api_token, settings.base_url
        self.model = self._model_of(settings)
        if "args_schema" not in self.model_fields_set:
            self.args_schema = self._arguments()
        return self

    # -- what differs between the generate and edit tools ----------------------------------

    def _with_model(self, settings: Settings) -> Settings:
        """``settings`` with this tool's ``model`` in the slot the tool uses."""
        raise NotImplementedError

    def _model_of(self, settings: Settings) -> str:
        raise NotImplementedError

    def _arguments(self) -> type[BaseModel] | None:
        """The args_schema: derived from the model's input model."""
        raise NotImplementedError

    def _call(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The client method to call and its arguments, for the validated tool ``fields``."""
        raise NotImplementedError

    @field_serializer(
        "args_schema", "handle_tool_error", "handle_validation_error", when_used="json"
    )
    def _name_callables(self, value: Any) -> Any:
        # Classes and functions have no JSON form: name them, so model_dump_json() works.
        if value is None or isinstance(value, bool | str | dict):
            return value
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"

    # -- running ----------------------------------------------------------------------------

    def _parse_input(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> str | dict[str, Any]:
        parsed = super()._parse_input(tool_input, tool_call_id)
        if isinstance(parsed, dict) and isinstance(tool_input, dict):
            # LangChain adds every default; send only what the caller chose (as the client does).
            return {k: v for k, v in parsed.items() if k in tool_input}
        return parsed

    def _run(
        self,
        *args: str,
        run_manager: CallbackManagerForToolRun | None = None,
        **fields: Any,
    ) -> ToolOutput:
        method, arguments = self._prepare(args, fields)
        progress = Progress(str(self.model))
        events = run_manager.get_child() if run_manager else None

        def on_progress(prediction: Prediction) -> None:
            data = _progress_event(progress, prediction)
            if data and events is not None and run_manager is not None:
                events.on_custom_event(PROGRESS_EVENT, data, run_id=run_manager.run_id)

        with self._sync_client() as client:
            try:
                result = getattr(client, method)(on_progress=on_progress, **arguments)
            except (FluxError, OSError) as exc:
                raise self._tool_exception(exc) from exc
            save_error = None
            if self.output_dir is not None:  # the image is paid for: never lose it to a save
                save_error = save_or_explain(client, result, self.output_dir)
        return self._output(result, save_error)

    async def _arun(
        self,
        *args: str,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **fields: Any,
    ) -> ToolOutput:
        method, arguments = self._prepare(args, fields)
        progress = Progress(str(self.model))
        events = run_manager.get_child() if run_manager else None

        async def on_progress(prediction: Prediction) -> None:
            data = _progress_event(progress, prediction)
            if data and events is not None and run_manager is not None:
                await events.on_custom_event(PROGRESS_EVENT, data, run_id=run_manager.run_id)

        async with self._async_client() as client:
            try:
                result = await getattr(client, method)(on_progress=on_progress, **arguments)
            except (FluxError, OSError) as exc:
                raise self._tool_exception(exc) from exc
            save_error = None
            if self.output_dir is not None:  # the image is paid for: never lose it to a save
                save_error = await asave_or_explain(client, result, self.output_dir)
        return self._output(result, save_error)

    def _prepare(self, args: tuple[str, ...], fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The client method to call and all its arguments; refuses an unusable output_dir."""
        method, arguments = self._call(_with_prompt(args, fields))
        self._check_output_dir()
        image_dirs = [*([self.output_dir] if self.output_dir else []), *self.image_dirs]
        return method, {"timeout": self.timeout, "image_dirs": image_dirs, **arguments}

    def _check_output_dir(self) -> None:
        """Refuse, before anything is sent, an ``output_dir`` that cannot hold the image."""
        if self.output_dir is None:
            return
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.output_dir, os.W_OK | os.X_OK):  # read-only, not ours
                raise PermissionError(errno.EACCES, "not writable", str(self.output_dir))
        except OSError as exc:
            raise ToolException(
                f"No image was generated: the output folder {self.output_dir} cannot be used "
                f"({_os_error_text(exc)}). Nothing was sent. This is a configuration problem "
                "that retrying will not fix: tell the user."
            ) from exc

    # -- clients ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sync_client(self) -> Iterator[FluxClient]:
        if self.client is not None:
            yield self.client
            return
        # Calls from worker threads (``batch``) share one client: built once, under the lock.
        with self._client_lock:
            if self._client is None:
                self._client = FluxClient(settings=self._settings, **self._spending)
            client = self._client
        yield client

    @contextlib.asynccontextmanager
    async def _async_client(self) -> AsyncIterator[AsyncFluxClient]:
        if self.async_client is not None:
            yield self.async_client
            return
        # Pooled connections belong to the event loop that opened them: the calls of one loop
        # share a client (one pool for fifty concurrent calls), closed when the last call
        # ends, so that none outlives its loop. (One loop runs one thread: no lock needed.)
        loop = asyncio.get_running_loop()
        shared = self._aclients.get(loop)
        if shared is None:
            client = AsyncFluxClient(settings=self._settings, **self._spending)
            shared = self._aclients[loop] = _Shared(client)
        shared.users += 1
        try:
            yield shared.client
        finally:
            shared.users -= 1
            if shared.users == 0:
                del self._aclients[loop]
                # Even when this call is being cancelled: the sockets must be released.
                await asyncio.shield(shared.client.aclose())

    def close(self) -> None:
        """Close the blocking client this tool built (an injected one is left to its owner).

        Async clients close themselves when their loop's last call ends: nothing else to close.
        """
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Same as :meth:`close`, for async code (async calls keep no client open)."""
        self.close()

    def __enter__(self: _Tool) -> _Tool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what the chat model reads ----------------------------------------------------------

    def _output(self, result: GenerationResult, save_error: str | None) -> ToolOutput:
        artifact = result.summary()
        if save_error is not None:
            artifact["save_error"] = save_error
        text = self._result_text(result, save_error)
        if not self.include_image_blocks:
            return text, artifact
        blocks: list[str | dict[str, Any]] = [dict(create_text_block(text))]
        blocks.extend(block for url in result.urls if (block := _image_content(url)) is not None)
        return blocks, artifact

    #: The first word of the result text ("Generated 1 image with ...").
    _verb: ClassVar[str] = "Generated"

    def _result_text(self, result: GenerationResult, save_error: str | None) -> str:
        extra = [f"Saving the image failed: {save_error}"] if save_error else []
        text = result_text(result, verb=self._verb, reproduce_with=self.name, extra=extra)
        return self._redact(text)

    def _tool_exception(self, exc: FluxError | OSError) -> ToolException:
        """The error as a chat model can act on it: what happened and what to change."""
        if isinstance(exc, FluxError):
            # What happened, the prediction and where its image is when one exists, what to do.
            text = "No image was generated. " + error_text(
                exc, tool=self.name, secrets=self._secrets()
            )
        else:
            # Reading a local input image failed (a bare base64 string taken for a file name,
            # an unreadable file): before the prediction was created.
            text = (
                f"No image was generated: a local image could not be read ({_os_error_text(exc)})."
                "\nAn image argument is an https URL, a data: URI (data:image/png;base64,...), a "
                f"saved file's path or a prediction id: fix it and call {self.name} again."
            )
        return ToolException(self._redact(text))

    def _secrets(self) -> list[str | None]:
        return [self.api_token.get_secret_value() if self.api_token else None]

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())


class FluxImageTool(_FluxTool):
    """``generate_image``: text-to-image with FLUX from any LangChain agent or pipeline.

    Its arguments are the input model of ``model`` (``FLUX_MODEL``, else flux-pro) itself.
    """

    name: str = "generate_image"
    description: str = DESCRIPTION

    def _with_model(self, settings: Settings) -> Settings:
        return settings.with_options(model=self.model)

    def _model_of(self, settings: Settings) -> str:
        return settings.model

    def _arguments(self) -> type[BaseModel] | None:
        spec = model_spec(str(self.model))
        return spec.input_model if spec else None

    def _call(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "generate", {"model": self.model, **fields}


class FluxImageEditTool(_FluxTool):
    """``edit_image``: change an image as an instruction says ("make the car gold").

    Its arguments are the edit model's input (``FLUX_EDIT_MODEL``, else flux-kontext-pro), with
    the image required. The image may be an https URL, a data: URI, a file in ``output_dir`` or
    ``image_dirs``, or the prediction id of an earlier result.
    """

    name: str = "edit_image"
    description: str = EDIT_DESCRIPTION
    _verb: ClassVar[str] = "Edited"

    def _with_model(self, settings: Settings) -> Settings:
        return settings.with_options(edit_model=self.model)

    def _model_of(self, settings: Settings) -> str:
        return settings.edit_model

    def _arguments(self) -> type[BaseModel] | None:
        return edit_arguments(edit_spec(str(self.model)))

    def _call(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        spec = edit_spec(str(self.model))
        assert spec.edit_field is not None
        rest = dict(fields)
        image, prompt = rest.pop(spec.edit_field), rest.pop("prompt")
        return "edit", {"image": image, "prompt": prompt, "model": self.model, **rest}


class FluxToolkit(BaseToolkit):
    """``generate_image`` and ``edit_image`` sharing one blocking client (one connection pool).

    The same configuration as the tools; ``model`` and ``edit_model`` pick each tool's model
    (and so its schema). The toolkit owns that client: close it with :meth:`close` (or use the
    toolkit in a ``with`` block) when done. Async calls share a client per event loop, closed
    when the loop's last call ends (as the tools do alone), so the tools work from any loop and
    leave nothing open. Both tools, sync and async, spend from one account (rate limits, budget).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    api_token: SecretStr | None = None
    """API token; defaults to ``FLUX_API_TOKEN``, else ``REPLICATE_API_TOKEN``."""
    base_url: str | None = None
    model: str | None = None
    edit_model: str | None = None
    output_dir: Path | None = None
    image_dirs: list[Path] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0)
    include_image_blocks: bool = False

    _client: FluxClient | None = PrivateAttr(default=None)
    _spending: dict[str, Any] = PrivateAttr(default_factory=dict)

    def get_tools(self) -> list[BaseTool]:
        if self._client is None:
            settings = Settings.from_env(
                api_token=self.api_token,
                base_url=self.base_url,
                model=self.model,
                edit_model=self.edit_model,
            )
            self._spending = Spending().resolve(settings)
            self._client = FluxClient(settings=settings, **self._spending)
        client = self._client
        shared: dict[str, Any] = {
            "api_token": client.settings.api_token,
            "base_url": client.base_url,
            "output_dir": self.output_dir,
            "image_dirs": self.image_dirs,
            "timeout": self.timeout,
            "include_image_blocks": self.include_image_blocks,
            "client": client,
        }
        tools: list[_FluxTool] = [
            FluxImageTool(model=client.model, **shared),
            FluxImageEditTool(model=client.edit_model, **shared),
        ]
        for tool in tools:  # one account for both tools, sync and async
            tool._spending = self._spending
        return list(tools)

    def close(self) -> None:
        """Close the client shared by the tools (get_tools() afterwards builds a new one)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> FluxToolkit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Shared:
    """An async client and the number of calls using it."""

    def __init__(self, client: AsyncFluxClient) -> None:
        self.client = client
        self.users = 0


def _progress_event(progress: Progress, prediction: Prediction) -> dict[str, Any] | None:
    """The :data:`PROGRESS_EVENT` data for a status change; None for a poll with no change."""
    update = progress.update(prediction)
    if not update.changed:
        return None
    return {
        "prediction_id": update.prediction_id,
        "status": update.status,
        "elapsed": update.elapsed,
        "message": update.message,
    }


def _with_prompt(args: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    # A plain-string input (tool.invoke("a red fox"), older agents) is the prompt.
    if args:
        return {"prompt": args[0], **fields}
    return fields


def _os_error_text(exc: OSError) -> str:
    """An OS error without the kilobytes a file name may hold (a base64 string, say)."""
    reason = exc.strerror or type(exc).__name__
    if exc.filename is not None:
        return f"{reason}: {safe_text(str(exc.filename), 120)}"
    return safe_text(str(exc) or reason, _MAX_ERROR_TEXT)


def _image_content(url: str) -> dict[str, Any] | None:
    """A standard image content block for ``url``: an http(s) URL, or an inline ``data:``
    image as base64. Anything else (another scheme, a non-image data URI) gets no block: a
    provider could not fetch it; the text still names it."""
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        mime_type = header[5:].split(";", 1)[0].lower()
        if not sep or not header.endswith(";base64") or not mime_type.startswith("image/"):
            return None
        return dict(create_image_block(base64=data, mime_type=mime_type))
    if url.lower().startswith(("https://", "http://")):
        return dict(create_image_block(url=url))
    return None
