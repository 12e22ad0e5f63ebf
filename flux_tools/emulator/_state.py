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

from .._base.media import MEDIA_TYPES, sniff_extension
from .._domain.images import IMAGE_URI_PREFIXES
from . import _catalog, _images
from ._faults import ENDPOINTS, Directives, Endpoint, Fault, FaultBook, parse_directives

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
#: Where a prediction's server-sent events and its web page are served, on the files' origin.
STREAM_PATH = "/v1/files/stream/"
WEB_PATH = "/p/"
FAIL_ERROR = "Emulated failure: the model crashed."
MODERATION_ERROR = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, as Replicate's ids look


class Problem(Exception):
    """An HTTP error answered as ``application/problem+json``.

    ``title`` defaults to the one spelling of that status's title (``error_title``); a 429
    has none, as Replicate's throttle answers carry only ``detail``, ``status`` and
    ``retry_after``.
    """

    def __init__(self, status: int, detail: str, title: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or error_title(status)
        self.detail = detail
        self.extra = extra
        self.headers: list[tuple[str, str]] = []

    def body(self) -> dict[str, Any]:
        head: dict[str, Any] = {"title": self.title} if self.title else {}
        return {**head, "detail": self.detail, "status": self.status, **self.extra}


def status_phrase(status: int) -> str:
    """The reason phrase of the HTTP status line."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a fault may use any 4xx/5xx, registered or not
        return "Error"


#: One spelling per status, sentence case as Replicate writes them ("Not found").
_TITLES = {401: "Unauthenticated", 404: "Not found", 429: ""}


def error_title(status: int) -> str:
    """The problem+json title of an error that has no more specific one."""
    if status in _TITLES:
        return _TITLES[status]
    phrase = status_phrase(status)
    return phrase[:1] + phrase[1:].lower()


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
class InputImages:
    """The images a prediction was given, loaded as the real model would fetch them.

    ``edit``: the image an edit model changes (a one-image field such as ``input_image``);
    ``references``: the items of array image fields (FLUX.2's ``input_images``), in order;
    ``size``: the size of the first image loaded; ``error``: why one could not be loaded.
    """

    edit: bytes | None = None
    references: tuple[bytes, ...] = ()
    size: tuple[int, int] | None = None
    error: str | None = None


@dataclass
class CreateRequest:
    """A create body that passed validation."""

    spec: _catalog.ServedModel
    input: dict[str, Any]
    validated: BaseModel
    directives: Directives
    #: The version a create by version named; None for the official models' route.
    version: str | None = None


def parse_create(model: str, body: bytes, catalog: _catalog.Catalog) -> CreateRequest:
    spec = catalog.find(model)
    if spec is None:
        raise Problem(404, f"Model {model} does not exist or you do not have access to it.")
    payload = parse_body(body)
    return parse_input(spec, payload)


def parse_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "The request body is not valid JSON.", "Invalid request body") from None


def parse_input(spec: _catalog.ServedModel, payload: Any) -> CreateRequest:
    """Validate a create body's ``input`` for ``spec`` as the API would."""
    if not isinstance(payload, dict):
        raise _invalid([{"type": "invalid", "field": "body", "description": "Must be an object"}])
    raw = payload.get("input")
    if raw is None:
        raise _invalid([{"type": "required", "field": "input", "description": "input is required"}])
    if not isinstance(raw, dict):
        raise _invalid([{"type": "invalid", "field": "input", "description": "Must be an object"}])
    try:
        # strict: like the API's JSON schema, "25" is not an integer
        validated = spec.input_model.model_validate(_relabelled(spec, raw), strict=True)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    # Our models also accept paths and prediction ids (the client resolves them); the API
    # itself takes only URIs.
    not_uris = [
        {"type": "format", "field": field, "description": "Does not match format 'uri'"}
        for name in _catalog.image_fields(spec.input_model)
        for field, value in _items(f"input.{name}", raw.get(name))
        if isinstance(value, str) and not value.startswith(IMAGE_URI_PREFIXES)
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


def _relabelled(spec: _catalog.ServedModel, raw: dict[str, Any]) -> dict[str, Any]:
    """The input with mislabelled inline images named by their bytes, for validation only.

    The official clients send a file object without a known type as
    ``data:application/octet-stream;base64,...``; Replicate's model reads the bytes and takes
    it. Our input models refuse a declared type that is not an image, so such a URI is checked
    as the image type its bytes show (what is stored and answered stays as sent).
    """
    fields = _catalog.image_fields(spec.input_model)
    if not any(name in raw for name in fields):
        return raw
    checked = dict(raw)
    for name in fields:
        value = raw.get(name)
        if isinstance(value, str):
            checked[name] = _relabel(value)
        elif isinstance(value, list):
            checked[name] = [_relabel(v) if isinstance(v, str) else v for v in value]
    return checked


def _relabel(uri: str) -> str:
    header, comma, payload = uri.partition(",")
    if not uri.startswith("data:") or not comma or header[5:].startswith("image/"):
        return uri
    try:
        head = base64.b64decode(payload[:24], validate=False)
    except ValueError:
        return uri
    kind = MEDIA_TYPES.get(sniff_extension(head))
    return f"data:{kind};base64,{payload}" if kind and header.endswith(";base64") else uri


def _items(field: str, value: Any) -> list[tuple[str, Any]]:
    """A field's value as (field name, item) pairs: one for a scalar, one per list item."""
    if isinstance(value, list):
        return [(f"{field}.{i}", item) for i, item in enumerate(value)]
    return [(field, value)]


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
    seq: int = 0  # order of creation, for the list endpoint
    version: str | None = None  # as created by version; None: "hidden", as official models say

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
        self._throttled = 0
        self._requests: list[RecordedRequest] = []
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(ENDPOINTS, 0)
            self._created = 0
            self._throttled = 0
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

    def count_throttled(self) -> None:
        with self._lock:
            self._throttled += 1

    @property
    def throttled(self) -> int:
        """Requests the rate limiter refused with a 429 (scripted faults not included)."""
        return self._throttled

    @property
    def lists(self) -> int:
        return self._counts["list"]

    @property
    def models(self) -> int:
        """Requests for models and their versions."""
        return self._counts["model"]

    @property
    def accounts(self) -> int:
        return self._counts["account"]

    @property
    def streams(self) -> int:
        return self._counts["stream"]

    @property
    def uploads(self) -> int:
        """Requests to the Files API (uploads, and their reads and deletes)."""
        return self._counts["upload"]

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
        self.file_base = ""  # origin of output files, of urls.stream and urls.web
        self._rng = random.Random(rng_seed)
        self._lock = threading.Lock()
        self._predictions: dict[str, Prediction] = {}  # in order of creation
        self._seq = 0
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
        source: InputImages | None = None,
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
        if source is not None and source.size and _keeps_shape(v, bool(source.references)):
            width, height = _images.size_like(source.size, self.image_scale)
        source_bytes = source.edit if source is not None else None
        references = source.references if source is not None else ()
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
                references,
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
            version=request.version,
        )
        with self._lock:
            self._seq += 1
            prediction.seq = self._seq
            self._predictions[prediction.id] = prediction
        return prediction

    # access ------------------------------------------------------------------------------------

    def get(self, prediction_id: str) -> Prediction | None:
        with self._lock:
            return self._predictions.get(prediction_id)

    def snapshot(self) -> dict[str, Prediction]:
        with self._lock:
            return dict(self._predictions)

    def newest_first(self) -> list[Prediction]:
        with self._lock:
            return list(reversed(self._predictions.values()))

    def run_count(self, model: str) -> int:
        return sum(1 for p in self.snapshot().values() if p.model == model)

    def wall(self, mono: float) -> float:
        """A time.monotonic() instant as wall-clock seconds."""
        return self._wall0 + (mono - self._mono0)

    def stamp(self, mono: float) -> str:
        return self._stamp(mono)

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
        as_created: bool = False,
    ) -> dict[str, Any]:
        """The prediction as the API shows it at ``now``.

        ``early_output``: a held create answered as soon as the run ended shows the output while
        still saying ``processing``, as Replicate does for models that write files.
        ``as_created``: a held create whose wait ran out: Replicate answers the prediction as
        it was created (``starting``), whatever it is doing by now.
        ``images``: the rendered outputs for data mode (rendered here when not given).
        """
        p, line = prediction, prediction.timeline()
        if as_created:
            now = min(now, p.created)
        status = p.status(now)
        if as_created and status not in TERMINAL:
            status = "starting"
        started = line.started is not None and now >= line.started and status != "starting"
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
            "version": p.version or "hidden",
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
            "source": "api",
            "urls": {
                "get": f"{self.api_base}/predictions/{p.id}",
                "cancel": f"{self.api_base}/predictions/{p.id}/cancel",
                # Served by the emulator itself, like stream.replicate.com's /v1/files/ URLs.
                "stream": f"{self.file_base}{STREAM_PATH}{p.id}",
                "web": f"{self.file_base}{WEB_PATH}{p.id}",
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


def _keeps_shape(validated: BaseModel, references: bool = False) -> bool:
    # Kontext's "match_input_image", and image-to-image models, which have no aspect of their own;
    # with reference images only "match_input_image" follows the first one.
    aspect = getattr(validated, "aspect_ratio", None)
    if aspect == "match_input_image":
        return True
    return not references and getattr(validated, "image", None) is not None


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
