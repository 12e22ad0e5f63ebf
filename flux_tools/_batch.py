"""Many generations from a file, within the account's limits, never paid twice: batches that resume.

``flux-tools batch rows.jsonl --out DIR`` (or CSV), and from Python :func:`generate_many` (a
:class:`~flux_tools.FluxClient`) or :func:`agenerate_many` (an
:class:`~flux_tools.AsyncFluxClient`). One generation per row; a row holds any of the model's
input fields, and optionally ``model``.

The ledger (``DIR/flux-batch.jsonl``) is written as the batch goes, one JSON line per event,
each flushed and fsynced before the next step:

    intent   the create is about to be sent (row key, model, hash of the exact input, time)
    created  the API answered with a prediction id
    saved    the files are on disk (their paths, the cost)
    failed   what went wrong (``stage``: create, prediction or download)
    unsent   a create the API certainly did not accept (a 4xx, a refused budget): nothing paid

A rerun folds the ledger per row and resumes: a saved row whose files exist is skipped; a row
with a prediction id is waited for (or downloaded) under that id, never created again, and
created anew only if that prediction ended without an image; a row that never got as far as an
intent is created. The one ambiguous case is an ``intent`` with no answer after it (the process
died while the create was in flight): the account's recent predictions are listed
(``GET /predictions``, newest first, back to a little before the intent) and the row adopts the
prediction of the same model whose input is exactly the row's (nobody else's claim on it in the
ledger). If none matches, the create never reached the API and is sent. If the API cannot list
predictions, the row is reported as unresolved and NOT sent again (its image may exist and be
billed): ``--recreate-unresolved`` sends it anyway.

Ctrl-C cancels the running predictions upstream (the client's owner logic) and leaves the
ledger consistent: every line is whole (a torn last line, from a kill mid-write, is ignored).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import anyio
from pydantic import BaseModel

from ._exceptions import (
    BudgetExceeded,
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
)
from ._inputs import IMAGE_URI_PREFIXES
from ._prediction import Prediction
from ._pricing import Budget
from ._registry import normalize_model_name
from ._requests import Call, Flow

if TYPE_CHECKING:
    from ._client import AsyncFluxClient, FluxClient

LEDGER_NAME = "flux-batch.jsonl"
DEFAULT_CONCURRENCY = 32
#: How far before the earliest unanswered intent the account's predictions are searched: the
#: server's clock and ours may differ a little.
CLOCK_SKEW = timedelta(minutes=5)
#: Pages of ``GET /predictions`` read at most when resolving unanswered intents.
MAX_LIST_PAGES = 100

Stage = Literal["create", "prediction", "download"]


# -- rows ----------------------------------------------------------------------------------------


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


def _raw_rows(path: Path) -> list[tuple[int, dict[str, Any], bool]]:
    """(row number, fields, from CSV) of a JSONL or CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise FluxInputError(f"Cannot read the batch file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise FluxInputError(f"The batch file {path} is not UTF-8 text") from None
    is_csv = path.suffix.lower() in (".csv", ".tsv")
    rows: list[tuple[int, dict[str, Any], bool]] = []
    if is_csv:
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix == ".tsv" else ",")
        for number, record in enumerate(reader, start=1):
            fields = {
                str(k).strip(): v
                for k, v in record.items()
                if k is not None and v is not None and v.strip() != ""
            }
            if fields:
                rows.append((number, fields, True))
        return rows
    number = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        number += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FluxInputError(
                f"Invalid batch file {path}, line {line_no}: not JSON ({exc.msg}); each line "
                'must be one JSON object such as {"prompt": "a red fox"}'
            ) from None
        if not isinstance(record, dict):
            raise FluxInputError(
                f"Invalid batch file {path}, line {line_no}: a JSON object is needed, got "
                f"{type(record).__name__}"
            )
        rows.append((number, record, False))
    return rows


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


# -- the ledger ----------------------------------------------------------------------------------


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


