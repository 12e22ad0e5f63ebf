"""The batch ledger as data and as a file: torn writes, damaged lines, what a row owes, which
listing proves a create never arrived, and the names of a row's files. No sockets."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from flux_tools import Prediction
from flux_tools._domain.batch import (
    BatchRow,
    LedgerState,
    assign_names,
    never_sent,
    prepare_rows,
)
from flux_tools._drivers.ledger import Ledger, LedgerError
from flux_tools.kit import LEDGER_NAME

KEY_A, KEY_B = "a" * 32 + "-0", "b" * 32 + "-0"
ROW_A = BatchRow(1, "black-forest-labs/flux-pro", {"prompt": "a"}, KEY_A)
ROW_B = BatchRow(2, "black-forest-labs/flux-pro", {"prompt": "b"}, KEY_B)


def line(**event: Any) -> bytes:
    return (json.dumps(event) + "\n").encode()


def folded(data: bytes) -> LedgerState:
    state = LedgerState()
    state.load(data)
    return state


def test_a_torn_last_line_keeps_the_prediction_id_it_shows() -> None:
    whole = line(event="intent", key=KEY_A, row=1, at="2026-01-01T00:00:00+00:00")
    torn = b'{"event": "created", "key": "' + KEY_A.encode() + b'", "row": 1, "prediction_id": "p1"'
    state = folded(whole + torn)
    row = state.states[KEY_A]
    assert row.prediction_id == "p1" and not row.unanswered and state.damaged == 1
    assert "p1" in state.claimed
    # Cut inside the id: nothing readable, the intent stands (the listing decides).
    cut = folded(whole + torn[:-4]).states[KEY_A]
    assert cut.prediction_id is None and cut.unanswered


def test_events_glued_onto_a_fragment_are_read_and_nul_padding_is_skipped() -> None:
    glued = (
        b'{"event": "sav'
        + line(event="created", key=KEY_A, row=1, prediction_id="p1").rstrip()
        + b"\n\0\0\0\0\n"
        + line(event="created", key=KEY_B, row=2, prediction_id="p2")
        + b"\0" * 64
    )
    state = folded(glued)
    assert state.states[KEY_A].prediction_id == "p1"
    assert state.states[KEY_B].prediction_id == "p2"


def test_an_id_in_a_line_that_names_no_row_is_an_orphan_never_forgotten() -> None:
    state = folded(b'\x00garbage "prediction_id": "lost1", more garbage\n')
    assert state.orphans == ["lost1"] and state.states == {}
    # Once a row claims it, it is no orphan any more.
    state.fold({"event": "created", "key": KEY_A, "prediction_id": "lost1"})
    assert state.orphans == []


def test_a_prediction_id_is_never_forgotten_until_it_ended_without_an_image() -> None:
    state = LedgerState()
    state.fold({"event": "intent", "key": KEY_A})
    state.fold({"event": "created", "key": KEY_A, "prediction_id": "p1"})
    # A failed read (401, 404, 5xx...): the id stays the one to wait for.
    state.fold({"event": "failed", "key": KEY_A, "prediction_id": "p1", "stage": "prediction"})
    assert state.states[KEY_A].waiting == "p1"
    # Over without an image: the row may be created again; its history keeps both.
    state.fold({"event": "failed", "key": KEY_A, "prediction_id": "p1", "ended": "failed"})
    assert state.states[KEY_A].waiting is None
    state.fold({"event": "intent", "key": KEY_A})
    state.fold({"event": "created", "key": KEY_A, "prediction_id": "p2"})
    row = state.states[KEY_A]
    assert row.predictions == ["p1", "p2"] and row.waiting == "p2"


def test_what_a_batch_has_committed() -> None:
    state = LedgerState()
    events: list[dict[str, Any]] = [
        {"event": "intent", "key": KEY_A, "estimate": 0.05},
        {"event": "created", "key": KEY_A, "prediction_id": "a1"},
        {"event": "saved", "key": KEY_A, "prediction_id": "a1", "files": ["x"], "cost": 0.04},
        {"event": "intent", "key": KEY_B, "estimate": 0.1},
        {"event": "created", "key": KEY_B, "prediction_id": "b1"},  # resumed: counted
        {"event": "failed", "key": KEY_B, "prediction_id": "b1", "ended": "aborted"},  # not billed
        {"event": "intent", "key": KEY_B, "estimate": 0.1},
        {"event": "created", "key": KEY_B, "prediction_id": "b2"},
        {"event": "intent", "key": "c" * 32 + "-0"},  # no answer: may exist; no estimate here
    ]
    for event in events:
        state.fold(event)
    assert state.committed() == pytest.approx(0.04 + 0.1)
    assert state.committed(lambda key: 0.5) == pytest.approx(0.04 + 0.1 + 0.5)
    assert state.spent == pytest.approx(0.04)


def test_which_listing_proves_a_create_never_arrived() -> None:
    intent = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    state = LedgerState()
    state.fold({"event": "created", "key": KEY_B, "prediction_id": "earlier"})
    state.fold({"event": "intent", "key": KEY_A, "at": intent.isoformat()})
    state.fold({"event": "created", "key": "c" * 32 + "-0", "prediction_id": "later"})
    row = state.states[KEY_A]

    def made(pid: str, seconds: float | None) -> Prediction:
        created = None if seconds is None else intent + timedelta(seconds=seconds)
        return Prediction(id=pid, status="succeeded", created_at=created)

    seq = state.created_at_seq
    assert not never_sent(row, [], seq)  # an empty listing proves nothing
    assert not never_sent(row, [made("x", 5), made("later", None)], seq)  # only newer ones
    assert never_sent(row, [made("x", 5), made("y", -1)], seq)  # one older than the intent
    # One the ledger created before the intent, whatever the API's clock says.
    assert never_sent(row, [made("earlier", 3600)], seq)


def test_ledger_appends_each_event_whole_after_repairing_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_NAME
    intent = line(event="intent", key=KEY_A, row=1)
    path.write_bytes(intent + b'{"event": "created", "key": "' + KEY_A.encode() + b'", "predic')
    ledger = Ledger(path)
    assert ledger.states[KEY_A].unanswered
    ledger.record("created", ROW_B, prediction_id="p2")
    ledger.close()
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[-2])["prediction_id"] == "p2"  # a line of its own
    assert folded(path.read_bytes()).states[KEY_B].prediction_id == "p2"


def test_a_crash_at_any_byte_leaves_the_old_state_or_the_new(tmp_path: Path) -> None:
    """Every prefix of a ledger written event by event reads as the state after some whole
    number of events, or that one with the next event's id read from its torn line."""
    path = tmp_path / LEDGER_NAME
    ledger = Ledger(path)
    steps: list[tuple[str, BatchRow, dict[str, Any]]] = [
        ("intent", ROW_A, {"model": ROW_A.model, "estimate": 0.05}),
        ("created", ROW_A, {"prediction_id": "pa"}),
        ("intent", ROW_B, {"model": ROW_B.model}),
        ("saved", ROW_A, {"prediction_id": "pa", "files": ["/x/pa.webp"], "cost": 0.05}),
        ("created", ROW_B, {"prediction_id": "pb"}),
        ("failed", ROW_B, {"prediction_id": "pb", "stage": "prediction", "error": "503"}),
    ]
    boundaries = [0]
    for event, row, fields in steps:
        ledger.record(event, row, **fields)
        boundaries.append(path.stat().st_size)
    ledger.close()
    data = path.read_bytes()

    def view(state: LedgerState) -> dict[str, Any]:
        return {
            k: (s.prediction_id, s.unanswered, s.saved, s.files) for k, s in state.states.items()
        }

    whole = [view(folded(data[:end])) for end in boundaries]
    for cut in range(len(data) + 1):
        before = max(i for i, end in enumerate(boundaries) if end <= cut)
        seen = view(folded(data[:cut]))
        allowed = [whole[before]] + ([whole[before + 1]] if before + 1 < len(whole) else [])
        assert seen in allowed, (cut, seen)


