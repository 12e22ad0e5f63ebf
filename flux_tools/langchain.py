"""``FluxImageTool``: FLUX image generation as a LangChain tool.

    from flux_tools.langchain import FluxImageTool

    tool = FluxImageTool(output_dir="images")  # token: FLUX_API_TOKEN or REPLICATE_API_TOKEN
    model_with_tools = chat_model.bind_tools([tool])
    message = tool.invoke(ai_message.tool_calls[0])  # ToolMessage: text + result artifact

The arguments are :class:`~flux_tools.FluxProInput` itself (the model's registry entry), so the
schema a chat model sees is the one the client validates with. ``_run`` drives a
:class:`~flux_tools.FluxClient` and ``_arun`` an :class:`~flux_tools.AsyncFluxClient`: concurrent
async calls share one connection pool and no thread. Needs the ``langchain`` extra.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.tools import BaseTool, BaseToolkit, ToolException
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

from ._client import (
    AsyncFluxClient,
    FluxClient,
    resolve_base_url,
    resolve_edit_model,
    resolve_model,
    resolve_token,
)
from ._downloads import DownloadError
from ._exceptions import (
    TOKEN_ENV_VARS,
    AuthenticationError,
    ContentModerated,
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    PredictionFailed,
    PredictionTimeout,
    RateLimitError,
    redact,
)
from ._prediction import GenerationResult, Prediction
from ._registry import MODELS, edit_arguments, edit_spec, model_spec

_image_block: Callable[..., Mapping[str, Any]] | None
try:  # langchain-core >= 1.0: standard content blocks
    from langchain_core.messages.content import create_image_block as _image_block
except ImportError:  # pragma: no cover - langchain-core 0.3
    _image_block = None

__all__ = [
    "PROGRESS_EVENT",
    "FluxImageEditTool",
    "FluxImageTool",
    "FluxToolkit",
    "validation_error_text",
]

#: Name of the custom callback event sent on each status change while a generation runs.
#: Its data: ``{"prediction_id": str, "status": str, "elapsed": float}`` (seconds).
PROGRESS_EVENT = "flux_progress"

ToolContent = str | list[str | dict[str, Any]]

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
# Clients built lazily by tools in worker threads (``batch``) must not be built twice.
_CLIENT_LOCK = threading.Lock()


def _token_from_env() -> SecretStr | None:
    token = resolve_token(None)
    return SecretStr(token) if token else None


def validation_error_text(error: Exception) -> str:
    """The default ``handle_validation_error``: which field is wrong and what it allows.

    Uses the client's own summary (:meth:`FluxInputError.from_validation_error`), so a chat
    model reads the same guidance as a Python caller, instead of "Tool input validation error".
    """
    if not isinstance(error, ValidationError):  # a pydantic.v1 error from a custom schema
        return f"Invalid arguments; nothing was sent: {error}. Fix them and call the tool again."
    input_model = _INPUT_MODELS.get(error.title)
    schema = input_model.model_json_schema() if input_model else {}
    summary = FluxInputError.from_validation_error(error, schema).message
    return f"{summary}\nFix these arguments and call the tool again."


class _FluxTool(BaseTool):
    """What the generate and edit tools share: configuration, clients, output, errors.

    ``response_format="content_and_artifact"``: the content is text for the chat model (URLs,
    saved paths, seed; image blocks too with ``include_image_blocks=True``); the artifact is
    :meth:`GenerationResult.summary` (urls, prediction_id, model, seed, timings, input, files).
    Errors come back as a ``ToolMessage`` with ``status="error"`` and a text saying what to
    change; status changes are sent to callbacks as the custom event :data:`PROGRESS_EVENT`.

    Clients built by the tool are reused across calls; call :meth:`close` / :meth:`aclose` when
    done, or inject your own ``client`` / ``async_client`` (their base URL and model then apply).
    """

    # A misspelt option is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    # Derived, never retyped: from the registry's input model of ``model`` (set in _configure).
    args_schema: Annotated[Any, SkipValidation()] = None
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: Any = True
    handle_validation_error: Any = validation_error_text

    api_token: SecretStr | None = Field(default_factory=_token_from_env)
    """API token; defaults to ``FLUX_API_TOKEN``, else ``REPLICATE_API_TOKEN``."""
    base_url: str | None = None
    """API base URL; defaults to ``FLUX_BASE_URL``, ``REPLICATE_BASE_URL``, else Replicate's."""
    model: str | None = None
    """``owner/name`` of the model; defaults to ``FLUX_MODEL``, else flux-pro."""
    output_dir: Path | None = None
    """Download each image here as soon as it is ready: provider URLs expire within the hour.
    Images in it may also be given as inputs (by path or prediction id)."""
    image_dirs: list[Path] = Field(default_factory=list)
    """Further folders from which local images may be read as inputs (plus ``FLUX_IMAGE_DIRS``).
    A path outside them is refused without being opened."""
    timeout: float | None = Field(default=None, gt=0)
    """Deadline of one generation in seconds (default: the client's, 300). Past it the
    prediction is canceled upstream and the tool answers with an error naming its id."""
    include_image_blocks: bool = False
    """Add image content blocks after the text. Off by default: OpenAI chat models accept only
    text in tool messages; Anthropic and Gemini models can look at the image."""
    # Injected clients serve invoke (client) and ainvoke (async_client); a path without one
    # gets a client built from the fields above.
    client: FluxClient | None = Field(default=None, exclude=True, repr=False)
    async_client: AsyncFluxClient | None = Field(default=None, exclude=True, repr=False)

    _client: FluxClient | None = PrivateAttr(default=None)
    _aclient: AsyncFluxClient | None = PrivateAttr(default=None)
    _aclient_loop: asyncio.AbstractEventLoop | None = PrivateAttr(default=None)

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
        if self.base_url is None:
            self.base_url = injected.base_url if injected else resolve_base_url(None)
        else:
            self.base_url = resolve_base_url(self.base_url)
        self.model = self._default_model(injected)
        if "args_schema" not in self.model_fields_set:
            self.args_schema = self._arguments()
        return self

    # -- what differs between the generate and edit tools ----------------------------------

    def _default_model(self, injected: FluxClient | AsyncFluxClient | None) -> str:
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
    ) -> tuple[ToolContent, dict[str, Any]]:
        fields = _with_prompt(args, fields)
        progress = _Progress()
        events = run_manager.get_child() if run_manager else None

        def on_progress(prediction: Prediction) -> None:
            data = progress.change(prediction)
            if data and events is not None and run_manager is not None:
                events.on_custom_event(PROGRESS_EVENT, data, run_id=run_manager.run_id)

        method, arguments = self._call(fields)
        try:
            result = getattr(self._sync_client(), method)(
                timeout=self.timeout,
                on_progress=on_progress,
                image_dirs=self._image_dirs(),
                **arguments,
            )
        except FluxError as exc:
            raise self._tool_exception(exc) from exc
        save_error = None
        if self.output_dir is not None:
            try:
                result.save(self.output_dir)
            except DownloadError as exc:
                save_error = str(exc)
        return self._output(result, save_error)

    async def _arun(
        self,
        *args: str,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **fields: Any,
    ) -> tuple[ToolContent, dict[str, Any]]:
        fields = _with_prompt(args, fields)
        progress = _Progress()
        events = run_manager.get_child() if run_manager else None

        async def on_progress(prediction: Prediction) -> None:
            data = progress.change(prediction)
            if data and events is not None and run_manager is not None:
                await events.on_custom_event(PROGRESS_EVENT, data, run_id=run_manager.run_id)

        method, arguments = self._call(fields)
        try:
            result = await getattr(self._async_client(), method)(
                timeout=self.timeout,
                on_progress=on_progress,
                image_dirs=self._image_dirs(),
                **arguments,
            )
        except FluxError as exc:
            raise self._tool_exception(exc) from exc
        save_error = None
        if self.output_dir is not None:
            try:
                await result.asave(self.output_dir)
            except DownloadError as exc:
                save_error = str(exc)
        return self._output(result, save_error)

    def _image_dirs(self) -> list[Path]:
        return [*([self.output_dir] if self.output_dir else []), *self.image_dirs]

    # -- clients ----------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        token = self.api_token.get_secret_value() if self.api_token else None
        return {"api_token": token, "base_url": self.base_url, "model": self.model}

    def _sync_client(self) -> FluxClient:
        if self.client is not None:
            return self.client
        with _CLIENT_LOCK:
            if self._client is None:
                self._client = FluxClient(**self._client_options())
            return self._client

    def _async_client(self) -> AsyncFluxClient:
        if self.async_client is not None:
            return self.async_client
        # Pooled connections belong to the event loop that opened them: one client per loop
        # (a script calling asyncio.run() twice gets a fresh one instead of dead sockets).
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is not loop:
            self._aclient = AsyncFluxClient(**self._client_options())
            self._aclient_loop = loop
        return self._aclient

    def close(self) -> None:
        """Close the blocking client this tool built (an injected one is left to its owner)."""
        with _CLIENT_LOCK:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the clients this tool built (injected ones are left to their owner)."""
        client, loop = self._aclient, self._aclient_loop
        self._aclient = self._aclient_loop = None
        # A client of a finished loop cannot be closed from another one: its sockets went
        # with that loop.
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
        self.close()

    # -- what the chat model reads ----------------------------------------------------------

    def _output(
        self, result: GenerationResult, save_error: str | None
    ) -> tuple[ToolContent, dict[str, Any]]:
        artifact = result.summary()
        if save_error is not None:
            artifact["save_error"] = save_error
        text = self._result_text(result, save_error)
        if not self.include_image_blocks:
            return text, artifact
        blocks: list[str | dict[str, Any]] = [{"type": "text", "text": text}]
        blocks.extend(_image_content(url) for url in result.urls)
        return blocks, artifact

    def _result_text(self, result: GenerationResult, save_error: str | None) -> str:
        count = len(result.urls)
        seed = "unknown" if result.seed is None else str(result.seed)
        lines = [
            f"Generated {count} image{'s' if count != 1 else ''} with {result.model} "
            f"(prediction {result.prediction_id}, seed {seed})."
        ]
        for index, url in enumerate(result.urls, 1):
            label = "URL" if count == 1 else f"URL {index}"
            lines.append(f"{label}: {_describe_url(url)}")
        if result.files:
            lines.append("Saved to: " + ", ".join(str(path) for path in result.files))
        if save_error:
            lines.append(f"Saving the image failed: {save_error}")
        lines.append(
            "The URL is temporary (the provider deletes it after about an hour): give it to the "
            + (
                "user now, or point to the saved file, which stays."
                if result.files
                else "user now."
            )
        )
        if result.seed is not None:
            lines.append(
                f"To reproduce or vary this image, call {self.name} again with the same prompt "
                f"and seed {result.seed}."
            )
        return "\n".join(lines)

    def _tool_exception(self, exc: FluxError) -> ToolException:
        """The error as a chat model can act on it: what happened and what to change."""
        text = f"No image was generated. {exc}"
        advice = _advice(exc, self.name)
        if advice:
            text += f"\n{advice}"
        secret = self.api_token.get_secret_value() if self.api_token else None
        return ToolException(redact(text, [secret]))


class FluxImageTool(_FluxTool):
    """``generate_image``: text-to-image with FLUX from any LangChain agent or pipeline.

    Its arguments are the input model of ``model`` (``FLUX_MODEL``, else flux-pro) itself.
    """

    name: str = "generate_image"
    description: str = DESCRIPTION

    def _default_model(self, injected: FluxClient | AsyncFluxClient | None) -> str:
        return resolve_model(self.model or (injected.model if injected else None))

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

    def _default_model(self, injected: FluxClient | AsyncFluxClient | None) -> str:
        return resolve_edit_model(self.model or (injected.edit_model if injected else None))

    def _arguments(self) -> type[BaseModel] | None:
        return edit_arguments(edit_spec(str(self.model)))

    def _call(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        spec = edit_spec(str(self.model))
        assert spec.edit_field is not None
        rest = dict(fields)
        image, prompt = rest.pop(spec.edit_field), rest.pop("prompt")
        return "edit", {"image": image, "prompt": prompt, "model": self.model, **rest}


class FluxToolkit(BaseToolkit):
    """``generate_image`` and ``edit_image`` with one shared client (one connection pool).

    The same configuration as the tools; ``model`` and ``edit_model`` pick each tool's model
    (and so its schema).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    api_token: SecretStr | None = Field(default_factory=_token_from_env)
    base_url: str | None = None
    model: str | None = None
    edit_model: str | None = None
    output_dir: Path | None = None
    image_dirs: list[Path] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0)
    include_image_blocks: bool = False

    def get_tools(self) -> list[BaseTool]:
        token = self.api_token.get_secret_value() if self.api_token else None
        options: dict[str, Any] = {
            "api_token": token,
            "base_url": self.base_url,
            "model": self.model,
            "edit_model": self.edit_model,
        }
        client, async_client = FluxClient(**options), AsyncFluxClient(**options)
        shared: dict[str, Any] = {
            "api_token": self.api_token,
            "base_url": client.base_url,
            "output_dir": self.output_dir,
            "image_dirs": self.image_dirs,
            "timeout": self.timeout,
            "include_image_blocks": self.include_image_blocks,
            "client": client,
            "async_client": async_client,
        }
        return [
            FluxImageTool(model=client.model, **shared),
            FluxImageEditTool(model=client.edit_model, **shared),
        ]


