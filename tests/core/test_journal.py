"""The crash journal's decisions: which outcomes close an entry, expiry, hostile ids, races."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flux_tools import (
    FluxAPIError,
    FluxConnectionError,
    Prediction,
    PredictionFailed,
    PredictionTimeout,
)
from flux_tools.kit import (
    JOURNAL_DIR,
    RETENTION_SECONDS,
    Journal,
    PendingPrediction,
    ended_without_image,
)

MODEL = "black-forest-labs/flux-2-pro"


def _failed(status: str) -> PredictionFailed:
    return PredictionFailed.from_prediction(
        Prediction.model_validate({"id": "p1", "status": status})
    )


@pytest.mark.parametrize(
    ("error", "owner", "over"),
    [
        (_failed("failed"), True, True),
        (_failed("canceled"), False, True),
        (PredictionTimeout("late", prediction_id="p1", canceled=True), True, True),
        (PredictionTimeout("late", prediction_id="p1", canceled=False), False, False),
        (FluxAPIError("gone", status=404), False, True),
        (FluxAPIError("busy", status=503), False, False),
        (FluxConnectionError("reset"), True, False),
        (KeyboardInterrupt(), True, True),  # the owner canceled it upstream
        (KeyboardInterrupt(), False, False),  # a watcher never cancels: still running
        (OSError("disk full"), True, False),  # the image is still at its URL
    ],
)
def test_which_outcomes_close_an_entry(error: BaseException, owner: bool, over: bool) -> None:
    assert ended_without_image(error, owner=owner) is over


def test_settle_removes_only_what_is_over(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.add(PendingPrediction("keep", MODEL, time.time()))
    journal.add(PendingPrediction("drop", MODEL, time.time()))
    assert journal.settle("keep", FluxConnectionError("reset"), owner=True) is False
    assert journal.settle("drop", _failed("failed"), owner=True) is True
    assert journal.settle(None, _failed("failed"), owner=True) is False  # never created
    assert [e.prediction_id for e in journal.entries()] == ["keep"]
    journal.remove("keep")
    assert not (tmp_path / JOURNAL_DIR).exists()  # the folder goes with its last entry


def test_take_up_drops_what_the_provider_no_longer_keeps(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    now = time.time()
    journal.add(PendingPrediction("old", MODEL, now - RETENTION_SECONDS - 1))
    journal.add(PendingPrediction("fresh", MODEL, now - 60, {"input_image": "a.png"}))
    (tmp_path / JOURNAL_DIR / "junk.json").write_text("[1, 2")
    live, expired = journal.take_up(now)
    assert [e.prediction_id for e in live] == ["fresh"]
    assert live[0].sources == {"input_image": "a.png"}
    assert [e.prediction_id for e in expired] == ["old"]
    assert [e.prediction_id for e in journal.entries()] == ["fresh"]  # junk and old removed
    assert sorted(p.name for p in (tmp_path / JOURNAL_DIR).iterdir()) == [
        journal._path("fresh").name
    ]


def test_an_id_never_names_a_path(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "out")
    hostile = "../../../../etc/x\n\x1b[2J"
    journal.add(PendingPrediction(hostile, MODEL, time.time()))
    [file] = (tmp_path / "out" / JOURNAL_DIR).iterdir()
    assert file.parent == tmp_path / "out" / JOURNAL_DIR and file.suffix == ".json"
    # Read back, an id that is not printable text is refused (and the file removed).
    assert journal.entries() == []


def test_concurrent_adds_and_removes_lose_no_entry(tmp_path: Path) -> None:
    """The last remove takes the folder away while other threads add: none is lost."""
    journal = Journal(tmp_path)
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for i in range(60):
                journal.add(PendingPrediction(f"w{worker}p{i}", MODEL, time.time()))
                journal.remove(f"w{worker}p{i}")
            journal.add(PendingPrediction(f"w{worker}last", MODEL, time.time()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(e.prediction_id for e in journal.entries()) == [f"w{n}last" for n in range(6)]
