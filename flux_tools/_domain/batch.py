"""Batches as data: rows, the ledger's events folded into each row's state, and the report.

No I/O here: the ledger file is :mod:`flux_tools._drivers.ledger`, the run that sends rows is
:mod:`flux_tools._drivers.batch`, the ``flux-tools batch`` command is :mod:`flux_tools.cli.batch`.
See the latter two for what a batch promises (a rerun never pays twice for a row).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .._base.errors import FluxAPIError, FluxConnectionError, FluxError, FluxInputError
from .._base.media import MAX_NAME_CHARS, output_names, safe_name
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
    #: The file name (stem) of the row's image(s), from its ``name`` field or ``--name``:
    #: made safe and unique among the rows (:func:`assign_names`); None: the prediction id.
    name: str | None = None

    @property
    def input_hash(self) -> str:
        return input_hash(self.model, self.input)


def _canonical(model: str, payload: Mapping[str, Any]) -> str:
    return json.dumps([model, payload], sort_keys=True, separators=(",", ":"), default=str)


def input_hash(model: str, payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(model, payload).encode()).hexdigest()[:32]


def _csv_kinds(prop: Mapping[str, Any]) -> set[Any]:
    """The JSON types a property takes (for reading its CSV cells)."""
    options = [prop, *prop.get("anyOf", [])]
    return {o.get("type") for o in options} - {None, "null"}


def _coerce_csv(value: str, kinds: set[Any]) -> Any:
    """A CSV cell as the schema's type: integer, number, boolean, else the text."""
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
    name_template: str | None = None,
) -> list[BatchRow]:
    """Validate every row before anything is sent; one error lists every bad row.

    A row's ``name`` field (or ``name_template``, e.g. ``{sku}-{seed}``, filled with the row's
    fields) names its files; it is not sent, nor are the fields only the template uses (a
    column the model does not take, such as ``sku``)."""
    rows: list[BatchRow] = []
    problems: list[str] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    used = template_fields(name_template) if name_template else set()
    kinds_of: dict[str, dict[str, set[Any]]] = {}  # per model, per field: once, not per cell
    for number, record, from_csv in records:
        fields = dict(record)
        row_model = fields.pop("model", None) or model
        raw_name = fields.pop(NAME_FIELD, None)
        try:
            row_model = normalize_model_name(str(row_model))
        except ValueError as exc:
            problems.append(f"- row {number}: model: {exc}")
            continue
        schema = schema_of(row_model)
        props = (schema or {}).get("properties", {})
        if from_csv and row_model not in kinds_of:
            kinds_of[row_model] = {k: _csv_kinds(v) for k, v in props.items()}
        if name_template:
            try:
                raw_name = name_template.format_map({"row": number, **dict(record)})
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                problem = f"--name {name_template!r} cannot be filled: {type(exc).__name__} {exc}"
                problems.append(f"- row {number}: name: {problem}")
                errors.append({"field": "name", "problem": problem, "allowed": None, "row": number})
                continue
            if schema is not None:  # the template's own columns: not for the API
                fields = {k: v for k, v in fields.items() if k not in used or k in props}
        if from_csv:
            kinds = kinds_of[row_model]
            fields = {k: _coerce_csv(v, kinds.get(k, set())) for k, v in fields.items()}
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
        name = None if raw_name is None or raw_name == "" else str(raw_name)
        rows.append(BatchRow(number, row_model, payload, f"{digest}-{repeat}", name))
    if problems:
        raise FluxInputError(
            "Invalid batch; nothing was sent:\n"
            + "\n".join(problems[:50])
            + (f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""),
            errors,
        )
    return assign_names(rows)


#: The field of a row that names its files (never sent to the API).
NAME_FIELD = "name"


