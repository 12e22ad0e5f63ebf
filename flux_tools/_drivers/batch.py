"""Many generations from a file, within the account's limits, never paid twice: batches that resume.

``flux-tools batch rows.jsonl --out DIR`` (or CSV), and from Python :func:`generate_many` (a
:class:`~flux_tools.FluxClient`) or :func:`agenerate_many` (an
:class:`~flux_tools.AsyncFluxClient`). One generation per row; a row holds any of the model's
input fields, optionally ``model``, and optionally ``name`` (its files' name, never sent).

The ledger (``DIR/flux-batch.jsonl``) is written as the batch goes, one JSON line per event,
each written whole and fsynced before the next step:

    intent   the create is about to be sent (row key, model, hash of the exact input, estimate)
    created  the API answered with a prediction id
    naming   the named files a save is about to write
    saved    the files are on disk (their paths, the cost)
    failed   what went wrong (``stage``: create, prediction or download; ``ended``: how the
             prediction ended without an image, when it did)
    unsent   a create the API certainly did not accept (a 4xx, a refused budget): nothing paid

A rerun folds the ledger per row and resumes. A saved row whose files exist is skipped. A row
with a prediction id is waited for (or downloaded) under that id and never created again while
that prediction may still give its image: a failure to read it (a refused token, a 404 from a
wrong base URL, throttling, a 5xx, no connection) keeps the id and reports the row failed, with
what to do; only a prediction the API reports over without an image (failed, canceled, aborted,
or its outputs deleted) lets the row be created anew. A row that never got as far as an intent
is created. The one ambiguous case is an ``intent`` with no answer after it (the process died
while the create was in flight): the account's recent predictions are listed (``GET
/predictions``, newest first, back to a little before the intent) and the row adopts the
prediction of the same model whose input is exactly the row's (nobody else's claim on it in the
ledger). The row is sent again only on positive evidence that the create never arrived: a
listing read to its end that reaches back past the intent (it holds an older prediction) and
holds no match. An empty listing, one cut short, one of newer predictions only, or an API that
cannot list leaves the row unresolved and NOT sent again (its image may exist and be billed):
``--recreate-unresolved`` sends it anyway.

A budget counts what the batch already committed: the images saved, the predictions created
and not saved (resumed), and the creates that may have arrived; only then are new rows sent.

Ctrl-C cancels the running predictions upstream (the client's owner logic) and leaves the
ledger consistent. A ledger that cannot be written (a full disk) stops the sending at once; the
run ends with one line saying so. Each run writes ``DIR/flux-batch-report.csv`` (and ``.jsonl``):
one line per row (its name, files, prediction id, cost, status, error), earlier runs' included.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel

from .._base.errors import (
    AuthenticationError,
    BudgetExceeded,
    FluxAPIError,
    FluxError,
    FluxInputError,
    PredictionTimeout,
)
from .._base.files import write_text_atomic
from .._base.media import output_names
from .._domain.batch import (
    BatchReport,
    BatchRow,
    BatchStatus,
    RowOutcome,
    matches,
    maybe_created,
    never_sent,
    prepare_rows,
)
from .._domain.prediction import Prediction
from .._domain.pricing import Budget, Hold
from .._domain.registry import normalize_model_name, spec_or_none
from .._protocol.listing import PredictionList
from .client import AsyncFluxClient, FluxClient
from .ledger import LEDGER_NAME, Ledger, LedgerError

logger = logging.getLogger("flux_tools")

DEFAULT_CONCURRENCY = 32
#: How far before the earliest unanswered intent the account's predictions are searched: the
#: server's clock and ours may differ a little.
CLOCK_SKEW = timedelta(minutes=5)


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


#: Where a run reports every row: a spreadsheet opens the CSV; the JSONL is for programs.
REPORT_NAME = "flux-batch-report"
REPORT_COLUMNS = ("row", "name", "status", "files", "prediction_id", "cost", "error")
_NOTHING_BILLED = "No prediction was created: nothing was billed."


def _first_error(exc: BaseException) -> BaseException:
    """anyio wraps a task's error in an exception group: the one that matters, unwrapped (an
    interrupt first, then a FluxError, then any other)."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        inner = getattr(current, "exceptions", None)
        if isinstance(inner, tuple | list) and inner:
            pending.extend(reversed(inner))
        else:
            leaves.append(current)
    for kind in (KeyboardInterrupt, FluxError, Exception):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if leaves else exc