class Ledger:
    """The append-only JSONL record of a batch (thread-safe; each line fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.states: dict[str, RowState] = {}
        self.claimed: set[str] = set()
        self.spent_before = 0.0
        self._load()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open: appended to)
        try:  # one run at a time per folder: two would both create the unfinished rows
            import fcntl

            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            self._handle.close()
            raise FluxError(
                f"Another batch is running with the ledger {path}: wait for it to end (or stop "
                "it) before running this one on the same folder."
            ) from None

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise FluxError(f"Cannot read the batch ledger {self.path}: {exc}") from None
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-write: the step it began is redone
            if isinstance(event, dict) and isinstance(event.get("key"), str):
                self._fold(event)
        self.spent_before = sum(s.cost or 0.0 for s in self.states.values() if s.saved)

    def _fold(self, event: Mapping[str, Any]) -> None:
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

    def record(self, event: str, row: BatchRow, **data: Any) -> None:
        line = {
            "event": event,
            "key": row.key,
            "row": row.number,
            "at": datetime.now(timezone.utc).isoformat(),
            **data,
        }
        with self._lock:
            self._fold(line)
            self._handle.write(json.dumps(line, default=str) + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# -- progress ------------------------------------------------------------------------------------


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


class ProgressBar:
    """A bar redrawn in place on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO, *, every: float = 5.0, width: int = 28) -> None:
        self._stream, self._every, self._width = stream, every, width
        self._tty = stream.isatty()
        self._last = -math.inf
        self._last_line = ""

    def __call__(self, status: BatchStatus) -> None:
        now = time.monotonic()
        if self._tty:
            if now - self._last < 0.1 and status.finished < status.total:
                return
            fraction = status.finished / status.total if status.total else 1.0
            filled = int(fraction * self._width)
            bar = "█" * filled + "░" * (self._width - filled)
            eta = ""
            fresh = status.finished - status.skipped
            if fresh > 0 and status.finished < status.total:
                rate = fresh / max(1e-6, now - status.started)
                eta = f"  ETA {_duration((status.total - status.finished) / rate)}"
            self._stream.write(f"\r\033[K{bar} {status.line()}{eta}")
            self._stream.flush()
            self._last = now
            return
        line = status.line()
        if line != self._last_line and (
            now - self._last >= self._every or status.finished == status.total
        ):
            print(f"batch: {line}", file=self._stream, flush=True)
            self._last, self._last_line = now, line

    def done(self) -> None:
        if self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# -- the run -------------------------------------------------------------------------------------


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


def _list_flow(client: AsyncFluxClient, after: datetime) -> Flow[list[Prediction]]:
    """The account's predictions created after ``after``, newest first (all pages)."""
    flows = client._flows
    stamp = after.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    url: str | None = f"{flows.requests.base_url}/predictions?created_after={stamp}"
    found: list[Prediction] = []
    for _ in range(MAX_LIST_PAGES):
        if url is None:
            break
        reply = yield from flows.requests.send(Call("GET", url, "get"), deadline=None)
        try:
            page = json.loads(reply.body)
        except ValueError:
            raise FluxAPIError(
                "GET /predictions answered with something that is not a list of predictions",
                status=reply.status,
            ) from None
        results = page.get("results") if isinstance(page, dict) else None
        if not isinstance(results, list):
            raise FluxAPIError("GET /predictions answered without results", status=reply.status)
        oldest: datetime | None = None
        for item in results:
            try:
                prediction = Prediction.model_validate(item)
            except ValueError:
                continue
            found.append(prediction)
            if prediction.created_at is not None:
                created = prediction.created_at
                created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
                oldest = created if oldest is None else min(oldest, created)
        if oldest is not None and oldest < after:
            break
        advertised = page.get("next")
        # Followed only on the configured origin (the token goes nowhere else).
        url = (
            (flows.requests.follow(advertised, "") or None) if isinstance(advertised, str) else None
        )
    return found


def _matches(row: BatchRow, prediction: Prediction) -> bool:
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


