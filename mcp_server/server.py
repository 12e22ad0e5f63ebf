"""The tools: generate_image, edit_image, get_prediction, cancel_prediction, list_models; and
the image resources.

Every call answers within the wait budget (Claude Desktop drops a call after about 60 s): a
prediction still running then is handed back with its id, to resume with ``get_prediction``.
Failures come back as error results whose text says what to change; the server keeps serving.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flux_tools import (
    AsyncFluxClient,
    DownloadError,
    FluxError,
    FluxInput,
    FluxInputError,
    GenerationResult,
    ModelSpec,
    Prediction,
    PredictionFailed,
    Running,
    Timings,
    __version__,
)
from flux_tools.kit import (
    ADOPT_SECONDS,
    IMAGE_URI_PREFIXES,
    RENEW_SECONDS,
    TOKEN_ENV_VARS,
    PendingPrediction,
    State,
    edit_arguments,
    edit_spec,
    error_text,
    known_model,
    logged_failure,
    model_spec,
    open_state,
    safe_text,
)
from flux_tools.kit import Progress as ProgressText

from . import _sdk
from .catalog import ListModelsInput, ModelList, models_result
from .config import Config
from .objects import LINK_SECONDS, ObjectImages
from .ops import Metrics
from .results import (
    Finished,
    ImageResult,
    finished_result,
    pending_result,
    state_result,
)
from .roots import root_folders
from .store import SERVED_FORMATS, URI_PREFIX, ImageStore, is_safe_stem
from .viewer import viewer_app

logger = logging.getLogger("mcp_server")
#: The record of what was created (and so may be billed): logged whatever the log level, so
#: that a prediction can always be found again (``get_prediction``) after a crash.
predictions_log = logging.getLogger("mcp_server.predictions")

NO_TOKEN = (
    "No API token: set "
    + " (or ".join(TOKEN_ENV_VARS)
    + ") in the env block of this server's configuration in your MCP client (e.g. "
    '"env": {"FLUX_API_TOKEN": "r8_..."} in claude_desktop_config.json, or '
    "`claude mcp add flux -e FLUX_API_TOKEN=r8_... -- uvx --from 'flux-tools[mcp]' "
    "flux-tools-mcp` for Claude Code), then "
    "restart the server. Get a token at https://replicate.com/account/api-tokens."
)
#: Longest text of an error result: a refused megabyte value is never echoed whole.
MAX_ERROR_CHARS = 4000


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


class Progress:
    """Progress notifications a person can read: ``FLUX Pro: processing, 4 s elapsed
    (prediction abc)``. The texts are the core's (:class:`flux_tools.Progress`); every message
    about a prediction carries its id, so the first one a client shows tells how to recover it.
    """

    def __init__(self, report: _sdk.Reporter, model: str) -> None:
        self._report = report
        self._text = ProgressText(model)
        self._last = 0.0

    async def say(self, state: str) -> None:
        await self._send(self._text.note(state))

    async def prediction(self, prediction: Prediction) -> None:
        await self._send(self._text.update(prediction).message)

    async def _send(self, message: str) -> None:
        # The protocol wants a strictly increasing value; seconds elapsed are, near enough.
        self._last = max(round(self._text.elapsed, 2), self._last + 0.01)
        try:
            await self._report(self._last, message)
        except Exception as exc:  # a client gone or confused must not fail the generation
            logger.debug("progress notification not sent: %r", exc)


class Tracker:
    """The ``on_progress`` of a generation this server owns: the moment the create answered
    (its first state), the prediction is journaled and logged; then each state is reported.

    Never raises: an error here would interrupt (and so cancel) the prediction."""

    def __init__(
        self,
        tools: FluxTools,
        model: str,
        sources: dict[str, str],
        progress: Progress,
        *,
        cost: float | None = None,
        owner: str | None = None,
    ):
        self._tools, self._model, self._sources, self._progress = tools, model, sources, progress
        self._cost, self._owner = cost, owner
        self.prediction_id: str | None = None

    async def __call__(self, prediction: Prediction) -> None:
        if self.prediction_id is None:
            self.prediction_id = prediction.id
            entry = PendingPrediction(prediction.id, self._model, time.time(), dict(self._sources))
            await self._tools.journal.add(entry, self._owner)
            await self._tools.owners.set(prediction.id, self._owner)
            if self._tools.metrics is not None and self._cost:
                self._tools.metrics.spend.inc(self._cost)
            pid = safe_text(prediction.id, 100)
            predictions_log.info(
                "prediction %s created (%s, %s)",
                pid,
                safe_text(self._model, 100),
                safe_text(prediction.status, 40),
                extra={"prediction_id": pid},
            )
        await self._progress.prediction(prediction)


class FluxTools:
    """The tool handlers, sharing one client (and its connection pool) for the process."""

    def __init__(
        self,
        config: Config,
        client: AsyncFluxClient,
        *,
        state: State | None = None,
        images: ObjectImages | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        # load_config refuses unknown models and edit models that cannot edit.
        self.config = config
        self.client = client
        self.spec: ModelSpec = known_model(config.model)
        self.edit_spec: ModelSpec = edit_spec(config.edit_model)
        self.input_model: type[FluxInput] = self.spec.input_model
        self.edit_model: type[FluxInput] = edit_arguments(self.edit_spec)
        self.edit_field: str = self.edit_spec.edit_field or ""
        # The output folder; with FLUX_STORE_URL, the working copy of the bucket (``remote``).
        self.store = ImageStore(config.output_dir)
        self.remote = images
        self.state = state or open_state(None, namespace="")
        # Only this API's entries: servers on other APIs may share the output folder.
        self.journal = self.state.journal(config.output_dir, api=config.base_url)
        self.owners = self.state.owners
        self.metrics = metrics

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
        """A watcher: waits for the prediction, never cancels it (not even when interrupted)."""
        self._require_token()
        ref = self._validate(GetPredictionInput, arguments, "get_prediction")
        await self._check_owner(ref.prediction_id)
        saved = await self._saved(ref.prediction_id)
        if saved:  # finished and downloaded earlier: no need to ask the API (or pay twice)
            await self.journal.remove(ref.prediction_id)
            done = await self._with_links(self._from_sidecars(saved))
            return await finished_result(done, preview_side=self._side, content=self.config.content)
        progress = Progress(call.report, self.config.model)
        try:
            outcome = await self.client.follow(
                ref.prediction_id,
                budget=self.config.wait_seconds if ref.wait else 0.0,
                on_progress=progress.prediction,
            )
        except PredictionFailed:
            await self.journal.remove(ref.prediction_id)
            raise
        entry = await self.journal.get(ref.prediction_id)
        return await self._outcome(outcome, progress, entry.sources if entry else None)

    async def cancel_prediction(
        self, call: _sdk.CallContext, arguments: dict[str, Any]
    ) -> _sdk.CallToolResult:
        self._require_token()
        ref = self._validate(PredictionRef, arguments, "cancel_prediction")
        await self._check_owner(ref.prediction_id)
        prediction = await self.client.cancel(ref.prediction_id)
        status = safe_text(prediction.status, 40)
        pid = safe_text(prediction.id, 100)
        if status == "canceled":
            text = f"Prediction {pid} is canceled."
        elif status in ("succeeded", "failed", "aborted"):
            text = f"Prediction {pid} had already ended ({status}); nothing was canceled." + (
                " Call get_prediction to get its image." if status == "succeeded" else ""
            )
        else:
            text = f"Cancel requested for prediction {pid} (status now: {status})."
        if status in ("canceled", "failed", "aborted"):
            await self.journal.remove(ref.prediction_id)
        return state_result(
            prediction_id=pid,
            model=safe_text(prediction.model or self.config.model, 100),
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
        """Validate, resolve the image inputs, then create and wait within the wait budget.

        The core's ``run`` owns the prediction: an interrupt (the client canceled the call, or
        went away) cancels it upstream; the budget running out does not.
        """
        self._require_token()
        payload = self._validate(input_model, arguments, tool, model_name=spec.name)
        progress = Progress(call.report, spec.name)
        image_dirs = await self._image_dirs(call, payload)
        sources = _image_inputs(payload)
        cost = self.client.estimate(payload, model=spec.name)
        tracker = Tracker(self, spec.name, sources, progress, cost=cost, owner=self._caller())
        await progress.say("sending the request")
        self._count_in_flight(+1)
        try:
            outcome = await self.client.run(
                payload,
                model=spec.name,
                budget=self.config.wait_seconds,
                cancel_after=self.config.cancel_after,
                sync_wait=0,
                image_dirs=image_dirs,
                on_progress=tracker,
            )
        except BaseException as exc:
            # Over without an image (failed, or canceled by the core, its owner): nothing left
            # to resume. Any other failure keeps its entry: the next start checks.
            with anyio.CancelScope(shield=True):
                await self.journal.settle(tracker.prediction_id, exc, owner=True)
            if tracker.prediction_id is not None:
                self._count("failed" if isinstance(exc, PredictionFailed) else "error")
            if tracker.prediction_id is None and _unreadable_input(exc):
                raise _sdk.ToolError(_input_problem(exc, payload, tool)) from None
            raise
        finally:
            self._count_in_flight(-1)
        if isinstance(outcome, Running) and self.journal.shared:
            # Not waited for here any more: any replica (this one too) takes it up and saves it,
            # whether or not the caller comes back for it.
            await self.journal.release([outcome.prediction_id])
        return await self._outcome(outcome, progress, sources)

    async def _outcome(
        self,
        outcome: GenerationResult | Running,
        progress: Progress,
        sources: dict[str, str] | None,
    ) -> _sdk.CallToolResult:
        """After money was spent nothing escapes raw: an unexpected failure still says which
        prediction it was and where its image is."""
        try:
            return await self._deliver(outcome, progress, sources)
        except (_sdk.ToolError, FluxError):
            raise
        except Exception:
            logger.exception("unexpected error after prediction %s", outcome.prediction_id)
            pid = safe_text(outcome.prediction_id, 100)
            urls = outcome.urls if isinstance(outcome, GenerationResult) else []
            where = ", ".join(safe_text(u, 2000) for u in urls if u.startswith("http"))
            raise _sdk.ToolError(
                f"Internal error in the FLUX MCP server after prediction {pid} was made (details "
                "in its log). The prediction is not lost"
                + (f": its image is at {where} for about an hour" if where else "")
                + f". Call get_prediction with prediction_id '{pid}' to get it."
            ) from None

    async def _deliver(
        self,
        outcome: GenerationResult | Running,
        progress: Progress,
        sources: dict[str, str] | None,
    ) -> _sdk.CallToolResult:
        if isinstance(outcome, Running):
            prediction = outcome.prediction
            logger.info(
                "prediction %s still %s at the wait budget",
                safe_text(prediction.id, 100),
                safe_text(prediction.status, 40),
            )
            self._count("pending")
            return self._pending(prediction, outcome.waited)
        await progress.say(f"{safe_text(outcome.status, 40)}, saving the image")
        done = await self.save(outcome, sources)
        self._count("succeeded")
        try:
            return await finished_result(done, preview_side=self._side, content=self.config.content)
        except OSError as exc:  # a saved file gone or unreadable meanwhile: say where it was
            raise _sdk.ToolError(
                f"Prediction {done.prediction_id} succeeded and was saved to "
                f"{', '.join(map(str, done.files))}, but reading it back failed: "
                f"{exc.strerror or exc}. Call get_prediction with its id to try again."
            ) from None

    async def save(self, result: GenerationResult, sources: dict[str, str] | None) -> Finished:
        """Download the images, write their sidecars, close the journal entry.

        Raises a ToolError that says where the image still is when it cannot be saved.
        """
        pid = safe_text(result.prediction_id, 100)
        try:
            files = await self.client.save(result, self.config.output_dir)
            await anyio.to_thread.run_sync(
                lambda: self.store.write_sidecars(result, files, sources=sources)
            )
        except (DownloadError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            urls = [safe_text(u, 2000) for u in result.urls]
            unsaved = DownloadError.not_saved(
                pid, self.config.output_dir, safe_text(reason, 600, newlines=True), urls
            )
            raise _sdk.ToolError(
                f"{unsaved.message} Check FLUX_OUTPUT_DIR in the server's env block, then call "
                "get_prediction to save it again."
            ) from None
        if self.remote is not None:
            await self._put(result, files)
        await self.journal.remove(result.prediction_id)
        logger.info(
            "prediction %s saved to %s",
            pid,
            ", ".join(map(str, files)),
            extra={"prediction_id": pid},
        )
        done = Finished(
            prediction_id=pid,
            model=safe_text(result.model, 100),
            urls=[safe_text(u, 4000) for u in result.urls],
            files=files,
            seed=result.seed,
            timings=result.timings,
            prompt=_prompt(result.input),
            edited=_edited(result.model, result.input),
            cost=result.cost,
        )
        done.follow_up = self._edit_hint(done)
        return await self._with_links(done)

    async def _image_dirs(self, call: _sdk.CallContext, payload: FluxInput) -> list[Path]:
        """The client's roots, when an image input is a local path or a prediction id.

        The output folder and FLUX_IMAGE_DIRS are the client's own folders; the roots are
        asked for on each such call (they change as the user opens folders). A client without
        roots, or one that fails to answer, leaves just those.
        """
        if not any(not s.startswith(IMAGE_URI_PREFIXES) for s in _sources(payload)):
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

    # -- crash recovery -----------------------------------------------------------------------

    async def resume(self, task_group: anyio.abc.TaskGroup) -> None:
        """Take up the predictions that may be billed and that nobody is saving: at start, what
        a previous run left (the journal); with shared state, also while serving, whatever a
        replica that died (or handed over) left, once its lease expired. Each is watched again
        (never canceled, never created again) and its image saved, in the background."""
        while True:
            with logged_failure("taking up the journal"):
                entries, expired = await self.journal.adopt()
                for entry in expired:
                    logger.warning("%s", entry.expired_text())
                for entry in entries:
                    pid = safe_text(entry.prediction_id, 100)
                    if not self.config.has_token:
                        logger.warning("prediction %s not resumed: no API token", pid)
                        continue
                    logger.warning(
                        "resuming prediction %s, created by %s",
                        pid,
                        "another replica" if self.journal.shared else "an earlier run",
                        extra={"prediction_id": pid},
                    )
                    if self.metrics is not None:
                        self.metrics.adoptions.inc()
                    task_group.start_soon(self._resume_one, entry)
            if not self.journal.shared:
                return  # one process: what is left is taken up at the next start
            await anyio.sleep(ADOPT_SECONDS)

    async def keep_leases(self) -> None:
        """Renew this replica's leases, and exchange what was learned with the other replicas
        (runs while serving, with shared state only)."""
        while True:
            await anyio.sleep(RENEW_SECONDS)
            with logged_failure("renewing the journal's leases"):
                await self.journal.renew()
            with logged_failure("sharing learned durations"):
                await self.state.sync()

    async def hand_over(self) -> None:
        """A graceful stop: let go of every prediction this replica holds, so that another
        adopts it at once (the files of the in-process journal stay for the next start)."""
        with logged_failure("handing the journal over"):
            released = await self.journal.release()
            if released:
                logger.warning("handed %d prediction(s) over to the other replicas", released)

    async def _resume_one(self, entry: PendingPrediction) -> None:
        pid = safe_text(entry.prediction_id, 100)
        # Watched until the provider would have stopped it (Cancel-After), with some slack.
        timeout = max(60.0, self.config.cancel_after - entry.age() + 60.0)
        try:
            outcome = await self.client.follow(entry.prediction_id, timeout=timeout)
            if isinstance(outcome, Running):  # cannot happen without a budget; keep the entry
                return
            await self.save(outcome, entry.sources)
        except (FluxError, _sdk.ToolError) as exc:
            dropped = await self.journal.settle(entry.prediction_id, exc, owner=False)
            logger.warning(
                "could not resume prediction %s: %s; %s",
                pid,
                safe_text(exc, 300),
                "it is over, dropped from the journal" if dropped else "kept for the next start",
                extra={"prediction_id": pid},
            )
        except Exception:  # a background task must never take the server down
            logger.exception("could not resume prediction %s; kept for the next start", pid)
        else:
            logger.warning(
                "resumed prediction %s: its image is saved", pid, extra={"prediction_id": pid}
            )

    # -- replicas: ownership, the bucket, metrics ----------------------------------------------

    def _caller(self) -> str | None:
        """Who is calling: an opaque owner (issuer + subject once people sign in); None until
        then, which every caller matches."""
        return None

    async def _check_owner(self, prediction_id: str) -> None:
        """Someone else's prediction is "not found", never "forbidden": ids are not probed."""
        owner = await self.owners.get(prediction_id)
        caller = self._caller()
        if owner is not None and caller is not None and owner != caller:
            raise _sdk.ToolError(
                f"Prediction {safe_text(prediction_id, 100)} was not found. Check the "
                "prediction_id returned by generate_image or edit_image."
            )

    async def _saved(self, prediction_id: str) -> list[Path]:
        """The images saved for a prediction. With a bucket, the bucket is the truth (the
        folder is this replica's working copy): they are copied here from it."""
        if self.remote is None:
            return self.store.saved(prediction_id)
        owner = await self.owners.get(prediction_id)
        return await self.remote.fetch(prediction_id, self.store.directory, owner)

    async def _put(self, result: GenerationResult, files: list[Path]) -> None:
        pid = safe_text(result.prediction_id, 100)
        assert self.remote is not None
        try:
            owner = await self.owners.get(result.prediction_id)
            await self.remote.put(files, owner)
        except Exception as exc:
            logger.warning(
                "prediction %s: could not store its image in %s: %s",
                pid,
                self.remote.description,
                safe_text(exc, 300),
                extra={"prediction_id": pid},
            )
            raise _sdk.ToolError(
                f"Prediction {pid} succeeded and its image was downloaded, but it could not be "
                f"stored in {self.remote.description} (FLUX_STORE_URL). It is kept for a retry: "
                f"call get_prediction with prediction_id '{pid}' in a moment."
            ) from None

    async def _with_links(self, done: Finished) -> Finished:
        """With a bucket: where each image is kept, and a presigned link to open it."""
        if self.remote is None:
            return done
        owner = await self.owners.get(done.prediction_id)
        names = [path.name for path in done.files]
        done.stored = [self.remote.uri(name, owner) for name in names]
        try:
            done.links = await self.remote.links(names, owner)
        except Exception as exc:  # the image is stored: a missing link is no failure
            logger.warning("could not sign links for %s: %s", done.prediction_id, exc)
        done.link_days = LINK_SECONDS / 86400
        return done

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.generations.labels(outcome).inc()

    def _count_in_flight(self, change: int) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.inc(change)

    # -- helpers ------------------------------------------------------------------------------

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
        # A null is how many clients say "not given": the declared default applies. Only for
        # fields the tool has: an unknown field is refused whatever its value.
        fields = getattr(model, "model_fields", {})
        data = {k: v for k, v in arguments.items() if v is not None or k not in fields}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            error = FluxInputError.from_validation_error(
                exc, model.model_json_schema(), model=model_name
            )
            raise _sdk.ToolError(
                f"{_clip(error.message)}\nFix the arguments named above and call {tool} again."
            ) from None

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
            Running(prediction, waited),
            model=prediction.model or self.config.model,
            budget=self.config.wait_seconds,
            cancel_after=self.config.cancel_after,
        )

    def _from_sidecars(self, files: list[Any]) -> Finished:
        meta = self.store.read_sidecar(files[0])
        model = str(meta.get("model") or self.config.model)
        done = Finished(
            prediction_id=safe_text(meta.get("prediction_id") or files[0].stem, 100),
            model=safe_text(model, 100),
            urls=[safe_text(u, 4000) for u in meta.get("urls") or [] if isinstance(u, str)],
            files=files,
            seed=meta.get("seed") if isinstance(meta.get("seed"), int) else None,
            timings=_timings(meta.get("timings")),
            prompt=_prompt(meta.get("input") or {}),
            edited=_edited(model, meta.get("input")),
            cost=_cost(meta.get("cost")),
        )
        done.follow_up = self._edit_hint(done)
        return done

    async def read_image(self, stem: str, extension: str) -> bytes:
        path = self.store.path_of(stem, extension)
        if path is None and self.remote is not None and is_safe_stem(stem):
            # Saved by another replica: copied here from the bucket (the caller's own images).
            name = f"{stem}.{extension}"
            if extension in SERVED_FORMATS and await self.remote.fetch_one(
                name, self.store.directory, self._caller()
            ):
                path = self.store.path_of(stem, extension)
        if path is None:
            raise _sdk.ResourceError(
                f"No saved image {URI_PREFIX}{safe_text(stem, 100)}.{extension} in "
                f"{self.store.directory}."
            )
        return await anyio.Path(path).read_bytes()