def _resume_advice(exc: FluxError) -> str:
    """What to do when a prediction created earlier could not be read."""
    if isinstance(exc, AuthenticationError):
        return "check FLUX_API_TOKEN (or REPLICATE_API_TOKEN), then rerun"
    if isinstance(exc, FluxAPIError) and exc.status == 404:
        return (
            "the API at FLUX_BASE_URL does not know it: if that is not the API that created it, "
            "set FLUX_BASE_URL, then rerun"
        )
    if isinstance(exc, PredictionTimeout):
        return "rerun to wait for it again" + (
            " (it was canceled upstream)" if exc.canceled else ""
        )
    return "rerun later"


def _cell(value: Any) -> str:
    """A report cell a spreadsheet shows as text (never as a formula)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


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
        self.estimates = {r.key: client.estimate(r.input, model=r.model) for r in rows}
        # What earlier runs committed: saved images, predictions not saved yet (resumed here)
        # and creates that may have arrived. New rows are sent only within what is left.
        committed = self.ledger.folded.committed(self.estimates.get)
        self.budget = Budget(budget, spent=committed, name="the batch's --budget")
        self.status = BatchStatus(total=len(rows), spent=self.ledger.spent_before)
        self.outcomes: dict[str, RowOutcome] = {}
        #: The ledger could not be written: nothing more is sent.
        self.stopped: LedgerError | None = None
        #: Prediction ids read in damaged ledger lines that match no row.
        self.unmatched: list[str] = []

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
            await self._adopt_orphans(pending)
            await self._resolve_unanswered(pending)
            self._progress()
            limiter = anyio.CapacityLimiter(self.concurrency)
            try:
                async with anyio.create_task_group() as group:
                    for row in pending:
                        group.start_soon(self._row, row, limiter)
            except BaseException as exc:  # an exception group: what is in it, unwrapped
                raise _first_error(exc) from None
        except BaseException as exc:
            interrupted = not isinstance(exc, Exception)  # Ctrl-C, a cancellation
            raise
        finally:
            self.ledger.close()
            self.report = BatchReport(
                self.status, list(self.outcomes.values()), self.ledger.path, interrupted
            )
            self.report.unmatched = list(self.unmatched)
            self._write_report()
        if self.stopped is not None:
            raise self.stopped
        return self.report

    def _skip_finished(self) -> list[BatchRow]:
        pending = []
        for row in self.rows:
            state = self.ledger.states.get(row.key)
            if state and state.saved and state.files and all(Path(f).exists() for f in state.files):
                self._finish(
                    RowOutcome(
                        row.number,
                        row.key,
                        "skipped",
                        state.prediction_id,
                        state.files,
                        state.cost,
                        name=row.name,
                    )
                )
            else:
                pending.append(row)
        return pending

    def _record(self, event: str, row: BatchRow, **data: Any) -> None:
        """Write an event; a ledger that cannot be written stops the sending (raises)."""
        try:
            self.ledger.record(event, row, **data)
        except LedgerError as exc:
            if self.stopped is None:
                self.stopped = LedgerError(
                    f"{exc} The batch stopped sending: every prediction it created is in the "
                    "ledger or among the account's predictions. Make room (or fix the folder), "
                    "then run the same command again: it resumes without paying twice."
                )
            raise

    async def _adopt_orphans(self, pending: Sequence[BatchRow]) -> None:
        """Prediction ids read in damaged ledger lines that name no row: each is the row's
        whose exact input it has (and that has no prediction of its own)."""
        for pid in list(self.ledger.folded.orphans):
            try:
                prediction = await self.client.get(pid)
            except FluxError:
                self.unmatched.append(pid)
                continue
            row = next(
                (
                    r
                    for r in pending
                    if (s := self.ledger.states.get(r.key)) is not None
                    and s.prediction_id is None
                    and not s.saved
                    and matches(r, prediction)
                ),
                None,
            )
            if row is None:
                self.unmatched.append(pid)
                continue
            self._record("created", row, prediction_id=pid, recovered=True)
            self.status.recovered += 1

    async def _resolve_unanswered(self, pending: Sequence[BatchRow]) -> None:
        unanswered = [
            r
            for r in pending
            if (s := self.ledger.states.get(r.key)) and s.unanswered and s.prediction_id is None
        ]
        if not unanswered:
            return
        times = [s.intent_at for r in unanswered if (s := self.ledger.states[r.key]).intent_at]
        after = (min(times) if times else datetime.now(timezone.utc)) - CLOCK_SKEW
        listed = PredictionList()
        failure: str | None = None
        try:
            listed = await self.client.list_predictions(created_after=after)
        except FluxError as exc:
            failure = f"could not be listed ({exc})"
        if failure is None and not listed.complete:
            failure = f"were listed only in part ({listed.cut})"
        for row in unanswered:
            state = self.ledger.states[row.key]
            match = next(
                (
                    p
                    for p in reversed(listed)  # oldest first: the first create of equal rows
                    if p.id not in self.ledger.claimed and matches(row, p)
                ),
                None,
            )
            if match is not None:
                self._record("created", row, prediction_id=match.id, recovered=True)
                self.status.recovered += 1
                continue
            if failure is None and never_sent(state, listed, self.ledger.folded.created_at_seq):
                # Listed back past the intent, and not there: it never reached the API.
                self._record("unsent", row, note="not among the account's predictions")
                self.budget.release(self._hold(row))
                continue
            if self.recreate_unresolved:
                self._record("unsent", row, note="recreated: --recreate-unresolved")
                continue
            why = failure or (
                "as listed, do not reach back past it (an empty listing, or only newer "
                "predictions: no proof that it never arrived)"
            )
            error = (
                "the create was sent but its answer never came back, and the account's "
                f"predictions {why}; it may exist and be billed, so it was not sent again. "
                "Check your recent predictions, or rerun with --recreate-unresolved (it may be "
                "paid twice)."
            )
            self._record("failed", row, stage="create", error=error, unresolved=True)
            self._finish(RowOutcome(row.number, row.key, "unresolved", error=error, name=row.name))

    def _hold(self, row: BatchRow) -> Hold | None:
        estimate = self.estimates.get(row.key)
        return None if estimate is None else Hold(estimate, row.model)

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
                with contextlib.suppress(LedgerError):
                    self._record("canceled", row, prediction_id=pid, error="interrupted")
                self.status.running -= 1
                raise
            except LedgerError as exc:
                state = self.ledger.states.get(row.key)
                pid = state.prediction_id if state else None
                outcome = RowOutcome(row.number, row.key, "failed", pid, error=str(exc))
            self.status.running -= 1
            self._finish(replace(outcome, name=outcome.name or row.name))

    async def _generate(self, row: BatchRow) -> RowOutcome:
        client = self.client
        if self.stopped is not None:
            return RowOutcome(row.number, row.key, "failed", error=f"not sent: {self.stopped}")
        state = self.ledger.states.get(row.key)
        pid = state.prediction_id if state else None
        if state is not None and pid is not None and pid not in state.ended:
            # Created by an earlier run (or found): wait for it; never create it again while
            # it may still give its image.
            outcome = await self._finish_prediction(row, pid, resumed=True)
            if outcome is not None:
                return outcome
        estimate = self.estimates.get(row.key)
        try:
            hold = self.budget.reserve(row.model, estimate) if self.budget.active else None
        except BudgetExceeded as exc:
            return RowOutcome(row.number, row.key, "refused", error=str(exc))
        try:
            self._record(
                "intent", row, model=row.model, input_hash=row.input_hash, estimate=estimate
            )
        except LedgerError:
            self.budget.release(hold)
            raise
        try:
            prediction = await client.create(
                row.input,
                model=row.model,
                image_dirs=self.image_dirs,
                cancel_after=(self.timeout or client.timeout) + 10,
            )
        except FluxError as exc:
            maybe = maybe_created(exc)
            if not maybe:
                self.budget.release(hold)
            kind: Literal["refused", "failed"] = (
                "refused" if isinstance(exc, BudgetExceeded) else "failed"
            )
            text = str(exc)
            earlier = state.predictions if state is not None else []
            if earlier:  # this create made nothing; the row's earlier predictions may be billed
                text = text.replace(
                    _NOTHING_BILLED,
                    "This create made no prediction; the row's earlier prediction "
                    f"{', '.join(earlier)} was created (and may be billed) before.",
                )
            if maybe:
                self._record("failed", row, stage="create", error=text, maybe_created=True)
            else:
                self._record("unsent", row, error=text)
            return RowOutcome(row.number, row.key, kind, error=text)
        self.status.created += 1
        self._record("created", row, prediction_id=prediction.id)
        outcome = await self._finish_prediction(row, prediction, resumed=False)
        assert outcome is not None
        return outcome

    async def _finish_prediction(
        self, row: BatchRow, prediction: Prediction | str, *, resumed: bool
    ) -> RowOutcome | None:
        """Wait, then save. None (only when ``resumed``): that prediction ended without an
        image (the API says so), so the row is to be created again."""
        client = self.client
        pid = prediction if isinstance(prediction, str) else prediction.id
        try:
            final = await client.wait(prediction, timeout=self.timeout)
        except FluxError as exc:
            # Not over as far as we know (the API could not be read, or the wait ran out): the
            # id is kept, and the next run waits for it again. Never created again meanwhile.
            what = "could not be read" if resumed else "did not finish"
            text = f"prediction {pid} {what}: {exc} -> {_resume_advice(exc)}"
            if resumed or isinstance(exc, PredictionTimeout):
                text += ": the prediction is not created again"
            self._record("failed", row, prediction_id=pid, stage="prediction", error=text)
            return RowOutcome(row.number, row.key, "failed", pid, error=text)
        try:
            result = client.result(final)
        except FluxError as exc:
            ended = final.status if final.status in ("failed", "canceled", "aborted") else None
            if ended is None and final.data_removed and not final.output_urls:
                ended = "expired"  # succeeded, outputs already deleted: the image is gone
            self._record(
                "failed", row, prediction_id=pid, stage="prediction", error=str(exc), ended=ended
            )
            if ended == "aborted":  # not billed
                self.budget.release(self._hold(row))
            if resumed and ended is not None:
                return None
            return RowOutcome(row.number, row.key, "failed", pid, error=str(exc))
        try:
            files = await client.save(result, self.out)
        except FluxError as exc:
            self._record("failed", row, prediction_id=pid, stage="download", error=str(exc))
            return RowOutcome(row.number, row.key, "failed", pid, error=str(exc))
        if row.name is not None:
            files = self._name_files(row, pid, files)
        names = [str(f) for f in files]
        self._record("saved", row, prediction_id=pid, files=names, cost=result.cost)
        self.status.spent += result.cost or 0.0
        return RowOutcome(row.number, row.key, "saved", pid, names, result.cost, name=row.name)

    def _name_files(self, row: BatchRow, pid: str, files: list[Path]) -> list[Path]:
        """Give the saved files (named by the prediction id) the row's name. A file already
        there under that name is replaced only when this row wrote it (an earlier try); any
        other is left alone, and the image keeps its prediction-id name."""
        assert row.name is not None
        state = self.ledger.states.get(row.key)
        ours = set(state.owned_files) if state is not None else set()
        stems = output_names(row.name, len(files))
        targets = [f.with_name(stem + f.suffix) for stem, f in zip(stems, files, strict=True)]
        self._record("naming", row, prediction_id=pid, files=[str(t) for t in targets])
        named = []
        for source, target in zip(files, targets, strict=True):
            try:
                if str(target) in ours:
                    os.replace(source, target)
                else:
                    os.link(source, target)  # never over a file that is not ours
                    source.unlink()
                named.append(target)
            except FileExistsError:
                named.append(source)
            except OSError:
                if target.exists() or not source.exists():
                    named.append(source if source.exists() else target)
                    continue
                try:  # a file system without hard links
                    os.rename(source, target)
                    named.append(target)
                except OSError:
                    named.append(source)
        return named

    def _write_report(self) -> None:
        """``flux-batch-report.csv`` and ``.jsonl`` in the output folder: every row of the file,
        those done in earlier runs included. Best effort: a report that cannot be written (a
        full disk) leaves the batch's own outcome as it is."""
        lines: list[dict[str, Any]] = []
        for row in self.rows:
            outcome = self.outcomes.get(row.key)
            state = self.ledger.states.get(row.key)
            if outcome is None:
                outcome = RowOutcome(
                    row.number,
                    row.key,
                    "pending",
                    state.prediction_id if state else None,
                    error=state.error if state and state.error else None,
                    name=row.name,
                )
            lines.append(
                {
                    "row": row.number,
                    "name": row.name,
                    "status": "saved" if outcome.status == "skipped" else outcome.status,
                    "files": [self._relative(f) for f in outcome.files],
                    "prediction_id": outcome.prediction_id,
                    "cost": outcome.cost,
                    "error": outcome.error,
                }
            )
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(REPORT_COLUMNS)
        for line in lines:
            cells = {**line, "files": " ".join(line["files"])}
            writer.writerow([_cell(cells[column]) for column in REPORT_COLUMNS])
        jsonl = "".join(json.dumps(line) + "\n" for line in lines)
        try:
            write_text_atomic(self.out / f"{REPORT_NAME}.csv", table.getvalue())
            write_text_atomic(self.out / f"{REPORT_NAME}.jsonl", jsonl)
        except OSError as exc:
            logger.warning("could not write the batch report in %s: %s", self.out, exc)

    def _relative(self, path: str) -> str:
        try:
            return str(Path(path).relative_to(self.out))
        except ValueError:
            return path


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _records(source: str | Path | Iterable[Mapping[str, Any]]) -> list[tuple[int, Any, bool]]:
    if isinstance(source, str | Path):
        return list(_raw_rows(Path(source)))
    return [(i, dict(r), False) for i, r in enumerate(source, start=1)]


