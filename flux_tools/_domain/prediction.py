"""The prediction object the API returns, and the result a generation hands back to callers."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from .._base.errors import FluxError

#: ``aborted`` (a deadline passed before the prediction started) is final too: a client that
#: misses it polls forever, as both official Python clients did.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


_SEED_IN_LOGS = re.compile(r"(?:using\s+)?seed[:=]\s*(-?\d+)", re.IGNORECASE)


class PredictionURLs(BaseModel):
    """The ``urls`` object. Followed only when it points at the configured API origin."""

    model_config = ConfigDict(extra="allow")

    get: str | None = None
    cancel: str | None = None
    stream: str | None = None
    web: str | None = None


class Prediction(BaseModel):
    """A prediction as the API describes it. Unknown keys are kept (``model_extra``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    model: str | None = None
    version: str | None = None
    input: dict[str, Any] | None = None
    output: Any = None
    logs: str | None = None
    error: Any = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    data_removed: bool | None = None
    urls: PredictionURLs | None = None
    metrics: dict[str, Any] | None = None

    @field_validator("created_at", "started_at", "completed_at", mode="wrap")
    @classmethod
    def _lenient_time(cls, value: Any, handler: Any) -> datetime | None:
        # A gateway's odd timestamp must not make a finished image unreadable.
        try:
            result: datetime | None = handler(value)
            return result
        except ValueError:
            return None

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)

    @property
    def output_urls(self) -> list[str]:
        """The output normalised to a list of URIs (``https:`` or ``data:``)."""
        return output_urls(self.output)

    @property
    def error_text(self) -> str | None:
        if self.error is None or self.error == "":
            return None
        return self.error if isinstance(self.error, str) else str(self.error)

    @property
    def seed(self) -> int | None:
        """The seed used: from the input when given, else from the logs ("Using seed: N")."""
        if self.input and isinstance(self.input.get("seed"), int):
            return int(self.input["seed"])
        if self.logs:
            match = _SEED_IN_LOGS.search(self.logs)
            if match:
                return int(match.group(1))
        return None

    def timings(self) -> Timings:
        return Timings.from_prediction(self)


_URI_SCHEMES = ("https://", "http://", "data:")


def output_urls(output: Any, _depth: int = 0) -> list[str]:
    """The output's URIs: ``http(s)`` URLs and ``data:`` URIs only (a ``file:`` URL, a path or
    any other text a gateway puts there is dropped, never followed)."""
    if output is None or _depth > 3:
        return []
    if isinstance(output, str):
        return [output] if output[:8].lower().startswith(_URI_SCHEMES) else []
    if isinstance(output, list | tuple):
        return [url for item in output if isinstance(item, str) for url in output_urls(item)]
    if isinstance(output, dict):  # some gateways wrap it: {"image": "..."} or {"images": [...]}
        return [url for value in output.values() for url in output_urls(value, _depth + 1)]
    return []


class Timings(BaseModel):
    """Seconds spent: waiting in the queue, running the model, and in all."""

    queued: float | None = None
    predicted: float | None = None
    total: float | None = None

    @classmethod
    def from_prediction(cls, p: Prediction) -> Timings:
        metrics = p.metrics or {}

        def span(a: datetime | None, b: datetime | None) -> float | None:
            return round((b - a).total_seconds(), 3) if a and b else None

        predicted = metrics.get("predict_time")
        total = metrics.get("total_time")
        return cls(
            queued=span(p.created_at, p.started_at),
            predicted=float(predicted)
            if isinstance(predicted, int | float)
            else span(p.started_at, p.completed_at),
            total=float(total)
            if isinstance(total, int | float)
            else span(p.created_at, p.completed_at),
        )


class GenerationResult(BaseModel):
    """What a finished generation gives back: the output URLs and everything needed to use them.

    The URLs are temporary (Replicate deletes outputs after about an hour): call :meth:`save`
    (or :meth:`asave`) to keep the files.
    """

    urls: list[str]
    prediction_id: str
    status: str
    model: str
    seed: int | None = None
    timings: Timings = Field(default_factory=Timings)
    input: dict[str, Any] = Field(default_factory=dict)
    files: list[Path] = Field(default_factory=list)
    #: Estimated cost in USD, from the model's price and this input (None: no price known).
    cost: float | None = None
    prediction: Prediction

    # Not data: how this result saves itself (set by the client that made it; a saver opens a
    # client of its own that trusts the same addresses, a loopback emulator's downloads, say).
    _saver: ResultSaver | None = PrivateAttr(default=None)

    @classmethod
    def from_prediction(
        cls, prediction: Prediction, *, model: str, status: str | None = None
    ) -> GenerationResult:
        return cls(
            urls=prediction.output_urls,
            prediction_id=prediction.id,
            status=status or prediction.status,
            model=prediction.model or model,
            seed=prediction.seed,
            timings=prediction.timings(),
            input=prediction.input or {},
            prediction=prediction,
        )

    def save(self, directory: str | Path, *, max_bytes: int | None = None) -> list[Path]:
        """Download every output into ``directory`` (created if needed); return the paths.

        A convenience that opens a client of its own for the downloads (a result holds no
        connection); ``client.save(result, directory)`` reuses the client's.
        """
        return self._saver_or_error().save(self, directory, max_bytes=max_bytes)

    async def asave(self, directory: str | Path, *, max_bytes: int | None = None) -> list[Path]:
        """Async twin of :meth:`save`."""
        return await self._saver_or_error().asave(self, directory, max_bytes=max_bytes)

    def _saver_or_error(self) -> ResultSaver:
        if self._saver is None:
            raise FluxError(
                "This result was not made by a client, so it does not know where it came from: "
                "save it with client.save(result, directory).",
                prediction_id=self.prediction_id,
            )
        return self._saver

    def summary(self) -> dict[str, Any]:
        """Plain JSON-ready data: what a tool returns as its artifact or structured content.

        ``data:`` URIs (inline outputs, uploaded input images) are shortened: megabytes of
        base64 would flood a model's context, and the files hold the bytes.
        """
        data = self.model_dump(mode="json", exclude={"prediction"})
        data["files"] = [str(p) for p in self.files]
        data["urls"] = [abbreviate(url) for url in self.urls]
        data["input"] = {key: abbreviate(value) for key, value in data["input"].items()}
        return data


class ResultSaver(Protocol):
    """How a result saves itself: the drivers' downloads, bound to the API that made it."""

    def save(
        self, result: GenerationResult, directory: str | Path, *, max_bytes: int | None = None
    ) -> list[Path]: ...

    async def asave(
        self, result: GenerationResult, directory: str | Path, *, max_bytes: int | None = None
    ) -> list[Path]: ...


def abbreviate(value: Any) -> Any:
    """A long data URI named by its header and length, without a byte of its payload:
    ``data:image/png;base64 (123456 characters)``. Anything else as it is."""
    if isinstance(value, str) and value.startswith("data:") and len(value) > 80:
        return f"{value.split(',', 1)[0]} ({len(value)} characters)"
    return value
