"""Batches as data: rows, the ledger's events folded into each row's state, and the report.

No I/O here: the ledger file is :mod:`flux_tools._drivers.ledger`, the run that sends rows is
:mod:`flux_tools._drivers.batch`, the ``flux-tools batch`` command is :mod:`flux_tools.cli.batch`.
See the latter two for what a batch promises (a rerun never pays twice for a row).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .._base.errors import FluxAPIError, FluxConnectionError, FluxError, FluxInputError
from .images import IMAGE_URI_PREFIXES
from .prediction import Prediction
from .registry import normalize_model_name

Stage = Literal["create", "prediction", "download"]


@dataclass(frozen=True)
class BatchRow:
    """One generation of the batch: its place in the file, its model and its API input."""

    number: int  #: 1-based position among the rows of the file
    model: str
    input: dict[str, Any]
    key: str  #: stable identity across runs: hash of model and input, and which repeat

    @property
    def input_hash(self) -> str:
        return input_hash(self.model, self.input)


def _canonical(model: str, payload: Mapping[str, Any]) -> str:
    return json.dumps([model, payload], sort_keys=True, separators=(",", ":"), default=str)


def input_hash(model: str, payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(model, payload).encode()).hexdigest()[:32]


def _coerce_csv(value: str, prop: Mapping[str, Any]) -> Any:
    """A CSV cell as the schema's type: integer, number, boolean, else the text."""
    options = [prop, *prop.get("anyOf", [])]
    kinds = {o.get("type") for o in options} - {None, "null"}
    text = value.strip()
    if "boolean" in kinds and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    if "integer" in kinds:
        try:
            return int(text)
        except ValueError:
            pass
    if "number" in kinds:
        try:
            return float(text)
        except ValueError:
            pass
    if "array" in kinds and text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return value


def prepare_rows(
    records: Iterable[tuple[int, Mapping[str, Any], bool]],
    *,
    model: str,
    validate: Callable[[Mapping[str, Any], str], BaseModel | dict[str, Any]],
    schema_of: Callable[[str], dict[str, Any] | None],
) -> list[BatchRow]:
    """Validate every row before anything is sent; one error lists every bad row."""
    rows: list[BatchRow] = []
    problems: list[str] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, record, from_csv in records:
        fields = dict(record)
        row_model = fields.pop("model", None) or model
        try:
            row_model = normalize_model_name(str(row_model))
        except ValueError as exc:
            problems.append(f"- row {number}: model: {exc}")
            continue
        if from_csv:
            props = (schema_of(row_model) or {}).get("properties", {})
            fields = {k: _coerce_csv(v, props.get(k, {})) for k, v in fields.items()}
        try:
            checked = validate(fields, row_model)
        except FluxInputError as exc:
            for e in exc.errors or [{"field": "input", "problem": str(exc), "allowed": None}]:
                allowed = f" (allowed: {e['allowed']})" if e.get("allowed") else ""
                problems.append(f"- row {number}: {e['field']}: {e['problem']}{allowed}")
                errors.append({**e, "row": number})
            continue
        payload = checked.to_api() if hasattr(checked, "to_api") else dict(checked)
        digest = input_hash(row_model, payload)
        repeat = seen.get(digest, 0)
        seen[digest] = repeat + 1
        rows.append(BatchRow(number, row_model, payload, f"{digest}-{repeat}"))
    if problems:
        raise FluxInputError(
            "Invalid batch; nothing was sent:\n"
            + "\n".join(problems[:50])
            + (f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""),
            errors,
        )
    return rows


# -- the ledger's events, folded ------------------------------------------------------------------


@dataclass
class RowState:
    """What the ledger says of one row, its events folded."""

    prediction_id: str | None = None
    #: An intent with no answer after it: the create may or may not have reached the API.
    unanswered: bool = False
    intent_at: datetime | None = None
    saved: bool = False
    files: list[str] = field(default_factory=list)
    cost: float | None = None
    error: str | None = None