def test_the_ledger_is_never_written_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("my notes, no newline at the end")
    out = tmp_path / "out"
    out.mkdir()
    (out / LEDGER_NAME).symlink_to(target)
    with pytest.raises(LedgerError, match="symbolic link"):
        Ledger(out / LEDGER_NAME)
    assert target.read_text() == "my notes, no newline at the end"


def named(*names: str | None, outputs: int = 1) -> list[str | None]:
    rows = [
        BatchRow(i, "m/x", {"prompt": str(i), "num_outputs": outputs}, f"{i}", name)
        for i, name in enumerate(names, start=1)
    ]
    return [r.name for r in assign_names(rows)]


def test_a_rows_name_is_made_safe_and_unique_the_same_way_every_run() -> None:
    assert named("SKU 1/red", "../../etc/passwd", ".hidden", None, "") == [
        "SKU-1-red",
        "etc-passwd",
        "hidden",
        None,
        None,
    ]
    assert named("shoe", "Shoe", "shoe", "shoe-2") == ["shoe", "Shoe-2", "shoe-3", "shoe-2-2"]
    assert named("a", "a_0", outputs=2) == ["a", "a_0"]
    assert named("a", "a_1", "a", outputs=1) == ["a", "a_1", "a-2"]
    assert named("shoe", "Shoe", "shoe") == named("shoe", "Shoe", "shoe")


def test_the_name_column_and_the_templates_own_columns_are_not_sent() -> None:
    schema: dict[str, Any] = {"properties": {"prompt": {}, "seed": {}}}
    sent: list[dict[str, Any]] = []

    def validate(fields: Any, model: str) -> dict[str, Any]:
        sent.append(dict(fields))
        return dict(fields)

    rows = prepare_rows(
        [(1, {"prompt": "p", "seed": "3", "sku": "A/1", "name": "ignored"}, True)],
        model="m/x",
        validate=validate,
        schema_of=lambda model: schema,
        name_template="{sku}-{seed}",
    )
    assert sent == [{"prompt": "p", "seed": "3"}] and rows[0].name == "A-1-3"
    plain = prepare_rows(
        [(1, {"prompt": "p", "name": "Front view"}, False)],
        model="m/x",
        validate=validate,
        schema_of=lambda model: schema,
    )
    assert sent[-1] == {"prompt": "p"} and plain[0].name == "Front-view"