class _Batch:
    """One run of a batch through an async client."""

    def __init__(
        self,
        client: AsyncFluxClient,
        rows: Sequence[BatchRow],
        out: Path,
        *,
        concurrency: int,
        timeout: float | None,
        budget: float | None,
        image_dirs: Sequence[Path],
        on_progress: Callable[[BatchStatus], Any] | None,
        recreate_unresolved: bool,
    ) -> None:
        if concurrency < 1:
            raise FluxInputError("concurrency must be at least 1")
        self.client, self.rows, self.out = client, rows, out
        self.concurrency, self.timeout = concurrency, timeout
        self.image_dirs = list(image_dirs)
        self.on_progress = on_progress
        self.recreate_unresolved = recreate_unresolved
        self.ledger = Ledger(out / LEDGER_NAME)
        self.budget = Budget(budget, spent=self.ledger.spent_before, name="the batch's --budget")
        self.status = BatchStatus(total=len(rows), spent=self.ledger.spent_before)
        self.outcomes: dict[str, RowOutcome] = {}

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.status)

    def _finish(self, outcome: RowOutcome) -> None:
        self.outcomes[outcome.key] = outcome
        status = self.status
        if outcome.status in ("saved", "skipped"):
            status.done += 1
            status.skipped += outcome.status == "skipped"
        elif outcome.status == "failed":
            status.failed += 1
        elif outcome.status == "refused":
            status.refused += 1
        elif outcome.status == "unresolved":
            status.unresolved += 1
        self._progress()

    async def run(self) -> BatchReport:
        interrupted = False
        try:
            pending = self._skip_finished()
            await self._resolve_unanswered(pending)
            self._progress()
            limiter = anyio.CapacityLimiter(self.concurrency)
            async with anyio.create_task_group() as group:
                for row in pending:
                    group.start_soon(self._row, row, limiter)
        except BaseException as exc:
            interrupted = not isinstance(exc, Exception)  # Ctrl-C, a cancellation
            raise
        finally:
            self.ledger.close()
            self.report = BatchReport(
                self.status, list(self.outcomes.values()), self.ledger.path, interrupted
            )
        return self.report

    def _skip_finished(self) -> list[BatchRow]:
        pending = []
        for row in self.rows:
            state = self.ledger.states.get(row.key)
            if state and state.saved and state.files and all(Path(f).exists() for f in state.files):
                self._finish(
                    RowOutcome(
                        row.number, row.key, "skipped", state.prediction_id, state.files, state.cost
                    )
                )
            else:
                pending.append(row)
        return pending

    async def _resolve_unanswered(self, pending: Sequence[BatchRow]) -> None:
        unanswered = [r for r in pending if (s := self.ledger.states.get(r.key)) and s.unanswered]
        if not unanswered:
            return
        times = [s.intent_at for r in unanswered if (s := self.ledger.states[r.key]).intent_at]
        after = (min(times) if times else datetime.now(timezone.utc)) - CLOCK_SKEW
        try:
            listed = await self.client._run(_list_flow(self.client, after))
        except FluxError as exc:
            for row in unanswered:
                if self.recreate_unresolved:
                    self.ledger.record("unsent", row, note="recreated: --recreate-unresolved")
                    continue
                error = (
                    "the create was sent but its answer never came back, and the account's "
                    f"predictions could not be listed to find it ({exc}); it may exist and be "
                    "billed. Check your recent predictions, or rerun with --recreate-unresolved."
                )
                self.ledger.record("failed", row, stage="create", error=error, unresolved=True)
                self._finish(RowOutcome(row.number, row.key, "unresolved", error=error))
            return
        for row in unanswered:
            match = next(
                (
                    p
                    for p in reversed(listed)  # oldest first: the first create of equal rows
                    if p.id not in self.ledger.claimed and _matches(row, p)
                ),
                None,
            )
            if match is None:
                # Listed back past the intent and not there: the create never reached the API.
                self.ledger.record("unsent", row, note="not among the account's predictions")
            else:
                self.ledger.record("created", row, prediction_id=match.id, recovered=True)
                self.status.recovered += 1

    async def _row(self, row: BatchRow, limiter: anyio.CapacityLimiter) -> None:
        if row.key in self.outcomes:  # unresolved
            return
        async with limiter:
            self.status.running += 1
            self._progress()
            try:
                outcome = await self._generate(row)
            except anyio.get_cancelled_exc_class():
                state = self.ledger.states.get(row.key)
                pid = state.prediction_id if state else None
                # A plain write: nothing awaited, so the cancellation cannot cut it short.
                self.ledger.record("canceled", row, prediction_id=pid, error="interrupted")
                self.status.running -= 1
                raise
            self.status.running -= 1
            self._finish(outcome)

    async def _generate(self, row: BatchRow) -> RowOutcome:
        client = self.client
        state = self.ledger.states.get(row.key)
        pid = state.prediction_id if state else None
        if pid is not None:  # created by an earlier run (or found): wait for it, never recreate
            outcome = await self._finish_prediction(row, pid, resumed=True)
            if outcome is not None:
                return outcome
        estimate = client._flows.estimate(row.model, row.input)
        try:
            hold = self.budget.reserve(row.model, estimate) if self.budget.active else None
        except BudgetExceeded as exc:
            return RowOutcome(row.number, row.key, "refused", error=str(exc))
        self.ledger.record("intent", row, model=row.model, input_hash=row.input_hash)
        try:
            prediction = await client.create(
                row.input,
                model=row.model,
                image_dirs=self.image_dirs,
                cancel_after=(self.timeout or client.timeout) + 10,
            )
        except FluxError as exc:
            maybe = _maybe_created(exc)
            if not maybe:
                self.budget.release(hold)
            kind: Literal["refused", "failed"] = (
                "refused" if isinstance(exc, BudgetExceeded) else "failed"
            )
            if maybe:
                self.ledger.record(
                    "failed", row, stage="create", error=str(exc), maybe_created=True
                )
            else:
                self.ledger.record("unsent", row, error=str(exc))
            return RowOutcome(row.number, row.key, kind, error=str(exc))
        self.status.created += 1
        self.ledger.record("created", row, prediction_id=prediction.id)
        outcome = await self._finish_prediction(row, prediction, resumed=False)
        assert outcome is not None
        return outcome

    async def _finish_prediction(
        self, row: BatchRow, prediction: Prediction | str, *, resumed: bool
    ) -> RowOutcome | None:
        """Wait, then save. None (only when ``resumed``): that prediction ended without an
        image, so the row is to be created again."""
        client = self.client
        pid = prediction if isinstance(prediction, str) else prediction.id
        try:
            final = await client.wait(prediction, timeout=self.timeout)
            result = client.result(final)
        except FluxError as exc:
            if resumed and not isinstance(exc, FluxConnectionError):
                self.ledger.record(
                    "failed", row, prediction_id=pid, stage="prediction", error=str(exc)
                )
                return None
            self.ledger.record("failed", row, prediction_id=pid, stage="prediction", error=str(exc))
            return RowOutcome(row.number, row.key, "failed", pid, error=str(exc))
        try:
            files = await client.save(result, self.out)
        except FluxError as exc:
            self.ledger.record("failed", row, prediction_id=pid, stage="download", error=str(exc))
            return RowOutcome(row.number, row.key, "failed", pid, error=str(exc))
        names = [str(f) for f in files]
        self.ledger.record("saved", row, prediction_id=pid, files=names, cost=result.cost)
        self.status.spent += result.cost or 0.0
        return RowOutcome(row.number, row.key, "saved", pid, names, result.cost)


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _maybe_created(exc: FluxError) -> bool:
    """Whether a failed create may have made a prediction (and may be billed)."""
    if isinstance(exc, FluxConnectionError):
        return bool(exc.maybe_created)
    if isinstance(exc, FluxAPIError):
        return getattr(exc, "created", None) is not False
    return False


