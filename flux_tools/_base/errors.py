"""Every exception flux-tools raises, the parsing of problem+json, and the redaction of secrets.

    FluxError                   .prediction_id whenever a prediction exists upstream
    ├── FluxInputError          bad input, caught before any request is sent (also a ValueError)
    ├── ConfigError             a setting that cannot work (also a ValueError): names the variable
    ├── SchemaError             a model's input schema flux-tools will not compile (a ValueError)
    ├── FluxAPIError            the API answered with an HTTP error (RFC 7807 problem+json)
    │   ├── AuthenticationError     401/403: missing or wrong token
    │   └── RateLimitError          429 after the retries allowed
    ├── FluxConnectionError     the API could not be reached (after the retries allowed)
    ├── PredictionFailed        the prediction ended failed, canceled or aborted
    │   └── ContentModerated        the provider's safety filter refused the prompt or image
    ├── PredictionTimeout       the wait deadline passed (the owner canceled the prediction)
    ├── BudgetExceeded          a create refused before sending: it would exceed a budget
    ├── DownloadError           an output could not be downloaded or saved (.urls still hold it)
    └── PreviewError            no preview could be made (the saved image is unaffected)

Every message says what happened and what to do. Secrets never appear in one: messages built
from server text go through :func:`redact`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .suggest import closest

if TYPE_CHECKING:
    from pydantic import ValidationError

    from .._domain.prediction import Prediction

TOKEN_ENV_VARS = ("FLUX_API_TOKEN", "REPLICATE_API_TOKEN")
REDACTED = "[redacted]"
#: The first words of every refused input: said before anything is sent, so nothing is paid.
INPUT_REFUSED = "Invalid input; nothing was sent"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of a secret (and of ``Bearer <secret>``) with a marker."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


class FluxError(Exception):
    """Base of every error raised by flux-tools.

    ``prediction_id`` is set whenever the error concerns a prediction that exists upstream, so
    the caller can look it up or cancel it later.
    """

    prediction_id: str | None = None

    def __init__(self, message: str, *, prediction_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if prediction_id is not None:
            self.prediction_id = prediction_id

    def __str__(self) -> str:
        return self.message


class FluxInputError(FluxError, ValueError):
    """The input does not fit the model's schema; nothing was sent.

    ``errors`` holds one dict per problem: ``field``, ``problem``, ``allowed`` (may be None),
    and ``suggestion``, the nearest known field, for an unknown one that looks like a typo.
    """

    def __init__(self, message: str, errors: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)

    @property
    def fields(self) -> list[str]:
        return [str(e["field"]) for e in self.errors]

    @classmethod
    def refused(
        cls,
        problems: Sequence[dict[str, Any]],
        *,
        model: str | None = None,
        heading: str = INPUT_REFUSED,
    ) -> FluxInputError:
        """The one way an input is refused: ``heading`` (with the model), then one line per
        problem: ``- field: problem (allowed: ...)``. Each problem is a dict with ``field``,
        ``problem`` and optionally ``allowed`` and ``code`` (kept in :attr:`errors`)."""
        errors = [{"allowed": None, **p} for p in problems]
        where = f" for {model}" if model else ""
        head, _, tail = heading.partition(";")
        lines = [
            f"- {e['field']}: {e['problem']}"
            + (f" (allowed: {e['allowed']})" if e["allowed"] else "")
            for e in errors
        ]
        return cls(f"{head}{where};{tail}:\n" + "\n".join(lines), errors)

    @classmethod
    def one(
        cls, field: str, problem: str, allowed: str | None = None, *, code: str | None = None
    ) -> FluxInputError:
        """One refused field (see :meth:`refused`)."""
        entry: dict[str, Any] = {"field": field, "problem": problem, "allowed": allowed}
        if code is not None:
            entry["code"] = code
        return cls.refused([entry])

    @classmethod
    def from_validation_error(
        cls, exc: ValidationError, schema: dict[str, Any], *, model: str | None = None
    ) -> FluxInputError:
        """Summarise a pydantic error as a language model can act on it: field, problem, allowed."""
        props: dict[str, Any] = schema.get("properties", {})
        errors: list[dict[str, Any]] = []
        allowed: str | None
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"]) or "input"
            suggestion = None
            if err["type"] == "extra_forbidden":
                problem = "is not a field of this model"
                allowed = "fields: " + ", ".join(props)
                suggestion = closest(str(err["loc"][-1]), props) if err["loc"] else None
                if suggestion is not None:
                    problem += f"; did you mean {suggestion!r}?"
            elif err["type"] == "missing":
                problem = "is required"
                allowed = _allowed(props.get(field, {}))
            else:
                problem = _plain_problem(err["msg"])
                allowed = _allowed(props.get(str(err["loc"][0]) if err["loc"] else "", {}))
            entry = {"field": field, "problem": problem, "allowed": allowed}
            if suggestion is not None:  # the nearest field, for a front end to name its way
                entry["suggestion"] = suggestion
            errors.append(entry)
        return cls.refused(errors, model=model)


def _plain_problem(msg: str) -> str:
    # pydantic says "Value error, must be ..." for custom validators: keep the useful part.
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _allowed(prop: dict[str, Any]) -> str | None:
    """The allowed values of one JSON-schema property, in words."""
    options = [prop, *prop.get("anyOf", [])]
    for option in options:
        if "enum" in option:
            return "one of " + ", ".join(repr(v) for v in option["enum"])
        if "const" in option:
            return repr(option["const"])
    for option in options:
        low, high = option.get("minimum"), option.get("maximum")
        if low is not None and high is not None:
            return f"{low} to {high}"
        if low is not None:
            return f"at least {low}"
        if high is not None:
            return f"at most {high}"
        if option.get("minLength"):
            return "a non-empty string"
    return None


class FluxAPIError(FluxError):
    """The API answered with an HTTP error. Fields follow RFC 7807 ``application/problem+json``."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        invalid_fields: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        prediction_id: str | None = None,
    ) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.status = status
        self.title = title
        self.detail = detail
        self.invalid_fields = invalid_fields or []
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, title={self.title!r})"

    #: For an error answering a create: False when the API certainly created nothing (a 4xx),
    #: None when a prediction may exist (a 5xx), True never (it would have an id).
    created: bool | None = None

    def nothing_created(self) -> None:
        """Mark this error as the answer to a create, and say what it means for billing."""
        if self.status < 500:
            self.created = False
            self.message += "\nNo prediction was created: nothing was billed."
        else:
            self.message += (
                "\nThe prediction may have been created and may be billed: check your recent "
                "predictions before retrying."
            )


