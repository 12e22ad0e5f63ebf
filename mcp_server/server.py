"""The tools: generate_image, edit_image, get_prediction, cancel_prediction, list_models; and
the image resources.

Every call answers within the wait budget (Claude Desktop drops a call after about 60 s): a
prediction still running then is handed back with its id, to resume with ``get_prediction``.
Failures come back as error results whose text says what to change; the server keeps serving.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flux_tools import (
    AsyncFluxClient,
    BudgetExceeded,
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
    PREDICTION_ID,
    RENEW_SECONDS,
    TOKEN_ENV_VARS,
    PendingPrediction,
    PersonShares,
    State,
    charging,
    edit_arguments,
    edit_spec,
    error_text,
    known_model,
    logged_failure,
    model_spec,
    next_reset,
    open_state,
    safe_text,
)
from flux_tools.kit import Progress as ProgressText

from . import _sdk
from .audit import AuditLog
from .catalog import ListModelsInput, ModelList, models_result
from .config import Config
from .links import CHUNK, ImageBody, LinkSigner
from .objects import LINK_SECONDS, ObjectImages
from .ops import Metrics
from .people import Person
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
#: The variable of a signed-in person's daily budget (the name its refusals carry).
USER_BUDGET = "FLUX_MCP_USER_BUDGET_USD"
#: A signed-in person's images listed by resources/list: the most recent.
MAX_LISTED = 100


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
        person: Person | None = None,
        tool: str = "generate_image",
    ):
        self._tools, self._model, self._sources, self._progress = tools, model, sources, progress
        self._cost, self._person, self._tool = cost, person or Person(), tool
        self.prediction_id: str | None = None

    async def __call__(self, prediction: Prediction) -> None:
        if self.prediction_id is None:
            self.prediction_id = prediction.id
            owner = self._person.id
            entry = PendingPrediction(prediction.id, self._model, time.time(), dict(self._sources))
            await self._tools.journal.add(entry, owner)
            await self._tools.owners.set(prediction.id, owner)
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
            with logged_failure("writing the audit line"):
                await self._tools.audit.record(
                    "create",
                    self._person,
                    tool=self._tool,
                    prediction_id=pid,
                    model=safe_text(self._model, 100),
                    cost_usd=self._cost,
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
        links: LinkSigner | None = None,
        audit: AuditLog | None = None,
        shares: PersonShares | None = None,
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
        #: Links to images served by this server (FLUX_MCP_PUBLIC_URL), None: none.
        self.links = links
        self.audit = audit or AuditLog()
        #: Each person's share of the create rate (when people sign in), None: no sharing.
        self.shares = shares

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
        person = self._person()
        # The caller's own saved images first (their folder, or their prefix in the bucket).
        saved = await self._saved(ref.prediction_id, person)
        if saved:  # finished and downloaded earlier: no need to ask the API (or pay twice)
            await self.journal.remove(ref.prediction_id)
            done = await self._with_links(self._from_sidecars(saved), person.id)
            return await finished_result(done, preview_side=self._side, content=self.config.content)
        await self._check_owner(ref.prediction_id, person)
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
        return await self._outcome(outcome, progress, entry.sources if entry else None, person.id)

    async def cancel_prediction(
        self, call: _sdk.CallContext, arguments: dict[str, Any]
    ) -> _sdk.CallToolResult:
        self._require_token()
        ref = self._validate(PredictionRef, arguments, "cancel_prediction")
        person = self._person()
        await self._check_owner(ref.prediction_id, person)
        prediction = await self.client.cancel(ref.prediction_id)
        status = safe_text(prediction.status, 40)
        pid = safe_text(prediction.id, 100)
        with logged_failure("writing the audit line"):
            await self.audit.record("cancel", person, prediction_id=pid, status=status)
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
        person = self._person()
        progress = Progress(call.report, spec.name)
        await self._check_earlier_results(payload, person)
        image_dirs = await self._image_dirs(call, payload, person)
        sources = _image_inputs(payload)
        cost = self.client.estimate(payload, model=spec.name)
        tracker = Tracker(self, spec.name, sources, progress, cost=cost, person=person, tool=tool)
        waited = await self._take_turn(person, progress)
        await progress.say("sending the request")
        self._count_in_flight(+1)
        try:
            with self._charging(person):
                outcome = await self.client.run(
                    payload,
                    model=spec.name,
                    budget=max(1.0, self.config.wait_seconds - waited),
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
        return await self._outcome(outcome, progress, sources, person.id)

    async def _outcome(
        self,
        outcome: GenerationResult | Running,
        progress: Progress,
        sources: dict[str, str] | None,
        owner: str | None,
    ) -> _sdk.CallToolResult:
        """After money was spent nothing escapes raw: an unexpected failure still says which
        prediction it was and where its image is."""
        try:
            return await self._deliver(outcome, progress, sources, owner)
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
        owner: str | None,
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
        done = await self.save(outcome, sources, owner)
        self._count("succeeded")
        try:
            return await finished_result(done, preview_side=self._side, content=self.config.content)
        except OSError as exc:  # a saved file gone or unreadable meanwhile: say where it was
            raise _sdk.ToolError(
                f"Prediction {done.prediction_id} succeeded and was saved to "
                f"{', '.join(map(str, done.files))}, but reading it back failed: "
                f"{exc.strerror or exc}. Call get_prediction with its id to try again."
            ) from None

    async def save(
        self, result: GenerationResult, sources: dict[str, str] | None, owner: str | None = None
    ) -> Finished:
        """Download the images into their owner's folder (None: the local user's, the output
        folder), write their sidecars, close the journal entry.

        Raises a ToolError that says where the image still is when it cannot be saved.
        """
        pid = safe_text(result.prediction_id, 100)
        store = self._store_of(owner)
        try:
            files = await self.client.save(result, store.directory)
            await anyio.to_thread.run_sync(
                lambda: store.write_sidecars(result, files, sources=sources)
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
            await self._put(result, files, owner)
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
        return await self._with_links(done, owner)

    async def _image_dirs(
        self, call: _sdk.CallContext, payload: FluxInput, person: Person
    ) -> list[Path]:
        """The folders local image inputs may be read from, for this caller.

        A signed-in person: their own folder only (the server's other folders are not theirs,
        and a remote client's roots are folders on their own machine). The local user: the
        output folder, FLUX_IMAGE_DIRS, and the client's roots when an image input is a local
        path or a prediction id; the roots are asked for on each such call (they change as the
        user opens folders). A client without roots, or one that fails to answer, leaves just
        the others.
        """
        if person.signed_in:
            return [person.folder(self.config.output_dir)]
        base = [self.config.output_dir, *self.config.image_dirs]
        if not any(not s.startswith(IMAGE_URI_PREFIXES) for s in _sources(payload)):
            return base
        try:
            uris = await call.roots()
        except _sdk.NoRoots as exc:
            logger.debug("no roots: %s", exc)
            return base
        except Exception as exc:  # a client that cannot answer: go on with the other folders
            logger.info("could not get the client's roots (%r); using the other folders", exc)
            return base
        folders = root_folders(uris)
        logger.debug("client roots: %s", ", ".join(map(str, folders)) or "none local")
        return [*base, *folders]

    async def _check_earlier_results(self, payload: FluxInput, person: Person) -> None:
        """An image input given as a prediction id is used only when it is the caller's own
        result: anyone else's is refused exactly as an id that does not exist is (so ids are
        not probed). The caller's own, kept in the bucket, is copied to their folder first."""
        for label, source in _labelled_sources(payload):
            if not PREDICTION_ID.match(source):
                continue
            if not await self._owns(source, person):
                raise FluxInputError.one(
                    label,
                    f"{source} is neither a file in the allowed folders nor a known prediction id",
                )
            if self.remote is not None:
                await self._saved(source, person)

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
            owner = entry.owner
            if owner is None:
                owner = await self.owners.get(entry.prediction_id)
            else:  # ownership kept in memory did not survive a restart: the entry says
                await self.owners.set(entry.prediction_id, owner)
            outcome = await self.client.follow(entry.prediction_id, timeout=timeout)
            if isinstance(outcome, Running):  # cannot happen without a budget; keep the entry
                return
            await self.save(outcome, entry.sources, owner)
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

    def _person(self) -> Person:
        """Who is calling (the tool call or resource request being handled): a signed-in
        person, or the local user."""
        return Person.of(_sdk.calling_identity())

    def _store_of(self, owner: str | None) -> ImageStore:
        """The folder of ``owner``'s images (None: the local user's, the output folder)."""
        if owner is None:
            return self.store
        return ImageStore(Person(owner).folder(self.config.output_dir))

    async def _owns(self, prediction_id: str, person: Person) -> bool:
        """Whether the prediction is ``person``'s: recorded as theirs, or saved in their own
        folder (ownership kept in memory does not outlive a restart; their files do). A
        prediction nobody recorded (not made here, or before a restart) is the local user's
        only: a signed-in person never gets what is not provably theirs."""
        if person.may_see(await self.owners.get(prediction_id)):
            return True
        return person.signed_in and bool(self._store_of(person.id).saved(prediction_id))

    async def _check_owner(self, prediction_id: str, person: Person) -> None:
        """Someone else's prediction is "not found", never "forbidden": ids are not probed.
        For a signed-in person, an id that does not exist gets these very words too."""
        if not await self._owns(prediction_id, person):
            raise _sdk.ToolError(
                f"Prediction {safe_text(prediction_id, 100)} was not found. Check the "
                "prediction_id returned by generate_image or edit_image."
            )

    async def _saved(self, prediction_id: str, person: Person) -> list[Path]:
        """The images saved for a prediction among ``person``'s own. With a bucket, the
        bucket is the truth (the folder is this replica's working copy): they are copied here
        from it."""
        store = self._store_of(person.id)
        if self.remote is None:
            return store.saved(prediction_id)
        return await self.remote.fetch(prediction_id, store.directory, person.id)

    async def _put(self, result: GenerationResult, files: list[Path], owner: str | None) -> None:
        pid = safe_text(result.prediction_id, 100)
        assert self.remote is not None
        try:
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

    async def _with_links(self, done: Finished, owner: str | None) -> Finished:
        """Links to open each image: this server's signed links when it has a public URL;
        else, with a bucket, presigned links. With a bucket, also where each image is kept."""
        names = [path.name for path in done.files]
        if self.remote is not None:
            done.stored = [self.remote.uri(name, owner) for name in names]
        if self.links is not None:
            served = [name for name in names if name.rsplit(".", 1)[-1] in SERVED_FORMATS]
            done.links = [self.links.url(owner, name) for name in served]
            done.link_seconds = self.links.ttl
        elif self.remote is not None:
            try:
                done.links = await self.remote.links(names, owner)
            except Exception as exc:  # the image is stored: a missing link is no failure
                logger.warning("could not sign links for %s: %s", done.prediction_id, exc)
            done.link_seconds = LINK_SECONDS
        return done

    # -- people: their share of the rate, their budget ----------------------------------------

    async def _take_turn(self, person: Person, progress: Progress) -> float:
        """Wait for the caller's share of the account's create rate (when people sign in);
        the seconds waited. Refused, with when to retry, past half the wait budget."""
        if self.shares is None:
            return 0.0
        slot = await self.shares.reserve(person.name, max_wait=self.config.wait_seconds / 2)
        if not slot.granted:
            if self.metrics is not None:
                self.metrics.share_refusals.inc()
            raise _sdk.ToolError(
                "You are creating images faster than your share of this server (others are "
                "creating too): nothing was created and nothing was spent. Retry in "
                f"{max(1, math.ceil(slot.delay))} s, or wait for your earlier calls to finish."
            )
        if slot.delay > 0.05:
            await progress.say(f"waiting {slot.delay:.0f} s for this person's turn to create")
            await anyio.sleep(slot.delay)
        return slot.delay

    @contextlib.contextmanager
    def _charging(self, person: Person) -> Iterator[None]:
        """Creates in the block also spend from a signed-in person's daily budget."""
        limit = self.config.user_budget_usd
        if not person.signed_in or limit is None:
            yield
            return
        with charging(f"person:{person.id}", limit, USER_BUDGET):
            yield

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
        """``flux://images/<stem>.<extension>`` among the caller's own images."""
        person = self._person()
        store = self._store_of(person.id)
        path = store.path_of(stem, extension)
        if path is None and self.remote is not None and is_safe_stem(stem):
            # Saved by another replica: copied here from the bucket (the caller's own images).
            name = f"{stem}.{extension}"
            if extension in SERVED_FORMATS and await self.remote.fetch_one(
                name, store.directory, person.id
            ):
                path = store.path_of(stem, extension)
        if path is None:
            where = "" if person.signed_in else f" in {store.directory}"
            raise _sdk.ResourceError(
                f"No saved image {URI_PREFIX}{safe_text(stem, 100)}.{extension}{where}."
            )
        return await anyio.Path(path).read_bytes()

    async def list_images(self) -> list[_sdk.ResourceEntry]:
        """resources/list: a signed-in person's own saved images, newest first (at most
        :data:`MAX_LISTED`). The local user's list is as it always was (the viewer only)."""
        person = self._person()
        if not person.signed_in:
            return []
        store = self._store_of(person.id)
        if self.remote is not None:
            found = await self.remote.list_images(person.id, MAX_LISTED)
        else:
            found = await anyio.to_thread.run_sync(lambda: _newest_images(store.directory))
        return [
            _sdk.ResourceEntry(
                uri=f"{URI_PREFIX}{name}",
                name=name,
                mime_type=SERVED_FORMATS[name.rsplit(".", 1)[-1]],
                size=size,
                description="An image you generated or edited (full size).",
            )
            for name, size in found
        ]

    async def open_image(self, owner: str | None, name: str) -> ImageBody | None:
        """One image of ``owner`` (None: the local user) by file name, for a link: from their
        folder, else from the bucket; None when it is kept nowhere."""
        stem, _, extension = name.rpartition(".")
        path = self._store_of(owner).path_of(stem, extension)
        if path is not None:
            size = (await anyio.Path(path).stat()).st_size
            return ImageBody(size, _file_chunks(path))
        if self.remote is None:
            return None
        data = await self.remote.read(name, owner)
        return None if data is None else ImageBody(len(data), _one_chunk(data))


