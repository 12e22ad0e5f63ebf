"""Batches from Python (``generate_many`` / ``agenerate_many``) against the emulator: every row
saved, reruns that resume from the ledger, the unanswered create found among the account's
predictions, budgets and bad rows refused before anything is sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from flux_tools import (
    MODELS,
    AsyncFluxClient,
    BatchReport,
    DurationStats,
    FluxClient,
    FluxInputError,
    agenerate_many,
    generate_many,
)
from flux_tools._domain.batch import input_hash
from flux_tools.emulator import Emulator, Fault
from flux_tools.kit import LEDGER_NAME

MakeEmulator = Callable[..., Emulator]


@pytest.fixture(params=["sync", "async"])
def run_batch(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Runs a batch through ``generate_many`` (FluxClient) or ``agenerate_many``."""

    async def run(emulator: Emulator, rows: Any, out: Path, **kwargs: Any) -> BatchReport:
        options: dict[str, Any] = {
            "base_url": emulator.base_url,
            "api_token": "t",
            "durations": DurationStats(),
        }
        if request.param == "sync":

            def blocking() -> BatchReport:
                with FluxClient(**options) as client:
                    return generate_many(client, rows, out, **kwargs)

            return await asyncio.to_thread(blocking)
        async with AsyncFluxClient(**options) as client:
            return await agenerate_many(client, rows, out, **kwargs)

    return run


def ledger_events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / LEDGER_NAME).read_text().splitlines()]


async def test_every_row_is_saved_and_a_rerun_creates_nothing(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False)
    rows = [{"prompt": f"a fox, take {i}", "seed": i} for i in range(5)]
    rows.append({"prompt": "two drafts", "model": "flux-schnell", "num_outputs": 2})
    out = tmp_path / "out"
    report = await run_batch(emulator, rows, out, concurrency=3)
    assert report.ok and report.status.done == 6 and report.status.created == 6
    assert emulator.stats.predictions_created == 6
    saved = [e for e in ledger_events(out) if e["event"] == "saved"]
    assert len(saved) == 6
    files = [Path(f) for e in saved for f in e["files"]]
    assert len(files) == 7 and all(f.exists() and f.parent == out for f in files)
    price = MODELS["black-forest-labs/flux-pro"].price_usd
    schnell = MODELS["black-forest-labs/flux-schnell"].price_usd
    assert report.status.spent == pytest.approx(5 * price + 2 * schnell)
    # Every create was preceded by its intent, every save by its create.
    for e in saved:
        events = [x["event"] for x in ledger_events(out) if x["key"] == e["key"]]
        assert events == ["intent", "created", "saved"]

    again = await run_batch(emulator, rows, out)
    assert again.ok and again.status.skipped == 6 and again.status.created == 0
    assert emulator.stats.predictions_created == 6  # nothing paid twice