def load_rows(
    client: FluxClient | AsyncFluxClient,
    source: str | Path | Iterable[Mapping[str, Any]],
    *,
    model: str | None = None,
) -> list[BatchRow]:
    """The rows of a JSONL/CSV file, or of dicts, validated with each row's model's schema."""
    if isinstance(source, str | Path):
        records: list[tuple[int, Mapping[str, Any], bool]] = list(_raw_rows(Path(source)))
    else:
        records = [(i, dict(r), False) for i, r in enumerate(source, start=1)]
    flows = client._flows

    def validate(fields: Mapping[str, Any], name: str) -> BaseModel | dict[str, Any]:
        return flows.payloads.validate(fields, {}, name)

    def schema_of(name: str) -> dict[str, Any] | None:
        cls = flows.payloads.input_model(name)
        return cls.model_json_schema() if cls is not None else None

    return prepare_rows(
        records, model=model or client.model, validate=validate, schema_of=schema_of
    )


async def agenerate_many(
    client: AsyncFluxClient,
    rows: str | Path | Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    model: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    budget: float | None = None,
    on_progress: Callable[[BatchStatus], Any] | None = None,
    recreate_unresolved: bool = False,
) -> BatchReport:
    """Generate one image set per row into ``out``, resuming from ``out``'s ledger.

    ``rows``: a JSONL or CSV file, or dicts of input fields (each may name its ``model``).
    ``budget``: USD for the whole batch, earlier runs' images included (the client's own
    ``FLUX_BUDGET_USD`` holds too). Returns a :class:`BatchReport`; raises
    :class:`~flux_tools.FluxInputError` (nothing sent) if any row is invalid.
    """
    source_dir = _resolved(rows).parent if isinstance(rows, str | Path) else None
    prepared = load_rows(client, rows, model=model)
    batch = _Batch(
        client,
        prepared,
        _resolved(out),
        concurrency=concurrency,
        timeout=timeout,
        budget=budget,
        # Images named in the batch file may be read from the file's own folder.
        image_dirs=[source_dir] if source_dir else [],
        on_progress=on_progress,
        recreate_unresolved=recreate_unresolved,
    )
    return await batch.run()