class AuthenticationError(FluxAPIError):
    """401/403: the token is missing, wrong, or not allowed to run this model."""


class RateLimitError(FluxAPIError):
    """429: the account's rate limit was hit and the retries allowed did not outlast it."""


class ConfigError(FluxError, ValueError):
    """A setting cannot work; the message says which variable or flag to change."""


class SchemaError(FluxError, ValueError):
    """A model's input schema (a snapshot, or one an API published) that flux-tools will not
    compile: odd field names, too many fields, types it cannot check. The caller falls back to
    the snapshot, or sends the input for the server to judge."""


class DownloadError(FluxError):
    """An output could not be downloaded or saved. ``transient`` failures were retried.

    The image may still exist: ``urls`` are the provider's URLs (valid for about an hour).
    """

    transient: bool = False
    urls: tuple[str, ...] = ()
    #: Files saved before the failure (of a several-image result).
    files: tuple[Path, ...] | list[Path] = ()

    @classmethod
    def not_saved(
        cls, prediction_id: str, directory: Path | str, reason: str, urls: Sequence[str]
    ) -> DownloadError:
        """The one text of a paid image that could not be saved: where it still is."""
        where = ", ".join(u for u in urls if not u.startswith("data:")) or "inline data"
        error = cls(
            f"Prediction {prediction_id} succeeded, but its image could not be saved to "
            f"{directory}: {reason}. The image is still at {where} (for about an hour): save it "
            "again to a folder that can be written.",
            prediction_id=prediction_id,
        )
        error.urls = tuple(urls)
        return error


class PreviewError(FluxError):
    """No preview could be made (Pillow missing, unreadable file, impossible budget)."""


class BudgetExceeded(FluxError):
    """A create was refused before it was sent: its estimated cost would exceed a budget.

    ``budget`` names it (``FLUX_BUDGET_USD``, ``FLUX_MAX_CALL_USD``, a batch's ``--budget``);
    ``limit``, ``spent`` and ``estimate`` are in USD (``estimate`` None: no price known).
    """

    def __init__(
        self,
        message: str,
        *,
        budget: str,
        limit: float | None,
        spent: float,
        estimate: float | None,
    ) -> None:
        super().__init__(message)
        self.budget, self.limit, self.spent, self.estimate = budget, limit, spent, estimate