class LedgerState:
    """What a batch's ledger says: each row's events folded, in the order they were written.

    Events: ``intent`` (the create is about to be sent), ``created`` (the API answered with a
    prediction id), ``saved`` (files on disk), ``failed``, ``canceled``, ``unsent`` (a create the
    API certainly did not accept: nothing paid).
    """

    def __init__(self) -> None:
        self.states: dict[str, RowState] = {}
        #: Prediction ids some row of this ledger owns.
        self.claimed: set[str] = set()

    @property
    def spent(self) -> float:
        """USD of the images saved so far."""
        return sum(s.cost or 0.0 for s in self.states.values() if s.saved)

    def fold(self, event: Mapping[str, Any]) -> None:
        """Apply one event (a dict with at least ``key`` and ``event``)."""
        if not isinstance(event.get("key"), str):
            return
        state = self.states.setdefault(str(event["key"]), RowState())
        kind = event.get("event")
        pid = event.get("prediction_id")
        if kind == "intent":
            state.prediction_id, state.unanswered, state.saved = None, True, False
            state.intent_at = _parse_time(event.get("at"))
        elif kind == "created" and isinstance(pid, str):
            state.prediction_id, state.unanswered = pid, False
            self.claimed.add(pid)
        elif kind == "unsent":
            state.unanswered = False
        elif kind == "saved":
            state.saved, state.unanswered = True, False
            state.files = [str(f) for f in event.get("files", []) if isinstance(f, str)]
            cost = event.get("cost")
            state.cost = float(cost) if isinstance(cost, int | float) else None
            if isinstance(pid, str):
                state.prediction_id = pid
        elif kind in ("failed", "canceled"):
            state.error = str(event.get("error") or kind)
            if event.get("maybe_created") is False:
                state.unanswered = False


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# -- progress and the report -----------------------------------------------------------------------


@dataclass
class BatchStatus:
    """Counts of a batch as it goes; what ``on_progress`` receives."""

    total: int
    done: int = 0  #: saved, in this run or an earlier one
    skipped: int = 0  #: of ``done``: finished in an earlier run
    failed: int = 0
    refused: int = 0  #: refused by a budget before sending
    unresolved: int = 0
    running: int = 0
    created: int = 0  #: predictions created by this run
    recovered: int = 0  #: unanswered creates found among the account's predictions
    spent: float = 0.0  #: estimated USD of this batch's images, earlier runs included
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.refused + self.unresolved

    def line(self) -> str:
        parts = [f"{self.done}/{self.total} done"]
        for name in ("failed", "refused", "unresolved", "running"):
            if getattr(self, name):
                parts.append(f"{getattr(self, name)} {name}")
        parts.append(f"${self.spent:.2f}")
        return ", ".join(parts)


@dataclass
class RowOutcome:
    row: int
    key: str
    status: Literal["saved", "skipped", "failed", "refused", "unresolved", "canceled"]
    prediction_id: str | None = None
    files: list[str] = field(default_factory=list)
    cost: float | None = None
    error: str | None = None


@dataclass
class BatchReport:
    """What a batch did: the counts, and each row's outcome (by row number)."""

    status: BatchStatus
    rows: list[RowOutcome]
    ledger: Path
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.status.done == self.status.total

    def summary(self) -> dict[str, Any]:
        s = self.status
        return {
            "total": s.total,
            "done": s.done,
            "skipped": s.skipped,
            "failed": s.failed,
            "refused": s.refused,
            "unresolved": s.unresolved,
            "created": s.created,
            "recovered": s.recovered,
            "cost": round(s.spent, 6),
            "ledger": str(self.ledger),
            "interrupted": self.interrupted,
            "rows": [
                {k: v for k, v in vars(o).items() if v not in (None, [])}
                for o in sorted(self.rows, key=lambda o: o.row)
            ],
        }


def matches(row: BatchRow, prediction: Prediction) -> bool:
    """The same model and exactly the row's input (local image files, sent as ``data:`` URIs,
    are compared by presence only: their bytes are not in the ledger)."""
    if prediction.model and normalize_model_name(prediction.model) != row.model:
        return False
    echoed = prediction.input
    if not isinstance(echoed, dict) or set(echoed) != set(row.input):
        return False
    for name, value in row.input.items():
        local = isinstance(value, str) and not value.startswith(IMAGE_URI_PREFIXES)
        if local and isinstance(echoed[name], str) and echoed[name].startswith("data:"):
            continue
        if json.dumps(echoed[name], sort_keys=True) != json.dumps(value, sort_keys=True):
            return False
    return True


def maybe_created(exc: FluxError) -> bool:
    """Whether a failed create may have made a prediction (and may be billed)."""
    if isinstance(exc, FluxConnectionError):
        return bool(exc.maybe_created)
    if isinstance(exc, FluxAPIError):
        return getattr(exc, "created", None) is not False
    return False


__all__ = [
    "BatchReport",
    "BatchRow",
    "BatchStatus",
    "LedgerState",
    "RowOutcome",
    "RowState",
    "input_hash",
    "matches",
    "maybe_created",
    "prepare_rows",
]