def unknown_models(source: list[tuple[int, Any, bool]], default: str) -> list[str]:
    """The models of the rows the package has no schema of (their live one is fetched)."""
    found: dict[str, None] = {}
    for _, record, _ in source:
        try:
            name = normalize_model_name(str(record.get("model") or default))
        except ValueError:
            continue  # prepare_rows names the row and the problem
        if spec_or_none(name) is None:
            found[name] = None
    return list(found)


def _prepare(
    client: FluxClient | AsyncFluxClient,
    records: list[tuple[int, Any, bool]],
    model: str | None,
    name_template: str | None,
) -> list[BatchRow]:
    schemas: dict[str, dict[str, Any] | None] = {}

    def validate(fields: Mapping[str, Any], name: str) -> BaseModel | dict[str, Any]:
        return client.validate(fields, model=name)

    def schema_of(name: str) -> dict[str, Any] | None:
        if name not in schemas:  # once per model: a JSON schema takes milliseconds to build
            cls = client.input_model(name)
            schemas[name] = cls.model_json_schema() if cls is not None else None
        return schemas[name]

    return prepare_rows(
        records,
        model=model or client.model,
        validate=validate,
        schema_of=schema_of,
        name_template=name_template,
    )


def load_rows(
    client: FluxClient | AsyncFluxClient,
    source: str | Path | Iterable[Mapping[str, Any]],
    *,
    model: str | None = None,
    name_template: str | None = None,
) -> list[BatchRow]:
    """The rows of a JSONL/CSV file, or of dicts, validated with each row's model's schema.

    A model the package does not know is validated with its live schema, fetched first with a
    blocking :class:`~flux_tools.FluxClient` (an async client: :func:`aload_rows`).
    ``name_template`` (``{sku}-{seed}``) names each row's files from its fields."""
    records = _records(source)
    if isinstance(client, FluxClient):
        for name in unknown_models(records, model or client.model):
            client.model_schema(name)
    return _prepare(client, records, model, name_template)