def _unreadable_input(exc: BaseException) -> bool:
    """An error raised while reading a local image input, before anything was sent."""
    return isinstance(exc, OSError | RuntimeError | ValueError) and not isinstance(exc, FluxError)


def _input_problem(exc: BaseException, payload: FluxInput, tool: str) -> str:
    """A local image input that could not be read, named as what it is."""
    local = [s for s in _sources(payload) if not s.startswith(IMAGE_URI_PREFIXES)]
    fields = ", ".join(name for name in type(payload).image_fields if getattr(payload, name, None))
    if isinstance(exc, RuntimeError) and any(s.startswith("~") for s in local):
        problem = "the path starts with ~name, but no user of that name exists here"
    elif isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        problem = "the path is longer than this file system allows"
    elif isinstance(exc, OSError):
        problem = f"the file cannot be read ({exc.strerror or type(exc).__name__})"
    else:
        problem = f"the path cannot be used ({safe_text(exc, 100)})"
    refused = FluxInputError.one(fields or "image", problem)
    return (
        f"{refused.message}\nFix the arguments named above and call {tool} again: pass an https "
        "URL, a data: URI, an earlier prediction id, or the absolute path of an image in an "
        "allowed folder."
    )


def _clip(text: str) -> str:
    return safe_text(text, MAX_ERROR_CHARS, newlines=True)


