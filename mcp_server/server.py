"""The tools: generate_image, edit_image, get_prediction, cancel_prediction, list_models; and
the image resources.

Every call answers within the wait budget (Claude Desktop drops a call after about 60 s): a
prediction still running then is handed back with its id, to resume with ``get_prediction``.
Failures come back as error results whose text says what to change; the server keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flux_tools import (
    AsyncFluxClient,
    FluxError,
    FluxInputError,
    Prediction,
    PredictionTimeout,
    Timings,
    __version__,
)
from flux_tools._downloads import DownloadError
from flux_tools._exceptions import TOKEN_ENV_VARS
from flux_tools._inputs import IMAGE_URI_PREFIXES, FluxInput
from flux_tools._registry import ModelSpec, edit_arguments, edit_spec, known_model, model_spec

from . import _sdk
from .catalog import ListModelsInput, ModelList, models_result
from .config import Config
from .results import (
    Finished,
    ImageResult,
    finished_result,
    pending_result,
    state_result,
)
from .roots import root_folders
from .store import SERVED_FORMATS, URI_PREFIX, ImageStore

logger = logging.getLogger("mcp_server")

NO_TOKEN = (
    "No API token: set "
    + " (or ".join(TOKEN_ENV_VARS)
    + ") in the env block of this server's configuration in your MCP client (e.g. "
    '"env": {"FLUX_API_TOKEN": "r8_..."} in claude_desktop_config.json, or '
    "`claude mcp add flux -e FLUX_API_TOKEN=r8_... -- flux-mcp` for Claude Code), then "
    "restart the server. Get a token at https://replicate.com/account/api-tokens."
)
#: How long a create request may run on after the caller went away, so that its id comes back
#: and the prediction can be canceled rather than left billing.
CREATE_SHIELD_SECONDS = 30.0


class PredictionRef(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, title="PredictionRef")

    prediction_id: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="The prediction_id returned by generate_image or edit_image.",
    )


class GetPredictionInput(PredictionRef):
    model_config = ConfigDict(title="GetPredictionInput")

    wait: bool = Field(
        default=True,
        description="Wait (within this server's wait budget) for the prediction to finish. "
        "false: return its current state at once.",
    )


def display_name(model: str) -> str:
    """``black-forest-labs/flux-1.1-pro`` -> ``FLUX 1.1 Pro``: for progress messages."""
    words = model.rsplit("/", 1)[-1].split("-")
    if words[0].lower() == "flux":
        return " ".join(["FLUX", *(w.capitalize() if w.isalpha() else w for w in words[1:])])
    return model


class Progress:
    """Progress notifications a person can read: ``FLUX Pro: processing, 4 s elapsed``."""

    def __init__(self, report: _sdk.Reporter, label: str, started: float) -> None:
        self._report, self._label, self._started = report, label, started
        self._last = 0.0

    async def say(self, state: str) -> None:
        elapsed = time.monotonic() - self._started
        # The protocol wants a strictly increasing value; seconds elapsed are, near enough.
        self._last = max(round(elapsed, 2), self._last + 0.01)
        message = f"{self._label}: {state}, {elapsed:.0f} s elapsed"
        try:
            await self._report(self._last, message)
        except Exception as exc:  # a client gone or confused must not fail the generation
            logger.debug("progress notification not sent: %r", exc)

    async def prediction(self, prediction: Prediction) -> None:
        await self.say(prediction.status)


class FluxTools:
    """The tool handlers, sharing one client (and its connection pool) for the process."""

    def __init__(self, config: Config, client: AsyncFluxClient) -> None:
        # load_config refuses unknown models and edit models that cannot edit.
        self.config = config
        self.client = client
        self.spec: ModelSpec = known_model(config.model)
        self.edit_spec: ModelSpec = edit_spec(config.edit_model)
        self.input_model: type[FluxInput] = self.spec.input_model
        self.edit_model: type[FluxInput] = edit_arguments(self.edit_spec)
        self.edit_field: str = self.edit_spec.edit_field or ""
        self.store = ImageStore(config.output_dir)

    # -- the tools --------------------------------------------------------------------------

    async def generate_image(
        self, call: _sdk.CallContext, arguments: dict[str, Any]
    ) -> _sdk.CallToolResult:
        return await self._run(call, arguments, self.spec, self.input_model, "generate_image")

    async def edit_image(
        self, call: _sdk.CallContext, arguments: dict[str, Any]
    ) -> _sdk.CallToolResult:
        return await self._run(call, arguments, self.edit_spec, self.edit_model, "edit_image")

    async def list_models(
        self, call: _sdk.CallContext, arguments: dict[str, Any]
    ) -> _sdk.CallToolResult:
        self._validate(ListModelsInput, arguments, "list_models")
        return models_result(self.config.model, self.config.edit_model)

    async def get_prediction(
        self, call: _sdk.CallContext, arguments: dict[str, Any]
    ) -> _sdk.CallToolResult:
        started = time.monotonic()
        self._require_token()
        ref = self._validate(GetPredictionInput, arguments, "get_prediction")
        saved = self.store.saved(ref.prediction_id)
        if saved:  # finished and downloaded earlier: no need to ask the API (or pay twice)
            return await finished_result(self._from_sidecars(saved), preview_side=self._side)
        prediction = await self.client.get(ref.prediction_id)
        label = display_name(prediction.model or self.config.model)
        progress = Progress(call.report, label, started)
        return await self._follow(prediction, progress, started, budget=None if ref.wait else 0.0)

    async def cancel_prediction(
        self, call: _sdk.CallContext, arguments: dict[str, Any]
    ) -> _sdk.CallToolResult:
        self._require_token()
        ref = self._validate(PredictionRef, arguments, "cancel_prediction")
        prediction = await self.client.cancel(ref.prediction_id)
        status = prediction.status
        if status == "canceled":
            text = f"Prediction {prediction.id} is canceled."
        elif status in ("succeeded", "failed", "aborted"):
            text = (
                f"Prediction {prediction.id} had already ended ({status}); nothing was canceled."
                + (" Call get_prediction to get its image." if status == "succeeded" else "")
            )
        else:
            text = f"Cancel requested for prediction {prediction.id} (status now: {status})."
        return state_result(
            prediction_id=prediction.id,
            model=prediction.model or self.config.model,
            status=status,
            text=text,
        )

    # -- steps ------------------------------------------------------------------------------

    async def _run(
        self,
        call: _sdk.CallContext,
        arguments: dict[str, Any],
        spec: ModelSpec,
        input_model: type[FluxInput],
        tool: str,
    ) -> _sdk.CallToolResult:
        """Validate, resolve the image inputs, create, then follow within the wait budget."""
        started = time.monotonic()
        self._require_token()
        payload = self._validate(input_model, arguments, tool, model_name=spec.name)
        progress = Progress(call.report, display_name(spec.name), started)
        image_dirs = await self._image_dirs(call, payload)
        await progress.say("sending the request")
        prediction = await self._create(payload, spec.name, image_dirs)
        logger.info("prediction %s created (%s)", prediction.id, prediction.status)
        return await self._follow(prediction, progress, started, sources=_image_inputs(payload))

    async def _image_dirs(self, call: _sdk.CallContext, payload: FluxInput) -> list[Path]:
        """The client's roots, when an image input is a local path or a prediction id.

        The output folder and FLUX_IMAGE_DIRS are the client's own folders; the roots are
        asked for on each such call (they change as the user opens folders). A client without
        roots, or one that fails to answer, leaves just those.
        """
        sources = [getattr(payload, name) for name in type(payload).image_fields]
        if not any(s and not s.startswith(IMAGE_URI_PREFIXES) for s in sources):
            return []
        try:
            uris = await call.roots()
        except _sdk.NoRoots as exc:
            logger.debug("no roots: %s", exc)
            return []
        except Exception as exc:  # a client that cannot answer: go on with the other folders
            logger.info("could not get the client's roots (%r); using the other folders", exc)
            return []
        folders = root_folders(uris)
        logger.debug("client roots: %s", ", ".join(map(str, folders)) or "none local")
        return folders

    @property
    def _side(self) -> int:
        return self.config.preview_side

    def _require_token(self) -> None:
        if not self.config.has_token:
            raise _sdk.ToolError(NO_TOKEN)

    def _validate(
        self,
        model: type[Any],
        arguments: dict[str, Any],
        tool: str,
        *,
        model_name: str | None = None,
    ) -> Any:
        # A null is how many clients say "not given": let the declared default apply.
        data = {key: value for key, value in arguments.items() if value is not None}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            error = FluxInputError.from_validation_error(
                exc, model.model_json_schema(), model=model_name
            )
            raise _sdk.ToolError(
                f"{error.message}\nFix the arguments named above and call {tool} again."
            ) from None

    async def _create(self, payload: FluxInput, model: str, image_dirs: list[Path]) -> Prediction:
        """Create the prediction; if the call is canceled meanwhile, cancel it upstream too.

        Local image inputs are read (within the allowed folders) as part of the create.
        """
        created: Prediction | None = None
        # Shielded: a create cut off halfway leaves a billing prediction whose id we never saw.
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + CREATE_SHIELD_SECONDS
            created = await self.client.create(
                payload,
                model=model,
                cancel_after=self.config.cancel_after,
                image_dirs=image_dirs,
            )
        if created is None or scope.cancelled_caught:
            raise FluxError(
                f"The API did not answer the create request within {CREATE_SHIELD_SECONDS:g} s. "
                "A prediction may have been created: check your recent predictions before "
                "trying again."
            )
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._cancel_quietly(created.id)
            raise
        return created

    async def _cancel_quietly(self, prediction_id: str) -> None:
        try:
            await self.client.cancel(prediction_id)
            logger.info("prediction %s canceled upstream (the call was canceled)", prediction_id)
        except FluxError as exc:
            logger.warning("could not cancel prediction %s: %s", prediction_id, exc)

    async def _follow(
        self,
        prediction: Prediction,
        progress: Progress,
        started: float,
        budget: float | None = None,
        sources: dict[str, str] | None = None,
    ) -> _sdk.CallToolResult:
        """Wait within the budget, then save and return the images, or say how to resume."""
        budget = self.config.wait_seconds if budget is None else budget
        remaining = budget - (time.monotonic() - started)
        try:
            # Returns at once when the prediction is already done. If this task is canceled
            # (the MCP request was), the client cancels the prediction upstream.
            prediction = await self.client.wait(
                prediction,
                timeout=max(0.0, remaining),
                cancel_on_timeout=False,
                on_progress=progress.prediction,
            )
        except PredictionTimeout as exc:
            last = exc.prediction or prediction
            logger.info("prediction %s still %s at the wait budget", last.id, last.status)
            return self._pending(last, time.monotonic() - started)
        result = self.client.result(prediction)  # raises PredictionFailed / ContentModerated
        await progress.say(f"{prediction.status}, saving the image")
        try:
            files = await result.asave(self.config.output_dir)
            self.store.write_sidecars(result, files, sources=sources)
        except (DownloadError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _sdk.ToolError(
                f"Prediction {result.prediction_id} succeeded, but the image could not be saved "
                f"to {self.config.output_dir}: {reason}. Its URL (valid for about an hour): "
                f"{', '.join(u for u in result.urls if not u.startswith('data:')) or 'inline'}. "
                "Check FLUX_OUTPUT_DIR in the server's env block, then call get_prediction to "
                "save it again."
            ) from None
        logger.info("prediction %s saved to %s", result.prediction_id, ", ".join(map(str, files)))
        done = Finished(
            prediction_id=result.prediction_id,
            model=result.model,
            urls=result.urls,
            files=files,
            seed=result.seed,
            timings=result.timings,
            prompt=_prompt(result.input),
            edited=_edited(result.model, result.input),
        )
        done.follow_up = self._edit_hint(done)
        return await finished_result(done, preview_side=self._side)

    def _edit_hint(self, done: Finished) -> str:
        """How to go on editing this result: the chained edits of a working session."""
        field, pid = self.edit_field, done.prediction_id
        if len(done.files) == 1:
            return (
                f"To edit this image further, call edit_image with {field} set to "
                f"'{pid}' (its prediction id) or to its saved path."
            )
        return (
            f"To edit one of these images, call edit_image with {field} set to its saved path "
            f"(the prediction id '{pid}' picks the first)."
        )

    def _pending(self, prediction: Prediction, waited: float) -> _sdk.CallToolResult:
        return pending_result(
            prediction_id=prediction.id,
            model=prediction.model or self.config.model,
            status=prediction.status,
            waited=waited,
            budget=self.config.wait_seconds,
            cancel_after=self.config.cancel_after,
        )

    def _from_sidecars(self, files: list[Any]) -> Finished:
        meta = self.store.read_sidecar(files[0])
        model = str(meta.get("model") or self.config.model)
        done = Finished(
            prediction_id=str(meta.get("prediction_id") or files[0].stem),
            model=model,
            urls=[u for u in meta.get("urls") or [] if isinstance(u, str)],
            files=files,
            seed=meta.get("seed") if isinstance(meta.get("seed"), int) else None,
            timings=_timings(meta.get("timings")),
            prompt=_prompt(meta.get("input") or {}),
            edited=_edited(model, meta.get("input")),
        )
        done.follow_up = self._edit_hint(done)
        return done

    async def read_image(self, stem: str, extension: str) -> bytes:
        path = self.store.path_of(stem, extension)
        if path is None:
            raise _sdk.ResourceError(
                f"No saved image {URI_PREFIX}{stem}.{extension} in {self.store.directory}."
            )
        return await anyio.Path(path).read_bytes()


def _timings(data: Any) -> Timings:
    try:
        return Timings.model_validate(data or {})
    except ValidationError:  # a sidecar edited by hand: the image still counts
        return Timings()


def _prompt(data: Any) -> str | None:
    prompt = data.get("prompt") if isinstance(data, dict) else None
    return prompt if isinstance(prompt, str) else None


def _edited(model: str, data: Any) -> bool:
    """Whether the prediction's input held an image to edit (its model's edit field)."""
    try:
        spec = model_spec(model)
    except ValueError:
        return False
    field = spec.edit_field if spec else None
    return bool(field and isinstance(data, dict) and data.get(field))


def _image_inputs(payload: FluxInput) -> dict[str, str]:
    """The image inputs as the caller gave them (path, prediction id, URL): provenance.

    Inline data is left out: it can be megabytes, and the saved image's sidecar is for reading.
    """
    given = {name: getattr(payload, name) for name in type(payload).image_fields}
    return {name: v for name, v in given.items() if v and not v.startswith("data:")}


def image_advice(error: FluxInputError, config: Config) -> str:
    """What to do when a local image input is refused."""
    if "-byte limit" in str(error):
        return (
            f"Local images are sent only up to {config.max_image_bytes} bytes: pass a smaller "
            "file or an https URL, or ask the user to raise FLUX_MCP_MAX_IMAGE_BYTES in this "
            "server's env block (then restart it)."
        )
    return (
        "This server reads local images only from its output folder "
        f"({config.output_dir}), the folders in FLUX_IMAGE_DIRS, and the folders (roots) the "
        "MCP client shares. Pass an https URL or a data: URI instead, or the prediction id of "
        "an earlier result, or ask the user to add the file's folder to FLUX_IMAGE_DIRS in "
        "this server's env block (then restart it)."
    )


def guarded(
    handler: _sdk.ToolHandler, tool: str, image_fields: tuple[str, ...], config: Config
) -> _sdk.ToolHandler:
    """Turn every failure into an error result with a message to act on; never crash a call."""

    async def call(context: _sdk.CallContext, arguments: dict[str, Any]) -> _sdk.CallToolResult:
        try:
            return await handler(context, arguments)
        except _sdk.ToolError:
            raise
        except DownloadError as exc:
            raise _sdk.ToolError(f"The image was generated but could not be saved: {exc}") from None
        except FluxInputError as exc:  # found before anything was sent: nothing billed
            advice = f"Fix the arguments named above and call {tool} again."
            if set(exc.fields) & set(image_fields):
                advice += " " + image_advice(exc, config)
            raise _sdk.ToolError(f"{exc}\n{advice}") from None
        except FluxError as exc:
            pid = getattr(exc, "prediction_id", None)
            where = f" (prediction {pid})" if pid and pid not in str(exc) else ""
            raise _sdk.ToolError(f"{exc}{where}") from None
        except OSError as exc:
            raise _sdk.ToolError(
                f"Cannot write to the output folder: {exc.strerror or exc}. Set FLUX_OUTPUT_DIR "
                "in the server's env block to a folder you can write to."
            ) from None
        except Exception:
            logger.exception("unexpected error in a tool call")
            raise _sdk.ToolError(
                "Internal error in the FLUX MCP server (details in its log); the call did nothing "
                "else. Try again; if it persists, report it."
            ) from None

    return call


def build_server(
    config: Config, client: AsyncFluxClient, http: _sdk.HTTPOptions | None = None
) -> _sdk.SDKServer:
    tools = FluxTools(config, client)
    budget = f"{config.wait_seconds:g}"
    spec, editor, field = tools.spec, tools.edit_spec, tools.edit_field
    folders = ", ".join(str(d) for d in (config.output_dir, *config.image_dirs))

    def handler(method: _sdk.ToolHandler, name: str, model: type[FluxInput] | None) -> Any:
        fields = model.image_fields if model is not None else ()
        return guarded(method, name, fields, config)

    returns = (
        f"Waits up to {budget} s, saves the image to {config.output_dir} and returns its path, "
        "its URL, a resource link and a small preview. If the result's status is starting or "
        "processing, the image is not ready yet: call get_prediction with the prediction_id. "
        "Each call is a paid generation."
    )
    generate = _sdk.ToolSpec(
        name="generate_image",
        title="Generate image (FLUX)",
        description=(
            f"Generate an image from a text prompt with {spec.name} ({spec.title}: "
            f"{spec.strengths}) {returns} To change an image afterwards, use edit_image; "
            "list_models tells which models this server can be set up with."
        ),
        input_schema=tools.input_model.model_json_schema(),
        output_model=ImageResult,
        handler=handler(tools.generate_image, "generate_image", tools.input_model),
        read_only=False,
        destructive=False,
        idempotent=False,
        open_world=True,
    )
    edit = _sdk.ToolSpec(
        name="edit_image",
        title="Edit image (FLUX)",
        description=(
            "Edit an existing image as an instruction says ('make the car gold', 'replace the "
            "sky with a sunset', 'turn it into a watercolor'), keeping the rest, with "
            f"{editor.name} ({editor.title}). {field} is the image: an https URL, a data: URI, "
            f"the path of a local image file in {folders} or a folder the client shares "
            "(roots), or the prediction id of an earlier result. To edit the image you just "
            f"generated or edited, pass its prediction_id (or its saved path) as {field}. "
            "Images the user uploaded in the chat cannot be read by this server unless given "
            "as a URL or a data: URI: otherwise ask for a link or the file's path. "
            f"{returns}"
        ),
        input_schema=tools.edit_model.model_json_schema(),
        output_model=ImageResult,
        handler=handler(tools.edit_image, "edit_image", tools.edit_model),
        read_only=False,
        destructive=False,
        idempotent=False,
        open_world=True,
    )
    get = _sdk.ToolSpec(
        name="get_prediction",
        title="Get prediction (FLUX)",
        description=(
            "The state of a prediction made by generate_image or edit_image. If it is still "
            f"running, waits up to {budget} s for it; once it has succeeded, returns the same "
            "result as those tools (saving the image if not done yet). Use it to resume when "
            "they answered with status starting or processing."
        ),
        input_schema=GetPredictionInput.model_json_schema(),
        output_model=ImageResult,
        handler=handler(tools.get_prediction, "get_prediction", None),
        read_only=True,
        idempotent=True,
        open_world=True,
    )
    cancel = _sdk.ToolSpec(
        name="cancel_prediction",
        title="Cancel prediction (FLUX)",
        description="Cancel a running prediction so that it stops (and stops billing).",
        input_schema=PredictionRef.model_json_schema(),
        output_model=ImageResult,
        handler=handler(tools.cancel_prediction, "cancel_prediction", None),
        read_only=False,
        destructive=True,
        idempotent=True,
        open_world=True,
    )
    models = _sdk.ToolSpec(
        name="list_models",
        title="List FLUX models",
        description=(
            "The FLUX models this server can use, with what each is good at, its rough price, "
            "whether it edits images and its parameters; and which model generate_image and "
            "edit_image run now. Models are switched in the server's configuration "
            "(FLUX_MODEL, FLUX_EDIT_MODEL), not per call. Free: no generation."
        ),
        input_schema=ListModelsInput.model_json_schema(),
        output_model=ModelList,
        handler=handler(tools.list_models, "list_models", None),
        read_only=True,
        destructive=False,
        idempotent=True,
        open_world=False,
    )
    templates = [
        _sdk.TemplateSpec(
            uri_template=f"{URI_PREFIX}{{{_sdk.TEMPLATE_VARIABLE}}}.{extension}",
            name=f"flux-image-{extension}",
            description=f"A {extension} image saved by this server (full size).",
            mime_type=mime,
            reader=_reader(tools, extension),
        )
        for extension, mime in SERVED_FORMATS.items()
    ]
    return _sdk.SDKServer(
        name="flux",
        title="FLUX image generation",
        version=__version__,
        instructions=(
            "Generate images with FLUX (generate_image) and edit them (edit_image). Images are "
            f"saved to {config.output_dir}; each result gives the file path, the provider URL "
            "(it expires in about an hour), a flux://images/ resource link and a small preview. "
            "To edit a result, pass its prediction_id to edit_image. When a result has status "
            "starting or processing, call get_prediction with its prediction_id to finish the "
            "job. list_models describes the models and how to switch them."
        ),
        tools=[generate, edit, get, cancel, models],
        templates=templates,
        http=http,
        log_level=config.log_level,
    )


def _reader(tools: FluxTools, extension: str) -> Callable[[str], Awaitable[bytes]]:
    async def read(stem: str) -> bytes:
        return await tools.read_image(stem, extension)

    return read