def _advice(exc: FluxError, tool: str) -> str:
    """What the chat model can do next, where the core message does not already say it."""
    if isinstance(exc, FluxInputError):
        return f"Fix these arguments and call {tool} again."
    if isinstance(exc, ContentModerated):
        return ""  # the core message already says to change the prompt
    if isinstance(exc, PredictionFailed):
        if exc.status == "failed":
            return f"It may be temporary: call {tool} once more; if it fails again, tell the user."
        return "" if exc.status == "aborted" else "Do not retry unless the user asks."
    if isinstance(exc, PredictionTimeout):
        return (
            f"Give the user the prediction id {exc.prediction_id} to check it later, or call "
            f"{tool} again with fewer steps for a faster image."
        )
    if isinstance(exc, AuthenticationError):
        return "This is a configuration problem that retrying will not fix: tell the user."
    if isinstance(exc, RateLimitError):
        wait = f" about {exc.retry_after:.0f} s" if exc.retry_after else " a minute"
        return f"Wait{wait} before calling {tool} again."
    if isinstance(exc, FluxAPIError):
        if exc.status in (400, 422):
            return f"Fix the arguments named above and call {tool} again."
        return f"The image service had a problem: call {tool} again later, or tell the user."
    if isinstance(exc, FluxConnectionError):
        if exc.maybe_created:
            return f"Do not call {tool} again now: tell the user an image may have been billed."
        return f"Call {tool} again later, or tell the user the image service is unreachable."
    return ""


