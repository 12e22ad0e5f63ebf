"""Predictions: validation into problem+json, a lifecycle computed from timestamps, the JSON.

Nothing here runs on a timer: a prediction's status is a function of its creation time, its
queue and run times, an optional deadline and an optional cancel time. That is what lets the
emulator hold thousands of predictions in flight at no cost.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from .._inputs import IMAGE_URI_PREFIXES
from .._registry import ModelSpec, model_spec
from . import _images
from ._faults import Directives, Endpoint, Fault, FaultBook, parse_directives

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
FAIL_ERROR = "Emulated failure: the model crashed."
MODERATION_ERROR = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, as Replicate's ids look


class Problem(Exception):
    """An HTTP error answered as ``application/problem+json``."""

    def __init__(self, status: int, detail: str, title: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or status_phrase(status)
        self.detail = detail
        self.extra = extra
        self.headers: list[tuple[str, str]] = []

    def body(self) -> dict[str, Any]:
        return {"title": self.title, "detail": self.detail, "status": self.status, **self.extra}


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a fault may use any 4xx/5xx, registered or not
        return "Error"


# --- validation --------------------------------------------------------------------------------

_ERROR_TYPES = {
    "missing": "required",
    "literal_error": "enum",
    "enum": "enum",
    "less_than_equal": "number_lte",
    "greater_than_equal": "number_gte",
    "extra_forbidden": "additional_property_not_allowed",
}


def _describe(error: Any, field: str) -> str:
    kind, ctx, name = error["type"], error.get("ctx") or {}, field.rpartition(".")[2]
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        return f"Additional property {name} is not allowed"
    if kind == "less_than_equal":
        return f"Must be less than or equal to {ctx['le']}"
    if kind == "greater_than_equal":
        return f"Must be greater than or equal to {ctx['ge']}"
    if kind in ("literal_error", "enum"):
        return f"{field} must be one of the following: {ctx.get('expected', '')}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def validation_problem(exc: ValidationError) -> Problem:
    fields = []
    for error in exc.errors(include_url=False):
        field = ".".join(["input", *(str(part) for part in error["loc"])])
        fields.append(
            {
                "type": _ERROR_TYPES.get(error["type"], "invalid"),
                "field": field,
                "description": _describe(error, field),
            }
        )
    return _invalid(fields)


def _invalid(fields: list[dict[str, str]]) -> Problem:
    detail = "\n".join(f"- {f['field']}: {f['description']}" for f in fields)
    return Problem(422, detail, "Input validation failed", invalid_fields=fields)


@dataclass(frozen=True)
class EditSource:
    """What an edit model got as its input image: bytes and size, or why it could not load."""

    data: bytes | None
    size: tuple[int, int] | None
    error: str | None


@dataclass
class CreateRequest:
    """A create body that passed validation."""

    spec: ModelSpec
    input: dict[str, Any]
    validated: BaseModel
    directives: Directives


def parse_create(model: str, body: bytes) -> CreateRequest:
    try:
        spec = model_spec(model)
    except ValueError:
        spec = None
    if spec is None:
        raise Problem(404, f"Model {model} does not exist or you do not have access to it.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "The request body is not valid JSON.", "Invalid request body") from None
    if not isinstance(payload, dict):
        raise _invalid([{"type": "invalid", "field": "body", "description": "Must be an object"}])
    raw = payload.get("input")
    if raw is None:
        raise _invalid([{"type": "required", "field": "input", "description": "input is required"}])
    if not isinstance(raw, dict):
        raise _invalid([{"type": "invalid", "field": "input", "description": "Must be an object"}])
    try:
        # strict: like the API's JSON schema, "25" is not an integer
        validated = spec.input_model.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    # Our models also accept paths and prediction ids (the client resolves them); the API
    # itself takes only URIs.
    not_uris = [
        {"type": "format", "field": f"input.{name}", "description": "Does not match format 'uri'"}
        for name in spec.input_model.image_fields
        if isinstance(raw.get(name), str) and not raw[name].startswith(IMAGE_URI_PREFIXES)
    ]
    if not_uris:
        raise _invalid(not_uris)
    prompt = raw.get("prompt")
    try:
        directives = parse_directives(prompt) if isinstance(prompt, str) else Directives()
    except ValueError as exc:
        field = {"type": "invalid", "field": "input.prompt", "description": str(exc)}
        raise _invalid([field]) from None
    return CreateRequest(spec, raw, validated, directives)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """A Go duration (``30s``, ``5m``, ``1h30m``, ``1.5s``, ``500ms``) in seconds."""
    text = text.strip()
    if text == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            raise ValueError(text)
        total += float(part.group(1)) * _UNITS[part.group(2)]
        pos = part.end()
    if pos == 0:
        raise ValueError(text)
    return total


# --- predictions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    started: float | None  # None: it never leaves ``starting``
    completed: float  # math.inf while nothing will end it
    final: str


@dataclass(eq=False)
class Prediction:
    """One prediction's fixed facts; its state at any time is derived from them."""

    id: str
    model: str
    input: dict[str, Any]
    seed: int
    created: float  # all times are time.monotonic()
    queue_time: float
    run_time: float | None  # None: hangs until canceled
    error: str | None  # None: it succeeds
    deadline: float | None
    images: tuple[_images.ImageSpec, ...]
    output_kind: Literal["single", "list"]
    faults: FaultBook
    canceled_at: float | None = None

    def timeline(self) -> Timeline:
        start = self.created + self.queue_time
        end = math.inf if self.run_time is None else start + self.run_time
        stop, stop_status = math.inf, "canceled"
        if self.canceled_at is not None:
            stop = self.canceled_at
        if self.deadline is not None and self.deadline < stop:
            stop, stop_status = self.deadline, "aborted" if self.deadline <= start else "canceled"
        if end <= stop:
            return Timeline(start, end, "failed" if self.error else "succeeded")
        return Timeline(start if stop > start else None, stop, stop_status)

    def status(self, now: float) -> str:
        line = self.timeline()
        if now >= line.completed:
            return line.final
        return "processing" if line.started is not None and now >= line.started else "starting"