def _sources(payload: FluxInput) -> list[str]:
    """Every image source of the payload (single fields and list fields alike)."""
    found: list[str] = []
    for name in type(payload).image_fields:
        value = getattr(payload, name, None)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(v for v in value if isinstance(v, str))
    return found


def _timings(data: Any) -> Timings:
    try:
        return Timings.model_validate(data or {})
    except ValidationError:  # a sidecar edited by hand: the image still counts
        return Timings()


def _cost(value: Any) -> float | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if number and value >= 0 else None


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
    given: dict[str, str] = {}
    for name in type(payload).image_fields:
        value = getattr(payload, name, None)
        values = value if isinstance(value, list | tuple) else [value]
        for index, item in enumerate(values):
            if isinstance(item, str) and item and not item.startswith("data:"):
                given[name if len(values) == 1 else f"{name}[{index}]"] = item
    return given


def image_advice(error: FluxInputError, config: Config) -> str | None:
    """What to do when a local image input is refused, from the refusal's ``code`` (the core's
    data, never its words); None when the refusal is not about the server's folders or cap."""
    codes = {e.get("code") for e in error.errors}
    if "too_large" in codes:
        return (
            f"Local images are sent only up to {config.max_image_bytes} bytes: pass a smaller "
            "file or an https URL, or ask the user to raise FLUX_MCP_MAX_IMAGE_BYTES in this "
            "server's env block (then restart it)."
        )
    if not codes & {"outside_folders", "not_found", "no_such_user"}:
        return None
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
        except FluxInputError as exc:  # found before anything was sent: nothing billed
            advice = f"Fix the arguments named above and call {tool} again."
            named = {field.split("[", 1)[0] for field in exc.fields}  # input_images[2]
            hint = image_advice(exc, config) if named & set(image_fields) else None
            if hint:
                advice += " " + hint
            raise _sdk.ToolError(f"{_clip(exc.message)}\n{advice}") from None
        except FluxError as exc:
            # The core's words: what happened (outside text made safe), the prediction and
            # where its image is when one exists, and what to do (from the error's data).
            text = error_text(exc, tool=tool, secrets=(config.api_token,))
            raise _sdk.ToolError(_clip(text)) from None
        except OSError as exc:
            logger.warning("%s failed: %r", tool, exc)
            raise _sdk.ToolError(
                f"{tool} failed on the server's files: {exc.strerror or type(exc).__name__}"
                f"{f' ({safe_text(exc.filename, 300)})' if exc.filename else ''}. Check that "
                f"{config.output_dir} (FLUX_OUTPUT_DIR) can be written; then try again."
            ) from None
        except Exception:
            logger.exception("unexpected error in a tool call")
            raise _sdk.ToolError(
                "Internal error in the FLUX MCP server (details in its log); the call did nothing "
                "else. Try again; if it persists, report it."
            ) from None

    return call