class _Progress:
    """Turns the states seen while waiting into one event per status change."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._last: tuple[str, str] | None = None

    def change(self, prediction: Prediction) -> dict[str, Any] | None:
        key = (prediction.id, prediction.status)
        if key == self._last:
            return None
        self._last = key
        return {
            "prediction_id": prediction.id,
            "status": prediction.status,
            "elapsed": round(time.monotonic() - self._started, 3),
        }


def _with_prompt(args: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    # A plain-string input (tool.invoke("a red fox"), older agents) is the prompt.
    if args:
        return {"prompt": args[0], **fields}
    return fields


def _describe_url(url: str) -> str:
    if not url.startswith("data:"):
        return url
    # An inline image would flood the model's context: name it instead.
    media_type = url[5:].split(";", 1)[0].split(",", 1)[0] or "image"
    kilobytes = len(url) * 3 // 4 // 1024
    return f"(inline {media_type} data, about {kilobytes} KB, not shown)"


def _image_content(url: str) -> dict[str, Any]:
    """An image content block for ``url`` (an ``https:`` URL or a ``data:`` URI)."""
    base64_data = mime_type = None
    if url.startswith("data:") and ";base64," in url[:100]:
        header, base64_data = url.split(",", 1)
        mime_type = header[5:].split(";", 1)[0] or None
    if _image_block is not None:
        if base64_data is not None:
            return dict(_image_block(base64=base64_data, mime_type=mime_type or "image/png"))
        return dict(_image_block(url=url))
    if base64_data is not None:  # pragma: no cover - langchain-core 0.3
        return {
            "type": "image",
            "source_type": "base64",
            "data": base64_data,
            "mime_type": mime_type,
        }
    return {"type": "image", "source_type": "url", "url": url}  # pragma: no cover