def generate_many(
    client: FluxClient,
    rows: str | Path | Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    model: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    budget: float | None = None,
    on_progress: Callable[[BatchStatus], Any] | None = None,
    recreate_unresolved: bool = False,
) -> BatchReport:
    """:func:`agenerate_many` for a blocking :class:`~flux_tools.FluxClient`: the same batch,
    run on an event loop of its own through an async twin of ``client`` that shares its
    limiter, budget, prices and learned durations."""
    from ._client import AsyncFluxClient

    rows = list(rows) if not isinstance(rows, str | Path) else rows

    async def main() -> BatchReport:
        flows = client._flows
        async with AsyncFluxClient(
            settings=client.settings,
            retry=flows.requests.retry,
            poll=flows.schedule,
            limiter=flows.limiter,
            budget=flows.budget,
            prices=flows.prices,
            durations=flows.durations,
        ) as twin:
            return await agenerate_many(
                twin,
                rows,
                out,
                model=model,
                concurrency=concurrency,
                timeout=timeout,
                budget=budget,
                on_progress=on_progress,
                recreate_unresolved=recreate_unresolved,
            )

    return anyio.run(main)


# -- the command ---------------------------------------------------------------------------------


def add_batch_parser(commands: Any, model: str) -> Any:
    """The ``batch`` subcommand's arguments (cli.py adds it and calls :func:`run_batch_command`)."""
    batch = commands.add_parser(
        "batch",
        help="generate one image per row of a JSONL or CSV file, resumably",
        description="Generate one image (set) per row of FILE (JSON lines or CSV with a header; "
        "any of the model's input fields as columns, and optionally model) into DIR. The "
        f"ledger DIR/{LEDGER_NAME} records every step: run the same command again after a "
        "crash or Ctrl-C and it resumes, never paying twice for a row.",
    )
    batch.add_argument("file", metavar="FILE", help="rows: .jsonl (one JSON object a line) or .csv")
    batch.add_argument("--out", required=True, metavar="DIR", help="where images and ledger go")
    batch.add_argument("--model", default=model, help="model of rows without one (%(default)s)")
    batch.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="generations in flight at most (default: %(default)s); the account's rate limits "
        "hold whatever the number",
    )
    batch.add_argument(
        "--budget", type=float, default=None, metavar="USD", help="most the whole batch may cost"
    )
    batch.add_argument("--timeout", type=float, default=300.0, help="seconds per generation")
    batch.add_argument("--dry-run", action="store_true", help="check the rows, print the cost")
    batch.add_argument("--json", action="store_true", help="print the report as JSON")
    batch.add_argument(
        "--recreate-unresolved",
        action="store_true",
        help="send again a create whose answer never came when the account's predictions "
        "cannot be listed (it may be paid twice)",
    )
    batch.set_defaults(handler=run_batch_command)
    return batch


