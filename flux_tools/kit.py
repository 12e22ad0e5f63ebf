"""The front ends' kit: what the CLI, the LangChain tools, the MCP server and the demo share.

A public, documented module, so that a front end (ours or yours) needs nothing private:

- **words**: progress (:class:`Progress`), the result as text for a language model
  (:func:`result_text`, :func:`running_text`, :func:`resume_step`), an error and what to do about
  it (:func:`error_text`, :func:`advice`), outside text made safe to print (:func:`safe_text`);
- **saving**: :class:`Journal` (what a crash must not lose), the files' safe names, media types
  and atomic writes, previews for chat clients (:func:`make_preview`);
- **configuration**: the environment table (:data:`ENVIRONMENT`, the client's and the MCP
  server's variables) and its one reader (:func:`read_environment`), the registry's lookups;
- **batches**: :func:`load_rows` / :func:`aload_rows` (rows checked before anything is sent),
  the names of the ledger and of the report;
- **commands**: :class:`ArgumentParser`, which answers a mistyped flag with the nearest one.
- **replicas**: :func:`open_state` (the state replicas share, or the in-process default), the
  journal as a server works it (:class:`PendingWork`, leased entries), ownership.
- **people**: a budget per person (:func:`charging`, :func:`next_reset`) and each person's fair
  share of the create rate (:class:`PersonShares`, :class:`ShareSlot`), for a server that many
  people share.

A chat model, a terminal and a log read the same words, and a fix lands once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ._base.errors import (
    TOKEN_ENV_VARS,
    AuthenticationError,
    ConfigError,
    ContentModerated,
    DownloadError,
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    PredictionFailed,
    PredictionTimeout,
    RateLimitError,
    redact,
)
from ._base.files import check_writable, write_text_atomic
from ._base.media import MEDIA_TYPES, safe_stem
from ._base.suggest import ArgumentParser
from ._base.text import safe_text
from ._base.urls import is_loopback
from ._domain.images import DEFAULT_MAX_IMAGE_BYTES, IMAGE_URI_PREFIXES, PREDICTION_ID
from ._domain.prediction import GenerationResult, Prediction, Timings, abbreviate
from ._domain.pricing import usd_amount
from ._domain.registry import edit_arguments, edit_spec, known_model, model_spec
from ._domain.shares import ShareSlot, charging, next_reset
from ._drivers.batch import DEFAULT_CONCURRENCY, REPORT_NAME, aload_rows, load_rows
from ._drivers.client import AsyncFluxClient, FluxClient
from ._drivers.journal import (
    JOURNAL_DIR,
    JOURNAL_MARKER,
    RETENTION_SECONDS,
    Journal,
    PendingPrediction,
    ended_without_image,
)
from ._drivers.ledger import LEDGER_NAME
from ._drivers.preview import DEFAULT_MAX_BYTES as DEFAULT_PREVIEW_BYTES
from ._drivers.preview import Preview, make_preview
from ._drivers.spending import Spending
from ._drivers.state import (
    ADOPT_SECONDS,
    LEASE_SECONDS,
    RENEW_SECONDS,
    Owners,
    PendingWork,
    PersonShares,
    State,
    account_namespace,
    logged_failure,
    open_state,
)
from ._protocol.flows import Running
from ._settings.environment import (
    CLIENT_ENVIRONMENT,
    ENVIRONMENT,
    IMAGE_DIRS_ENV,
    SERVER_ENVIRONMENT,
    EnvVar,
    read_environment,
)
from ._settings.settings import image_dirs_from


def display_name(model: str) -> str:
    """``black-forest-labs/flux-1.1-pro`` -> ``FLUX 1.1 Pro``: for people reading progress."""
    words = safe_text(model, 100).rsplit("/", 1)[-1].split("-")
    if words[0].lower() == "flux":
        return " ".join(["FLUX", *(w.capitalize() if w.isalpha() else w for w in words[1:])])
    return safe_text(model, 100)


@dataclass(frozen=True)
class ProgressUpdate:
    """One state of a prediction, as a front end reports it."""

    prediction_id: str
    status: str
    elapsed: float
    #: The status differs from the last update's (the first update counts as a change).
    changed: bool
    #: ``FLUX Pro: processing, 4 s elapsed (prediction abc)``; the id is in every message, so
    #: the first one a client shows already tells how to recover the job.
    message: str


class Progress:
    """Turns the states seen while waiting into updates people and models can read."""

    def __init__(self, model: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = display_name(model)
        self._clock = clock
        self._started = clock()
        self._last: tuple[str, str] | None = None
        self.prediction_id: str | None = None

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def note(self, state: str) -> str:
        """A message for a step that is not a prediction state (``sending the request``)."""
        return f"{self.label}: {state}, {self.elapsed:.0f} s elapsed"

    def update(self, prediction: Prediction) -> ProgressUpdate:
        pid, status = safe_text(prediction.id, 100), safe_text(prediction.status, 40)
        key = (pid, status)
        changed = key != self._last
        self._last, self.prediction_id = key, pid
        elapsed = self.elapsed
        message = f"{self.label}: {status}, {elapsed:.0f} s elapsed (prediction {pid})"
        return ProgressUpdate(pid, status, round(elapsed, 3), changed, message)


def _url_line(url: str, label: str) -> str:
    if url.startswith("data:"):
        # Named, not shown: megabytes of base64 would flood a model's context, and a model
        # must not be handed a scheme it might try to fetch.
        media_type = safe_text(url[5:].split(";", 1)[0].split(",", 1)[0] or "image", 40)
        kilobytes = len(url) * 3 // 4 // 1024
        about = f"about {kilobytes} KB, not shown; see the saved file"
        return f"{label}: (inline {media_type} data, {about})"
    return f"{label} (temporary, about an hour): {safe_text(url, 2000)}"


class ResultFacts(Protocol):
    """What :func:`result_text` reads: a :class:`GenerationResult`, or a front end's record of
    one (the MCP server's, rebuilt from a saved image's sidecar)."""

    @property
    def prediction_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def urls(self) -> Sequence[str]: ...
    @property
    def files(self) -> Sequence[Path]: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def timings(self) -> Timings: ...


def result_text(
    result: ResultFacts,
    *,
    verb: str = "Generated",
    resources: Sequence[str] = (),
    extra: Iterable[str] = (),
    reproduce_with: str | None = None,
) -> str:
    """The result for a language model: what was made, where the files are, the URLs (with
    their expiry), the seed, and how to go on. ``reproduce_with`` names the tool to call again
    with the same seed; ``extra`` lines come last."""
    count = len(result.urls)
    facts = [f"prediction {safe_text(result.prediction_id, 100)}"]
    if result.seed is not None:
        facts.append(f"seed {result.seed}")
    total = result.timings.total
    took = f" in {total:.1f} s" if total is not None else ""
    noun = "image" if count == 1 else f"{count} images"
    lines = [f"{verb} {noun} with {safe_text(result.model, 100)}{took} ({', '.join(facts)})."]
    lines += [f"Saved to: {path}" for path in result.files]
    for index, url in enumerate(result.urls, 1):
        lines.append(_url_line(url, "URL" if count == 1 else f"URL {index}"))
    if resources:
        lines.append("Resources: " + ", ".join(resources))
    if not result.files:
        lines.append("The URL is temporary: give it to the user now.")
    if reproduce_with and result.seed is not None:
        lines.append(
            f"To reproduce or vary this image, call {reproduce_with} again with the same prompt "
            f"and seed {result.seed}."
        )
    lines += list(extra)
    return "\n".join(lines)


def running_text(running: Running, *, resume: str, cancel: str | None = None) -> str:
    """A prediction still running when the wait budget ended: what to call to finish it.
    Front ends add what they alone know (how long they wait per call, when it is stopped)."""
    return (
        f"The image is not ready yet: prediction {safe_text(running.prediction_id, 100)} is "
        f"still {safe_text(running.status, 40)} after {running.waited:.0f} s. It goes on running. "
        + resume_step(running.prediction_id, resume=resume, cancel=cancel)
    )


def resume_step(prediction_id: str, *, resume: str, cancel: str | None = None) -> str:
    """The call that finishes a running prediction (and the one that stops it)."""
    pid = safe_text(prediction_id, 100)
    step = f"Call {resume} with prediction_id '{pid}' to wait for it and get the image"
    return step + (f" (or {cancel} to stop it)." if cancel else ".")


def where_the_image_is(error: FluxError) -> str | None:
    """For an error after money was spent: the prediction, and where its image still is."""
    urls = [u for u in getattr(error, "urls", ()) if isinstance(u, str) and u.startswith("http")]
    if urls:
        return f"The image is still at {safe_text(urls[0], 2000)} for about an hour."
    return None


def advice(error: FluxError, *, tool: str) -> str:
    """What to do next, from the error's type and data (never from its message text)."""
    if isinstance(error, FluxInputError):
        return f"Fix the arguments named above and call {tool} again."
    if isinstance(error, ConfigError):
        return "This is a configuration problem that retrying will not fix: tell the user."
    if isinstance(error, ContentModerated):
        return "Change the prompt (or the input image) and try again."
    if isinstance(error, PredictionFailed):
        if error.status == "failed":
            return f"It may be temporary: call {tool} once more; if it fails again, tell the user."
        if error.status == "aborted":
            return f"Nothing was billed: call {tool} again, allowing a longer timeout."
        return "Do not retry unless the user asks."
    if isinstance(error, PredictionTimeout):
        return (
            f"Give the user the prediction id {safe_text(error.prediction_id or '?', 100)} to "
            f"check it later, or call {tool} again with fewer steps for a faster image."
        )
    if isinstance(error, DownloadError):
        return "The image exists: save it from its URL now, or tell the user where it is."
    if isinstance(error, AuthenticationError):
        return "This is a configuration problem that retrying will not fix: tell the user."
    if isinstance(error, RateLimitError):
        wait = f"about {error.retry_after:.0f} s" if error.retry_after else "a minute"
        return f"Wait {wait} before calling {tool} again."
    if isinstance(error, FluxAPIError):
        if error.status in (400, 404, 422):
            return f"Fix the arguments named above and call {tool} again."
        if error.created is None and error.status >= 500 and error.prediction_id is None:
            return f"Do not call {tool} again now: an image may have been billed; tell the user."
        return f"The image service had a problem: call {tool} again later, or tell the user."
    if isinstance(error, FluxConnectionError):
        if error.maybe_created:
            return f"Do not call {tool} again now: tell the user an image may have been billed."
        return f"Call {tool} again later, or tell the user the image service is unreachable."
    return ""