async def test_csv_columns_take_the_schemas_types(
    emulator: Emulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    batch = tmp_path / "rows.csv"
    batch.write_text(
        "prompt,seed,prompt_upsampling,model,steps\n"
        "a red fox,7,true,,30\n"
        '"a fox, in snow",8,no,flux-pro,\n'
    )
    report = await run_batch(emulator, batch, tmp_path / "out")
    assert report.ok
    inputs = sorted((p.input for p in emulator.predictions.values()), key=lambda i: i["seed"])
    assert inputs[0] == {"prompt": "a red fox", "seed": 7, "prompt_upsampling": True, "steps": 30}
    assert inputs[1] == {"prompt": "a fox, in snow", "seed": 8, "prompt_upsampling": False}


async def test_bad_rows_are_refused_before_anything_is_sent(
    emulator: Emulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    rows = [{"prompt": "fine"}, {"prompt": "bad", "steps": 500}, {"prompt": "x", "colour": "red"}]
    with pytest.raises(FluxInputError) as info:
        await run_batch(emulator, rows, tmp_path / "out")
    text = str(info.value)
    assert "row 2: steps" in text and "row 3: colour" in text and "nothing was sent" in text
    assert {e["row"] for e in info.value.errors} == {2, 3}
    assert emulator.stats.creates == 0


async def test_the_first_read_of_a_resumed_prediction_outlasts_a_burst_of_503s(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    """Known by its id only, a prediction's first read is as persistent as any poll: six 503s
    in a row (more than the retries of a single request) do not send the row back to create."""
    emulator = make_emulator(honor_prefer_wait=False)
    row = {"prompt": "created before the crash", "seed": 4}
    async with AsyncFluxClient("t", base_url=emulator.base_url) as client:
        prediction = await client.create(row)
    out = tmp_path / "out"
    out.mkdir()
    key = f"{input_hash('black-forest-labs/flux-pro', row)}-0"
    created = {"event": "created", "key": key, "row": 1, "prediction_id": prediction.id}
    (out / LEDGER_NAME).write_text(intent_line(row, 1) + json.dumps(created) + "\n")
    emulator.add_fault(Fault("get", "503", times=6, retry_after=0.05))
    report = await run_batch(emulator, [row], out)
    assert report.ok and report.status.created == 0
    assert emulator.stats.predictions_created == 1


@pytest.mark.parametrize("status", ["401", "404", "429"])
async def test_a_resumed_prediction_that_cannot_be_read_keeps_its_id(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path, status: str
) -> None:
    emulator = make_emulator(honor_prefer_wait=False)
    row = {"prompt": "created before the crash", "seed": 5}
    async with AsyncFluxClient("t", base_url=emulator.base_url) as client:
        prediction = await client.create(row)
    out = tmp_path / "out"
    out.mkdir()
    key = f"{input_hash('black-forest-labs/flux-pro', row)}-0"
    created = {"event": "created", "key": key, "row": 1, "prediction_id": prediction.id}
    (out / LEDGER_NAME).write_text(intent_line(row, 1) + json.dumps(created) + "\n")
    emulator.add_fault(Fault("get", status, times=None, retry_after=0.05))
    report = await run_batch(emulator, [row], out, timeout=2)
    (outcome,) = report.rows
    assert outcome.status == "failed" and outcome.prediction_id == prediction.id
    assert "the prediction is not created again" in (outcome.error or "")
    assert emulator.stats.predictions_created == 1
    emulator.clear_faults()
    again = await run_batch(emulator, [row], out)
    assert again.ok and again.rows[0].prediction_id == prediction.id
    assert emulator.stats.predictions_created == 1


async def test_a_created_prediction_is_waited_for_never_created_again(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    """The ledger of a run that died after the create's answer: the rerun finishes that
    prediction under its id."""
    emulator = make_emulator(honor_prefer_wait=False)
    row = {"prompt": "created before the crash", "seed": 3}
    async with AsyncFluxClient("t", base_url=emulator.base_url) as client:
        prediction = await client.create(row)
    out = tmp_path / "out"
    out.mkdir()
    key = f"{input_hash('black-forest-labs/flux-pro', row)}-0"
    events = [
        {"event": "intent", "key": key, "row": 1, "at": "2026-01-01T00:00:00+00:00"},
        {"event": "created", "key": key, "row": 1, "prediction_id": prediction.id},
    ]
    (out / LEDGER_NAME).write_text("".join(json.dumps(e) + "\n" for e in events) + '{"event": "sa')
    report = await run_batch(emulator, [row], out)
    assert report.ok and report.status.created == 0
    assert emulator.stats.predictions_created == 1
    (outcome,) = report.rows
    assert outcome.prediction_id == prediction.id and outcome.status == "saved"


def intent_line(row: dict[str, Any], number: int, at: datetime | None = None) -> str:
    event = {
        "event": "intent",
        "key": f"{input_hash('black-forest-labs/flux-pro', row)}-0",
        "row": number,
        "at": (at or datetime.now(timezone.utc)).isoformat(),
    }
    return json.dumps(event) + "\n"


async def test_an_unanswered_create_is_found_among_the_accounts_predictions(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    """Intent written, create sent, answer never seen: the prediction with exactly the row's
    input is adopted (listing the account's predictions); the other row, never sent (the
    listing reaches back past its intent: an older prediction is in it), is."""
    emulator = make_emulator(honor_prefer_wait=False)
    sent = {"prompt": "sent, answer lost", "seed": 11}
    unsent = {"prompt": "died before sending", "seed": 12}
    async with AsyncFluxClient("t", base_url=emulator.base_url) as client:
        await client.create({"prompt": "someone else's, similar", "seed": 11})
        await asyncio.sleep(0.05)
        out = tmp_path / "out"
        out.mkdir()
        (out / LEDGER_NAME).write_text(intent_line(sent, 1) + intent_line(unsent, 2))
        lost = await client.create(sent)
        await client.create({"prompt": "sent, answer lost", "seed": 11, "steps": 30})
    before = emulator.stats.predictions_created
    report = await run_batch(emulator, [sent, unsent], out)
    assert report.ok and report.status.recovered == 1 and report.status.created == 1
    assert emulator.stats.predictions_created == before + 1  # only the unsent row
    assert emulator.stats.lists >= 1
    by_row = {o.row: o for o in report.rows}
    assert by_row[1].prediction_id == lost.id


@pytest.mark.parametrize(
    "listing",
    [
        "empty",  # a gateway that answers an empty list
        "cut",  # pages without their next link: only the newest are seen
        "newer only",  # a listing that never reaches back past the intent
        "page limit",  # more pages than are read
        "404",  # no listing at all
    ],
)
async def test_an_unanswered_create_is_sent_again_only_on_positive_evidence(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path, listing: str
) -> None:
    """A listing without the create proves nothing unless it is whole and reaches back past
    the intent: otherwise the row is unresolved, and not sent again."""
    emulator = make_emulator(honor_prefer_wait=False, page_size=1 if listing != "empty" else 100)
    rows = [{"prompt": f"maybe created {i}", "seed": i} for i in range(3)]
    out = tmp_path / "out"
    out.mkdir()
    async with AsyncFluxClient("t", base_url=emulator.base_url) as client:
        if listing != "newer only":
            await client.create({"prompt": "an older prediction of the account"})
            await asyncio.sleep(0.05)
        (out / LEDGER_NAME).write_text("".join(intent_line(r, n) for n, r in enumerate(rows, 1)))
        for i in range(101 if listing == "page limit" else 2):
            await client.create({"prompt": f"a newer one {i}"})
    if listing in ("empty", "cut", "404"):
        emulator.add_fault(Fault("list", listing, times=None))
    before = emulator.stats.predictions_created
    report = await run_batch(emulator, rows, out)
    assert report.status.unresolved == 3 and not report.ok
    assert emulator.stats.predictions_created == before  # nothing sent again
    assert all("not sent again" in (o.error or "") for o in report.rows)
    # The same batch on an API that lists it all: now the rows are proven never sent.
    emulator.clear_faults()
    if listing in ("newer only", "page limit"):
        return  # the listing itself stays as it is
    fine = await run_batch(emulator, rows, out)
    assert fine.ok and emulator.stats.predictions_created == before + 3


async def test_without_a_listing_an_unanswered_create_is_not_sent_again(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False)
    emulator.add_fault(Fault("list", "404", times=None))
    row = {"prompt": "maybe created", "seed": 5}
    out = tmp_path / "out"
    out.mkdir()
    key = f"{input_hash('black-forest-labs/flux-pro', row)}-0"
    intent = {"event": "intent", "key": key, "row": 1, "at": "2026-01-01T00:00:00+00:00"}
    (out / LEDGER_NAME).write_text(json.dumps(intent) + "\n")
    report = await run_batch(emulator, [row], out)
    assert not report.ok and report.status.unresolved == 1
    assert "recreate-unresolved" in (report.rows[0].error or "")
    assert emulator.stats.creates == 0
    forced = await run_batch(emulator, [row], out, recreate_unresolved=True)
    assert forced.ok and emulator.stats.predictions_created == 1


async def test_a_batch_budget_counts_earlier_runs_and_refuses_before_sending(
    emulator: Emulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    price = MODELS["black-forest-labs/flux-pro"].price_usd
    out = tmp_path / "out"
    rows = [{"prompt": f"row {i}", "seed": i} for i in range(4)]
    first = await run_batch(emulator, rows[:2], out, budget=price * 3.5)
    assert first.ok and emulator.stats.predictions_created == 2
    second = await run_batch(emulator, rows, out, budget=price * 3.5, concurrency=1)
    assert second.status.done == 3 and second.status.refused == 1
    assert emulator.stats.predictions_created == 3  # 2 earlier + 1: the 4th would exceed it
    refused = next(o for o in second.rows if o.status == "refused")
    assert "--budget" in (refused.error or "")


async def test_failed_predictions_are_reported_and_retried_on_the_next_run(
    make_emulator: MakeEmulator, run_batch: Callable[..., Any], tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False)
    rows = [{"prompt": "fine"}, {"prompt": "[emulator:fail] broken"}]
    out = tmp_path / "out"
    report = await run_batch(emulator, rows, out)
    assert report.status.done == 1 and report.status.failed == 1 and not report.ok
    failed = next(o for o in report.rows if o.status == "failed")
    assert failed.row == 2 and failed.prediction_id
    again = await run_batch(emulator, rows, out)
    assert again.status.skipped == 1 and again.status.failed == 1
    assert emulator.stats.predictions_created == 3  # the failed row, once more