@dataclass
class RecordedRequest:
    method: str
    path: str
    origin: Literal["api", "foreign"]
    headers: dict[str, str]
    status: int | None  # None while in flight, and for a dropped connection
    time: float  # time.monotonic() at arrival


class Stats:
    """Counters of what the server saw; safe to read from any thread."""

    def __init__(self, completions: Callable[[], dict[str, float]]) -> None:
        self._lock = threading.Lock()
        self._completions = completions
        self._counts: dict[Endpoint, int] = {}
        self._created = 0
        self._requests: list[RecordedRequest] = []
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(("create", "get", "cancel", "file"), 0)
            self._created = 0
            self._requests = []

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def count(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._counts[endpoint] += 1

    def count_created(self) -> None:
        with self._lock:
            self._created += 1

    @property
    def creates(self) -> int:
        return self._counts["create"]

    @property
    def predictions_created(self) -> int:
        return self._created

    @property
    def gets(self) -> int:
        return self._counts["get"]

    @property
    def cancels(self) -> int:
        return self._counts["cancel"]

    @property
    def files(self) -> int:
        return self._counts["file"]

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot, in order of arrival."""
        with self._lock:
            return list(self._requests)

    @property
    def completed_at_monotonic(self) -> dict[str, float]:
        """When each prediction that is terminal by now became terminal (time.monotonic())."""
        return self._completions()


def _iso(wall: float) -> str:
    stamp = datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class Store:
    """All predictions of one emulator, with the settings that shape new ones."""

    def __init__(
        self,
        *,
        latency: float,
        latency_jitter: float,
        queue_time: float,
        data_retention: float | None,
        output_mode: Literal["url", "data"],
        mislabel_files: bool,
        image_scale: float,
        rng_seed: int | None,
    ) -> None:
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.queue_time = queue_time
        self.data_retention = data_retention
        self.output_mode = output_mode
        self.mislabel_files = mislabel_files
        self.image_scale = image_scale
        self.api_base = ""  # "{origin}{prefix}" for urls.get/cancel, set once listening
        self.file_base = ""  # origin of output files
        self._rng = random.Random(rng_seed)
        self._lock = threading.Lock()
        self._predictions: dict[str, Prediction] = {}
        self._create_faults: dict[str, FaultBook] = {}
        # One anchor so wall-clock stamps and monotonic lifecycle times agree.
        self._mono0, self._wall0 = time.monotonic(), time.time()

    # create ------------------------------------------------------------------------------------

    def take_create_fault(self, request: CreateRequest) -> Fault | None:
        """The prompt's create faults hit the first creates of this exact input, in order."""
        faults = [f for f in request.directives.faults if f.endpoint == "create"]
        if not faults:
            return None
        key = json.dumps([request.spec.name, request.input], sort_keys=True)
        with self._lock:
            book = self._create_faults.setdefault(key, FaultBook(faults))
        return book.take("create")

    def create(
        self,
        request: CreateRequest,
        *,
        now: float,
        deadline: float | None,
        source: EditSource | None = None,
    ) -> Prediction:
        v, d = request.validated, request.directives
        # Only the event loop creates, so the seeded RNG is drawn in a reproducible order.
        seed = getattr(v, "seed", None)
        if seed is None:
            seed = self._rng.randrange(2**31)
        run: float | None = self.latency
        if self.latency_jitter:
            run = max(0.0, self.latency + self._rng.uniform(-1, 1) * self.latency_jitter)
        if d.latency is not None:
            run = d.latency
        if d.hang:
            run = None
        count = (getattr(v, "num_outputs", None) or 1) if request.spec.output == "list" else 1
        width, height = image_size_of(v, self.image_scale)
        if source is not None and source.size and _keeps_shape(v):
            width, height = _images.size_like(source.size, self.image_scale)
        source_bytes = source.data if source is not None else None
        prompt = str(getattr(v, "prompt", ""))
        fmt = str(getattr(v, "output_format", "webp") or "webp")
        quality = getattr(v, "output_quality", None)
        images = tuple(
            _images.ImageSpec(
                prompt,
                seed + i,
                width,
                height,
                fmt,
                quality if isinstance(quality, int) else 80,
                source_bytes,
            )
            for i in range(count)
        )
        prediction = Prediction(
            id="".join(secrets.choice(_ID_ALPHABET) for _ in range(26)),
            model=request.spec.name,
            input=request.input,
            seed=seed,
            created=now,
            queue_time=d.queue if d.queue is not None else self.queue_time,
            run_time=run,
            error=MODERATION_ERROR
            if d.moderate
            else FAIL_ERROR
            if d.fail
            else (source.error if source is not None else None),
            deadline=deadline,
            images=images,
            output_kind=request.spec.output,
            faults=FaultBook([f for f in d.faults if f.endpoint != "create"]),
        )
        with self._lock:
            self._predictions[prediction.id] = prediction
        return prediction

    # access ------------------------------------------------------------------------------------

    def get(self, prediction_id: str) -> Prediction | None:
        with self._lock:
            return self._predictions.get(prediction_id)

    def snapshot(self) -> dict[str, Prediction]:
        with self._lock:
            return dict(self._predictions)

    def completions(self) -> dict[str, float]:
        now = time.monotonic()
        done = {}
        for prediction_id, prediction in self.snapshot().items():
            completed = prediction.timeline().completed
            if completed <= now:
                done[prediction_id] = completed
        return done

    def cancel(self, prediction: Prediction, now: float) -> None:
        if prediction.status(now) not in TERMINAL:
            prediction.canceled_at = now

    def data_removed(self, prediction: Prediction, now: float) -> bool:
        if self.data_retention is None:
            return False
        return now >= prediction.timeline().completed + self.data_retention

    def has_output(self, prediction: Prediction, now: float) -> bool:
        return prediction.status(now) == "succeeded" and not self.data_removed(prediction, now)

    def file_name(self, prediction: Prediction, index: int) -> str:
        ext = "png" if self.mislabel_files else prediction.images[index].extension
        return f"out-{index}.{ext}"

    def file(self, prediction: Prediction, name: str, now: float) -> _images.ImageSpec | None:
        """The image behind ``/files/{id}/{name}``, None once gone or never made."""
        if not self.has_output(prediction, now):
            return None
        for index, spec in enumerate(prediction.images):
            if self.file_name(prediction, index) == name:
                return spec
        return None

    def render_outputs(self, prediction: Prediction) -> list[bytes]:
        return [_images.render(spec) for spec in prediction.images]

    # JSON --------------------------------------------------------------------------------------

    def _stamp(self, mono: float) -> str:
        return _iso(self._wall0 + (mono - self._mono0))

    def to_json(
        self,
        prediction: Prediction,
        now: float,
        *,
        early_output: bool = False,
        images: Sequence[bytes] | None = None,
    ) -> dict[str, Any]:
        """The prediction as the API shows it at ``now``.

        ``early_output``: a held create answered as soon as the run ended shows the output while
        still saying ``processing``, as Replicate does for models that write files.
        ``images``: the rendered outputs for data mode (rendered here when not given).
        """
        p, line = prediction, prediction.timeline()
        status = p.status(now)
        started = line.started is not None and now >= line.started
        terminal = status in TERMINAL
        removed = terminal and self.data_removed(p, now)
        output: Any = None
        if status == "succeeded" and not removed:
            if self.output_mode == "data":
                blobs = images if images is not None else self.render_outputs(p)
                uris = [
                    f"data:{spec.content_type};base64,{base64.b64encode(blob).decode()}"
                    for spec, blob in zip(p.images, blobs, strict=True)
                ]
            else:
                uris = [
                    f"{self.file_base}/files/{p.id}/{self.file_name(p, i)}"
                    for i in range(len(p.images))
                ]
            output = uris[0] if p.output_kind == "single" else uris
        if early_output and status == "succeeded":
            status, terminal = "processing", False
        doc: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "version": "hidden",
            "input": {} if removed else p.input,
            "logs": f"Using seed: {p.seed}\n" if started and not removed else "",
            "output": output,
            "data_removed": removed,
            "error": p.error if status == "failed" else None,
            "status": status,
            "created_at": self._stamp(p.created),
            "started_at": None
            if line.started is None or not started
            else self._stamp(line.started),
            "completed_at": self._stamp(line.completed) if terminal else None,
            "urls": {
                "get": f"{self.api_base}/predictions/{p.id}",
                "cancel": f"{self.api_base}/predictions/{p.id}/cancel",
                "stream": f"https://stream.emulator.invalid/v1/files/{p.id}",
                "web": f"https://web.emulator.invalid/p/{p.id}",
            },
        }
        if p.deadline is not None:
            doc["deadline"] = self._stamp(p.deadline)
        if terminal:
            metrics = {"total_time": round(line.completed - p.created, 6)}
            if line.started is not None:
                metrics["predict_time"] = round(line.completed - line.started, 6)
            doc["metrics"] = metrics
        return doc


def _keeps_shape(validated: BaseModel) -> bool:
    # Kontext's "match_input_image", and image-to-image models, which have no aspect of their own.
    aspect = getattr(validated, "aspect_ratio", None)
    return aspect == "match_input_image" or getattr(validated, "image", None) is not None


def image_size_of(validated: BaseModel, scale: float) -> tuple[int, int]:
    """Output size from whichever of aspect_ratio, width, height, megapixels the model has."""
    try:
        megapixels = float(getattr(validated, "megapixels", 1) or 1)
    except (TypeError, ValueError):
        megapixels = 1.0
    return _images.image_size(
        str(getattr(validated, "aspect_ratio", "1:1")),
        getattr(validated, "width", None),
        getattr(validated, "height", None),
        megapixels=megapixels,
        scale=scale,
    )