#: Longest text of a save that failed (an OS error's file name may be kilobytes of base64).
MAX_SAVE_ERROR_CHARS = 600


def _save_error(exc: Exception) -> str:
    if isinstance(exc, FluxError):
        return safe_text(exc.message, MAX_SAVE_ERROR_CHARS, newlines=True)
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return safe_text(f"{reason}: {exc.filename}" if exc.filename else reason, 300)
    return safe_text(f"{type(exc).__name__}: {exc}", MAX_SAVE_ERROR_CHARS)


def save_or_explain(client: FluxClient, result: GenerationResult, directory: Path) -> str | None:
    """Save ``result``'s images into ``directory`` (their paths go to ``result.files``): None
    once saved, else why not and where the image still is. The image is paid for: a failed save
    is reported, never raised, so a front end still hands back the URLs."""
    try:
        client.save(result, directory)
    except Exception as exc:
        return _save_error(exc)
    return None


async def asave_or_explain(
    client: AsyncFluxClient, result: GenerationResult, directory: Path
) -> str | None:
    """Async twin of :func:`save_or_explain`."""
    try:
        await client.save(result, directory)
    except Exception as exc:
        return _save_error(exc)
    return None


def error_text(error: FluxError, *, tool: str, secrets: Iterable[str | None] = ()) -> str:
    """The whole error for a model or a person: what happened (outside text made safe), the
    prediction and where its image is when one exists, and what to do."""
    text = safe_text(redact(error.message, secrets), 4000, newlines=True)
    pid = error.prediction_id
    if pid and pid not in text:
        text += f" (prediction {safe_text(pid, 100)})"
    where = where_the_image_is(error)
    if where:
        text += f"\n{where}"
    hint = advice(error, tool=tool)
    return f"{text}\n{hint}" if hint else text