def _newest_images(folder: Path) -> list[tuple[str, int]]:
    """The served images in ``folder``: (name, size), newest first, at most MAX_LISTED."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    found = []
    for path in entries:
        stem, _, extension = path.name.rpartition(".")
        if extension in SERVED_FORMATS and is_safe_stem(stem):
            with contextlib.suppress(OSError):
                info = path.stat()
                found.append((info.st_mtime, path.name, info.st_size))
    found.sort(reverse=True)
    return [(name, size) for _, name, size in found[:MAX_LISTED]]


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as file:
        while chunk := await file.read(CHUNK):
            yield chunk


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


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


def _labelled_sources(payload: FluxInput) -> list[tuple[str, str]]:
    """Every image source of the payload with the field that holds it (``input_images[1]``)."""
    found: list[tuple[str, str]] = []
    for name in type(payload).image_fields:
        value = getattr(payload, name, None)
        if isinstance(value, str):
            found.append((name, value))
        elif isinstance(value, list | tuple):
            found.extend((f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str))
    return found


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


def image_advice(error: FluxInputError, config: Config, person: Person | None = None) -> str | None:
    """What to do when a local image input is refused, from the refusal's ``code`` (the core's
    data, never its words); None when the refusal is not about the server's folders or cap."""
    codes = {e.get("code") for e in error.errors}
    if (
        person is not None
        and person.signed_in
        and codes
        & {
            "outside_folders",
            "not_found",
            "no_such_user",
            "invalid_path",
        }
    ):
        return (
            "This server cannot read files on your computer: it reads local images only from "
            "your own results on it. Pass the prediction id of an earlier result of yours, an "
            "https URL, or a data: URI."
        )
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


