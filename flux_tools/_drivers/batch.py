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
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel

from .._base.errors import BudgetExceeded, FluxConnectionError, FluxError, FluxInputError
from .._domain.batch import (
    BatchReport,
    BatchRow,
    BatchStatus,
    RowOutcome,
    matches,
    maybe_created,
    prepare_rows,
)
from .._domain.prediction import Prediction
from .._domain.pricing import Budget
from .client import AsyncFluxClient, FluxClient
from .ledger import LEDGER_NAME, Ledger

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
            listed = await self.client.list_predictions(created_after=after)
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
                    if p.id not in self.ledger.claimed and matches(row, p)
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
        estimate = client.estimate(row.input, model=row.model)
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
            maybe = maybe_created(exc)
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
    schemas: dict[str, dict[str, Any] | None] = {}

    def validate(fields: Mapping[str, Any], name: str) -> BaseModel | dict[str, Any]:
        return client.validate(fields, model=name)

    def schema_of(name: str) -> dict[str, Any] | None:
        if name not in schemas:  # once per model: a JSON schema takes milliseconds to build
            cls = client.input_model(name)
            schemas[name] = cls.model_json_schema() if cls is not None else None
        return schemas[name]

    return prepare_rows(
        records, model=model or client.model, validate=validate, schema_of=schema_of
    )


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
) -> BatchReport:
    """Generate one image set per row into ``out``, resuming from ``out``'s ledger.

    ``rows``: a JSONL or CSV file, dicts of input fields (each may name its ``model``), or rows
    already checked by :func:`load_rows`. ``budget``: USD for the whole batch, earlier runs'
    images included (the client's own ``FLUX_BUDGET_USD`` holds too). Local images are read from
    ``image_dirs`` and the rows file's own folder. Returns a :class:`BatchReport`; raises
    :class:`~flux_tools.FluxInputError` (nothing sent) if any row is invalid.
    """
    folders = [_resolved(d) for d in image_dirs]
    if isinstance(rows, str | Path):
        folders.append(_resolved(rows).parent)  # images named in the file, beside it
    listed = rows if isinstance(rows, str | Path) else list(rows)
    if isinstance(listed, list) and listed and all(isinstance(r, BatchRow) for r in listed):
        prepared: list[BatchRow] = [r for r in listed if isinstance(r, BatchRow)]
    else:
        prepared = load_rows(client, listed, model=model)  # type: ignore[arg-type]
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
            )

    return anyio.run(main)


__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_CONCURRENCY",
    "agenerate_many",
    "generate_many",
    "load_rows",
]