class FluxConnectionError(FluxError):
    """The API could not be reached, or the connection broke before an answer.

    ``maybe_created`` is True when a create request may have reached the server: a prediction
    may exist (and bill) even though no id came back. It is never re-sent automatically.
    """

    def __init__(
        self, message: str, *, maybe_created: bool = False, prediction_id: str | None = None
    ) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.maybe_created = maybe_created


MODERATION_MARKERS = ("E005", "flagged as sensitive", "NSFW", "moderat")


class PredictionFailed(FluxError):
    """The prediction ended ``failed``, ``canceled`` or ``aborted``; ``error`` is the model's."""

    def __init__(self, message: str, *, prediction: Prediction) -> None:
        super().__init__(message, prediction_id=prediction.id)
        self.prediction = prediction
        self.status = prediction.status
        self.error = prediction.error_text

    @classmethod
    def from_prediction(cls, prediction: Prediction) -> PredictionFailed:
        error = prediction.error_text
        if prediction.status == "failed" and error and _is_moderation(error):
            return ContentModerated(
                f"Prediction {prediction.id} was refused by the content filter: {error} "
                "Change the prompt (or the input image) and try again; a lower safety_tolerance "
                "never helps, a higher one may.",
                prediction=prediction,
            )
        if prediction.status == "aborted":
            text = (
                f"Prediction {prediction.id} was aborted: its deadline passed before it started "
                "(not billed). Try again, or allow a longer timeout."
            )
        elif prediction.status == "canceled":
            text = f"Prediction {prediction.id} was canceled before it finished."
        else:
            text = f"Prediction {prediction.id} failed: {error or 'no error text given'}"
        return cls(text, prediction=prediction)


def _is_moderation(error: str) -> bool:
    lowered = error.lower()
    return any(marker.lower() in lowered for marker in MODERATION_MARKERS)


class ContentModerated(PredictionFailed):
    """The provider's safety filter refused the input or the output (FLUX error E005)."""


class PredictionTimeout(FluxError):
    """The wait deadline passed. ``canceled`` says whether a cancel was sent upstream."""

    def __init__(
        self,
        message: str,
        *,
        prediction_id: str,
        prediction: Prediction | None = None,
        canceled: bool = False,
    ) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.prediction = prediction
        self.canceled = canceled


def api_error(
    status: int,
    body: bytes,
    headers: dict[str, str],
    *,
    secrets: Iterable[str | None] = (),
    prediction_id: str | None = None,
) -> FluxAPIError:
    """Build the exception for an HTTP error answer, reading problem+json when there is one."""
    secrets = list(secrets)
    problem: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else {}
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        pass
    title = _text(problem.get("title"), secrets)
    detail = _text(problem.get("detail"), secrets)
    if detail is None and not problem and body:
        detail = redact(body[:300].decode("utf-8", "replace").strip(), secrets) or None
    raw_fields = problem.get("invalid_fields")
    invalid = [f for f in raw_fields if isinstance(f, dict)] if isinstance(raw_fields, list) else []
    retry_after = retry_after_seconds(headers.get("retry-after"), problem.get("retry_after"))

    parts = [f"HTTP {status}" + (f" {title}" if title else "")]
    if detail:
        parts.append(detail.strip())
    for field in invalid:
        parts.append(
            f"- {redact(str(field.get('field', '?')), secrets)}: "
            f"{redact(str(field.get('description', field.get('type', ''))), secrets)}"
        )
    cls: type[FluxAPIError] = FluxAPIError
    if status in (401, 403):
        cls = AuthenticationError
        parts.append(
            "Check the API token: pass api_token=..., or set "
            + " or ".join(TOKEN_ENV_VARS)
            + " (for an MCP server, in the env block of its configuration)."
        )
    elif status == 429:
        cls = RateLimitError
        parts.append("The rate limit was hit; wait and try again, or send fewer requests.")
    elif status == 404 and prediction_id:
        parts.append("The prediction id is unknown to this API (or belongs to another account).")
    return cls(
        "\n".join(parts),
        status=status,
        title=title,
        detail=detail,
        invalid_fields=invalid,
        retry_after=retry_after,
        prediction_id=prediction_id,
    )


def _text(value: Any, secrets: list[str | None]) -> str | None:
    return redact(str(value), secrets) if value is not None else None


def retry_after_seconds(header: str | None, body_value: Any = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds) or a ``retry_after`` body field."""
    for candidate in (header, body_value):
        if candidate is None:
            continue
        try:
            seconds = float(candidate)
        except (TypeError, ValueError):
            continue  # an HTTP-date: rare for this API, fall back to our own backoff
        if seconds >= 0:
            return seconds
    return None