def build_server(
    config: Config,
    client: AsyncFluxClient,
    http: _sdk.HTTPOptions | None = None,
    *,
    tools: FluxTools | None = None,
) -> _sdk.SDKServer:
    tools = tools or FluxTools(config, client)
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
        wants_roots=_wants_roots(tools.input_model),
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
            "Waits, saves and returns like generate_image; each call is a paid generation."
        ),
        input_schema=tools.edit_model.model_json_schema(),
        output_model=ImageResult,
        handler=handler(tools.edit_image, "edit_image", tools.edit_model),
        wants_roots=_wants_roots(tools.edit_model),
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
        app=viewer_app(config.viewer, edit_field=tools.edit_field),
    )


def _wants_roots(model: type[FluxInput]) -> Callable[[dict[str, Any]], bool]:
    """Whether raw arguments hold a local image (a path or a prediction id): then the call
    needs the client's roots, the folders it shares."""
    fields = tuple(model.image_fields)

    def wants(arguments: dict[str, Any]) -> bool:
        for name in fields:
            value = arguments.get(name)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and not v.startswith(IMAGE_URI_PREFIXES) for v in values):
                return True
        return False

    return wants


def _reader(tools: FluxTools, extension: str) -> Callable[[str], Awaitable[bytes]]:
    async def read(stem: str) -> bytes:
        return await tools.read_image(stem, extension)

    return read