def run_batch_command(args: Any, _fields: Sequence[str] = ()) -> int:
    """``flux-tools batch``: exit 0 all rows done, 1 some failed, 2 bad input, 130 Ctrl-C."""
    from ._client import AsyncFluxClient

    out, source_dir = _resolved(args.out), _resolved(args.file).parent
    bar = ProgressBar(sys.stderr)
    result: dict[str, BatchReport] = {}

    async def main() -> None:
        if args.budget is not None and args.budget < 0:
            raise FluxInputError("--budget must be an amount in USD >= 0")
        async with AsyncFluxClient(sync_wait=0, timeout=args.timeout) as client:
            prepared = load_rows(client, args.file, model=args.model)
            estimates = [client._flows.estimate(r.model, r.input) for r in prepared]
            known = sum(e for e in estimates if e is not None)
            unknown = sum(e is None for e in estimates)
            priced = f" ({unknown} rows of unknown price)" if unknown else ""
            if args.dry_run:
                print(f"{len(prepared)} rows are valid; estimated cost ${known:.2f}{priced}")
                return
            print(
                f"batch: {len(prepared)} rows, estimated ${known:.2f} in all{priced}; "
                f"ledger {out / LEDGER_NAME}",
                file=sys.stderr,
            )
            batch = _Batch(
                client,
                prepared,
                out,
                concurrency=args.concurrency,
                timeout=args.timeout,
                budget=args.budget,
                image_dirs=[source_dir],
                on_progress=bar,
                recreate_unresolved=args.recreate_unresolved,
            )
            result["batch"] = await _run_and_keep(batch, result)

    try:
        anyio.run(main)
    except FluxInputError as exc:  # rows named by number, fields by name: not as flags
        print(f"flux-tools batch: error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.done()
        report = result.get("partial")
        line = report.status.line() if report else "nothing finished"
        print(
            f"interrupted: {line}. Running predictions were canceled upstream; the ledger is "
            "consistent: run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.done()
    if args.dry_run:
        return 0
    report = result["batch"]
    if args.json:
        print(json.dumps(report.summary(), indent=2))
    else:
        for outcome in sorted(report.rows, key=lambda o: o.row):
            if outcome.status in ("failed", "refused", "unresolved"):
                print(f"row {outcome.row}: {outcome.status}: {outcome.error}", file=sys.stderr)
        status = report.status
        print(
            f"batch: {status.line()}; {status.created} predictions created by this run"
            + (f", {status.skipped} rows already done" if status.skipped else "")
            + (f", {status.recovered} recovered" if status.recovered else ""),
            file=sys.stderr,
        )
    return 0 if report.ok else 1


async def _run_and_keep(batch: _Batch, keep: dict[str, BatchReport]) -> BatchReport:
    try:
        return await batch.run()
    finally:
        if hasattr(batch, "report"):
            keep["partial"] = batch.report


__all__ = [
    "LEDGER_NAME",
    "BatchReport",
    "BatchRow",
    "BatchStatus",
    "Ledger",
    "ProgressBar",
    "agenerate_many",
    "generate_many",
    "load_rows",
]