async def aload_rows(
    client: AsyncFluxClient,
    source: str | Path | Iterable[Mapping[str, Any]],
    *,
    model: str | None = None,
    name_template: str | None = None,
) -> list[BatchRow]:
    """:func:`load_rows` for an async client: the live schema of every model the package does
    not know is fetched (once) before any row is checked."""
    records = _records(source)
    for name in unknown_models(records, model or client.model):
        await client.model_schema(name)
    return _prepare(client, records, model, name_template)


async def agenerate_many(
    client: AsyncFluxClient,
    rows: str | Path | Iterable[Mapping[str, Any]] | Sequence[BatchRow],
    out: str | Path,
    *,
    model: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    budget: float | None = None,
    on_progress: Callable[[BatchStatus], Any] | None = None,
    recreate_unresolved: bool = False,
    image_dirs: Sequence[str | Path] = (),
    name: str | None = None,
) -> BatchReport:
    """Generate one image set per row into ``out``, resuming from ``out``'s ledger.

    ``rows``: a JSONL or CSV file, dicts of input fields (each may name its ``model`` and its
    files' ``name``), or rows already checked by :func:`load_rows`. ``name``: a template of
    the files' names from each row's fields (``{sku}-{seed}``). ``budget``: USD for the whole
    batch, everything earlier runs committed included (the client's own ``FLUX_BUDGET_USD``
    holds too). Local images are read from ``image_dirs`` and the rows file's own folder.
    Returns a :class:`BatchReport`; raises :class:`~flux_tools.FluxInputError` (nothing sent)
    if any row is invalid, ``LedgerError`` (a :class:`~flux_tools.FluxError`) when the ledger
    cannot be written.
    """
    folders = [_resolved(d) for d in image_dirs]
    if isinstance(rows, str | Path):
        folders.append(_resolved(rows).parent)  # images named in the file, beside it
    listed = rows if isinstance(rows, str | Path) else list(rows)
    if isinstance(listed, list) and listed and all(isinstance(r, BatchRow) for r in listed):
        prepared: list[BatchRow] = [r for r in listed if isinstance(r, BatchRow)]
    else:
        prepared = await aload_rows(client, listed, model=model, name_template=name)  # type: ignore[arg-type]
    batch = _Batch(
        client,
        prepared,
        _resolved(out),
        concurrency=concurrency,
        timeout=timeout,
        budget=budget,
        image_dirs=folders,
        on_progress=on_progress,
        recreate_unresolved=recreate_unresolved,
    )
    return await batch.run()