__all__ = [
    "ADOPT_SECONDS",
    "CLIENT_ENVIRONMENT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_PREVIEW_BYTES",
    "ENVIRONMENT",
    "IMAGE_DIRS_ENV",
    "IMAGE_URI_PREFIXES",
    "JOURNAL_DIR",
    "JOURNAL_MARKER",
    "LEASE_SECONDS",
    "LEDGER_NAME",
    "MEDIA_TYPES",
    "PREDICTION_ID",
    "RENEW_SECONDS",
    "REPORT_NAME",
    "RETENTION_SECONDS",
    "SERVER_ENVIRONMENT",
    "TOKEN_ENV_VARS",
    "ArgumentParser",
    "EnvVar",
    "Journal",
    "Owners",
    "PendingPrediction",
    "PendingWork",
    "PersonShares",
    "Preview",
    "Progress",
    "ProgressUpdate",
    "ResultFacts",
    "ShareSlot",
    "Spending",
    "State",
    "abbreviate",
    "account_namespace",
    "advice",
    "aload_rows",
    "asave_or_explain",
    "charging",
    "check_writable",
    "display_name",
    "edit_arguments",
    "edit_spec",
    "ended_without_image",
    "error_text",
    "image_dirs_from",
    "is_loopback",
    "known_model",
    "load_rows",
    "logged_failure",
    "make_preview",
    "model_spec",
    "next_reset",
    "open_state",
    "read_environment",
    "redact",
    "result_text",
    "resume_step",
    "running_text",
    "safe_stem",
    "safe_text",
    "save_or_explain",
    "usd_amount",
    "where_the_image_is",
    "write_text_atomic",
]