def _in_words(seconds: float) -> str:
    """``3 h 12 min``, ``12 min``, ``40 s``."""
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min" if minutes else f"{max(1, int(seconds))} s"


def budget_text(exc: BudgetExceeded, person: Person, *, tool: str, config: Config) -> str:
    """A refused create in words for the caller: a signed-in person hears about their own
    day (spent, left, when it starts again) and never about anyone else's spending."""
    if exc.budget == USER_BUDGET and exc.limit is not None and exc.estimate is not None:
        now = datetime.now(timezone.utc)
        reset = next_reset(now)
        again = f"It starts again at 00:00 UTC, in {_in_words((reset - now).total_seconds())}"
        if exc.estimate > exc.limit + 1e-9:
            return (
                f"This call would cost about ${exc.estimate:.4f}, more than your whole daily "
                f"budget on this server (${exc.limit:.2f} a day, {USER_BUDGET}): nothing was "
                f"sent. Ask {tool} for fewer or smaller images."
            )
        left = max(0.0, exc.limit - exc.spent)
        return (
            f"Your daily budget on this server would be exceeded: you have spent "
            f"${exc.spent:.4f} of ${exc.limit:.2f} today (UTC), ${left:.4f} is left, and this "
            f"call costs about ${exc.estimate:.4f}. Nothing was sent. {again}; to go on sooner, "
            f"ask the server's operator to raise {USER_BUDGET}."
        )
    if exc.budget == "FLUX_BUDGET_USD" and person.signed_in:
        return (
            "This server's total budget (FLUX_BUDGET_USD) does not allow this call now: nothing "
            "was sent. Ask the server's operator to raise it."
        )
    return error_text(exc, tool=tool, secrets=(config.api_token,))


def guarded(
    handler: _sdk.ToolHandler, tool: str, image_fields: tuple[str, ...], config: Config
) -> _sdk.ToolHandler:
    """Turn every failure into an error result with a message to act on; never crash a call."""

    async def call(context: _sdk.CallContext, arguments: dict[str, Any]) -> _sdk.CallToolResult:
        try:
            return await handler(context, arguments)
        except _sdk.ToolError:
            raise
        except BudgetExceeded as exc:  # refused before anything was sent
            text = budget_text(exc, Person.of(context.identity), tool=tool, config=config)
            raise _sdk.ToolError(_clip(text)) from None
        except FluxInputError as exc:  # found before anything was sent: nothing billed
            advice = f"Fix the arguments named above and call {tool} again."
            named = {field.split("[", 1)[0] for field in exc.fields}  # input_images[2]
            person = Person.of(context.identity)
            hint = image_advice(exc, config, person) if named & set(image_fields) else None
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
        list_resources=tools.list_images,
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