def template_fields(template: str) -> set[str]:
    """The row fields a ``--name`` template uses (``{sku}-{seed}`` -> sku, seed)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise FluxInputError(f"--name {template!r} is not a template: {exc}") from None
    names = {f.split(".")[0].split("[")[0] for _, f, _, _ in parsed if f}
    if not names:
        raise FluxInputError(
            f"--name {template!r} uses no field: every row would get the same name. "
            "Use the row's fields, e.g. {sku}-{seed}, or {row}."
        )
    if "" in names or any(n.isdigit() for n in names):
        raise FluxInputError(f"--name {template!r}: name the fields, e.g. {{sku}}-{{seed}}")
    return names


def _outputs_asked(row: BatchRow) -> int:
    count = row.input.get("num_outputs", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def assign_names(rows: Sequence[BatchRow]) -> list[BatchRow]:
    """Each named row's file stem: its name made safe (:func:`safe_name`), then made unique
    among the rows in file order (``-2``, ``-3``... on a clash, case ignored, the names of a
    row's several outputs included): the same file gives the same names on every run."""
    taken: set[str] = set()
    named: list[BatchRow] = []
    for row in rows:
        stem = safe_name(row.name) if row.name is not None else None
        if stem is None:
            named.append(row if row.name is None else replace(row, name=None))
            continue
        count = _outputs_asked(row)
        candidate, n = stem, 1
        while any(s.casefold() in taken for s in output_names(candidate, count)):
            n += 1
            suffix = f"-{n}"
            candidate = stem[: MAX_NAME_CHARS - len(suffix)] + suffix
        taken.update(s.casefold() for s in output_names(candidate, count))
        named.append(replace(row, name=candidate))
    return named


# -- the ledger's events, folded ------------------------------------------------------------------


@dataclass
class RowState:
    """What the ledger says of one row, its events folded."""

    #: The prediction the row waits for: created, and not known to be over. Never forgotten:
    #: a failure to read it keeps it; only its end without an image (failed, canceled,
    #: aborted, or its outputs deleted) lets the row be created again.
    prediction_id: str | None = None
    #: Every prediction id this row ever had, oldest first (each one may be billed).
    predictions: list[str] = field(default_factory=list)
    #: Of ``predictions``: how each one that is over without an image ended.
    ended: dict[str, str] = field(default_factory=dict)
    #: An intent with no answer after it: the create may or may not have reached the API.
    unanswered: bool = False
    intent_at: datetime | None = None
    #: Where the last intent is in the ledger (events are numbered as they are read).
    intent_seq: int | None = None
    #: The estimated cost of one create of this row (USD), as the intent recorded it.
    estimate: float | None = None
    saved: bool = False
    files: list[str] = field(default_factory=list)
    #: Files this row's saves wrote or were about to write (names it may replace on a rerun).
    owned_files: set[str] = field(default_factory=set)
    cost: float | None = None
    error: str | None = None
    unresolved: bool = False

    @property
    def waiting(self) -> str | None:
        """The prediction to wait for (or download), unless it is over without an image."""
        pid = self.prediction_id
        return pid if pid is not None and pid not in self.ended and not self.saved else None


#: What a damaged line may still show: a prediction id, a row key.
_ID_IN_TEXT = re.compile(r'"prediction_id"\s*:\s*"([^"\\\x00-\x1f]{1,200})"')
_KEY_IN_TEXT = re.compile(r'"key"\s*:\s*"([0-9a-f]{32}-[0-9]{1,9})"')
_EVENT_START = re.compile(r'\{\s*"event"')


class LedgerState:
    """What a batch's ledger says: each row's events folded, in the order they were written.

    Events: ``intent`` (the create is about to be sent), ``created`` (the API answered with a
    prediction id), ``naming`` (the files a save is about to write), ``saved`` (files on disk),
    ``failed``, ``canceled``, ``unsent`` (a create the API certainly did not accept: nothing
    paid), ``seen`` (a prediction id read in a damaged line: the row's, not resolved further).
    """

    def __init__(self) -> None:
        self.states: dict[str, RowState] = {}
        #: Prediction ids some row of this ledger owns.
        self.claimed: set[str] = set()
        #: Prediction ids read in damaged lines that name no row: never forgotten, matched
        #: to the rows they belong to (by their input) when a rerun can read them.
        self.orphans: list[str] = []
        #: Lines that could not be read whole (a torn write, NUL padding after a power loss).
        self.damaged = 0
        #: Each created prediction, with the position of its ``created`` event.
        self.created_at_seq: dict[str, int] = {}
        self._seq = 0

    @property
    def spent(self) -> float:
        """USD of the images saved so far."""
        return sum(s.cost or 0.0 for s in self.states.values() if s.saved)

    def committed(self, estimate_of: Callable[[str], float | None] = lambda key: None) -> float:
        """USD this batch may already owe: every prediction it created (saved at its cost, the
        others at their estimate) but those that ended ``aborted`` (not billed), and every
        create whose answer never came (it may exist). ``estimate_of(key)``: a row's estimate
        when the ledger recorded none."""
        total = 0.0
        for key, state in self.states.items():
            each = state.estimate if state.estimate is not None else estimate_of(key)
            for pid in state.predictions:
                if state.ended.get(pid) == "aborted":
                    continue
                if state.saved and pid == state.prediction_id and state.cost is not None:
                    total += state.cost
                else:
                    total += each or 0.0
            if state.unanswered:
                total += each or 0.0
        return round(total, 6)

    def load(self, data: bytes) -> None:
        """Fold every event of a ledger file's bytes. A line that is not whole JSON (a torn
        write, events glued to it, NUL padding) is read for what it still holds: whole events
        glued after its start are folded, and any prediction id readable in it is kept
        (``seen``: the row's, or an orphan when no row is readable)."""
        for raw in data.split(b"\n"):
            if not raw.strip(b" \t\r\0"):
                continue
            line = raw.decode("utf-8", "replace")
            try:
                event = json.loads(line)
            except ValueError:
                self.damaged += 1
                self._salvage(line)
                continue
            if isinstance(event, dict):
                self.fold(event)

    def _salvage(self, line: str) -> None:
        decoder = json.JSONDecoder()
        folded: set[str] = set()
        for match in _EVENT_START.finditer(line):
            try:
                event, _ = decoder.raw_decode(line, match.start())
            except ValueError:
                continue
            if isinstance(event, dict):
                self.fold(event)
                if isinstance(event.get("prediction_id"), str):
                    folded.add(event["prediction_id"])
        keys = [(m.start(), m.group(1)) for m in _KEY_IN_TEXT.finditer(line)]
        for match in _ID_IN_TEXT.finditer(line):
            pid = match.group(1)
            if pid in folded:
                continue
            owner = [key for at, key in keys if at < match.start()]
            if owner:
                self.fold({"event": "seen", "key": owner[-1], "prediction_id": pid})
            elif pid not in self.claimed and pid not in self.orphans:
                self.orphans.append(pid)

    def fold(self, event: Mapping[str, Any]) -> None:
        """Apply one event (a dict with at least ``key`` and ``event``)."""
        if not isinstance(event.get("key"), str):
            return
        self._seq += 1
        state = self.states.setdefault(str(event["key"]), RowState())
        kind = event.get("event")
        pid = event.get("prediction_id")
        pid = pid if isinstance(pid, str) and pid else None
        if kind == "intent":
            # A new create: the row's earlier predictions stay in ``predictions``.
            state.prediction_id, state.unanswered, state.saved = None, True, False
            state.unresolved = False
            state.intent_at = _parse_time(event.get("at"))
            state.intent_seq = self._seq
            estimate = event.get("estimate")
            if isinstance(estimate, int | float) and not isinstance(estimate, bool):
                state.estimate = float(estimate)
        elif kind in ("created", "seen") and pid is not None:
            if kind == "seen" and (state.saved or state.prediction_id is not None):
                self._remember(state, pid)
                return
            state.prediction_id, state.unanswered, state.unresolved = pid, False, False
            self._remember(state, pid)
            self.created_at_seq.setdefault(pid, self._seq)
        elif kind == "unsent":
            state.unanswered = state.unresolved = False
        elif kind == "naming":
            state.owned_files.update(str(f) for f in event.get("files", []) if isinstance(f, str))
        elif kind == "saved":
            state.saved, state.unanswered, state.unresolved = True, False, False
            state.files = [str(f) for f in event.get("files", []) if isinstance(f, str)]
            state.owned_files.update(state.files)
            cost = event.get("cost")
            state.cost = float(cost) if isinstance(cost, int | float) else None
            if pid is not None:
                state.prediction_id = pid
                self._remember(state, pid)
        elif kind in ("failed", "canceled"):
            state.error = str(event.get("error") or kind)
            if event.get("maybe_created") is False:
                state.unanswered = False
            state.unresolved = bool(event.get("unresolved"))
            ended = event.get("ended")
            if pid is not None and isinstance(ended, str):
                state.ended[pid] = ended
            if pid is not None:
                self._remember(state, pid)

    def _remember(self, state: RowState, pid: str) -> None:
        if pid not in state.predictions:
            state.predictions.append(pid)
        self.claimed.add(pid)
        if pid in self.orphans:
            self.orphans.remove(pid)


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


RowStatus = Literal["saved", "skipped", "failed", "refused", "unresolved", "canceled", "pending"]


@dataclass
class RowOutcome:
    row: int
    key: str
    status: RowStatus
    prediction_id: str | None = None
    files: list[str] = field(default_factory=list)
    cost: float | None = None
    error: str | None = None
    #: The stem the row's files are named by (None: the prediction id).
    name: str | None = None


@dataclass
class BatchReport:
    """What a batch did: the counts, and each row's outcome (by row number)."""

    status: BatchStatus
    rows: list[RowOutcome]
    ledger: Path
    interrupted: bool = False
    #: Prediction ids read in damaged ledger lines that no row could be matched with: they may
    #: be billed; look them up.
    unmatched: list[str] = field(default_factory=list)

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
            **({"unmatched": self.unmatched} if self.unmatched else {}),
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


def never_sent(
    state: RowState, listed: Iterable[Prediction], created_at_seq: Mapping[str, int]
) -> bool:
    """Whether a *complete* listing of the account's predictions that holds no match for the
    row proves that its unanswered create never reached the API: it must reach back past the
    intent, i.e. hold a prediction created before it (by the API's clock, or by the ledger's
    order: one whose ``created`` event came before the intent). An empty listing, or one of
    predictions all newer than the intent, proves nothing (a gateway that lists only a few, or
    none, answers just that)."""
    for prediction in listed:
        seq = created_at_seq.get(prediction.id)
        if seq is not None and state.intent_seq is not None and seq < state.intent_seq:
            return True
        created = prediction.created_at
        if created is not None and state.intent_at is not None:
            created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
            if created < state.intent_at:
                return True
    return False


def maybe_created(exc: FluxError) -> bool:
    """Whether a failed create may have made a prediction (and may be billed)."""
    if isinstance(exc, FluxConnectionError):
        return bool(exc.maybe_created)
    if isinstance(exc, FluxAPIError):
        return getattr(exc, "created", None) is not False
    return False


__all__ = [
    "NAME_FIELD",
    "BatchReport",
    "BatchRow",
    "BatchStatus",
    "LedgerState",
    "RowOutcome",
    "RowState",
    "RowStatus",
    "assign_names",
    "input_hash",
    "matches",
    "maybe_created",
    "never_sent",
    "prepare_rows",
    "template_fields",
]