def generate_many(
    client: FluxClient,
    rows: str | Path | Iterable[Mapping[str, Any]] | Sequence[BatchRow],
    out: str | Path,
    *,
    model: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    budget: float | None = None,
    on_progress: Callable[[BatchStatus], Any] | None = None,
    recreate_unresolved: bool = False,
    image_dirs: Sequence[str | Path] = (),
    name: str | None = None,
) -> BatchReport:
    """:func:`agenerate_many` for a blocking :class:`~flux_tools.FluxClient`: the same batch,
    run on an event loop of its own through an async twin of ``client`` that shares its
    limiter, budget, prices and learned durations."""
    source: str | Path | list[Any] = rows if isinstance(rows, str | Path) else list(rows)

    async def main() -> BatchReport:
        async with AsyncFluxClient(
            settings=client.settings,
            retry=client.retry,
            poll=client.poll,
            limiter=client.limiter,
            budget=client.budget,
            prices=client.prices,
            durations=client.durations,
        ) as twin:
            return await agenerate_many(
                twin,
                source,
                out,
                model=model,
                concurrency=concurrency,
                timeout=timeout,
                budget=budget,
                on_progress=on_progress,
                recreate_unresolved=recreate_unresolved,
                image_dirs=image_dirs,
                name=name,
            )

    return anyio.run(main)


__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_CONCURRENCY",
    "REPORT_NAME",
    "agenerate_many",
    "aload_rows",
    "generate_many",
    "load_rows",
    "unknown_models",
]
