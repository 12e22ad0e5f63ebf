"""The crash journal's decisions: which outcomes close an entry, expiry, hostile ids, races."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flux_tools import (
    ConfigError,
    FluxAPIError,
    FluxConnectionError,
    Prediction,
    PredictionFailed,
    PredictionTimeout,
)
from flux_tools.kit import (
    JOURNAL_DIR,
    JOURNAL_MARKER,
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
        # A wrong base URL says 404 too: kept until the provider's retention is over.
        (FluxAPIError("gone", status=404), False, False),
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
    assert [e.prediction_id for e in journal.entries()] == ["fresh"]
    # The old entry is gone; junk (not an entry) is left alone, never deleted.
    assert sorted(p.name for p in (tmp_path / JOURNAL_DIR).iterdir()) == sorted(
        [JOURNAL_MARKER, "junk.json", journal._path("fresh").name]
    )


@pytest.mark.parametrize(
    "hostile", ["../../../../etc/x\n\x1b[2J", "a" * 201, "tab\there", "", "line\nbreak"]
)
def test_an_id_the_journal_cannot_read_back_is_not_written(tmp_path: Path, hostile: str) -> None:
    """``add`` takes exactly the ids ``entries`` reads back: nothing written only to be
    deleted on the next read."""
    journal = Journal(tmp_path / "out")
    assert journal.add(PendingPrediction(hostile, MODEL, time.time())) is False
    assert not (tmp_path / "out" / JOURNAL_DIR).exists()
    ok = "a" * 200
    assert journal.add(PendingPrediction(ok, MODEL, time.time())) is True
    assert [e.prediction_id for e in journal.entries()] == [ok]


def plant(folder: Path) -> dict[str, bytes]:
    """The user's files: JSON like entries, one named like one, hidden ones."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "package.json": b'{"name": "my-project"}',
        "tsconfig.json": b"{}",
        "settings.json": b"[1, 2",
        "0123456789abcdef0123456789abcdef.json": b"not an entry",
        ".hidden.json": b"{}",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def untouched(folder: Path, files: dict[str, bytes]) -> bool:
    return {p.name: p.read_bytes() for p in folder.iterdir()} == files


@pytest.mark.parametrize("target", ["../my-project", ".", "/"])
def test_a_journal_folder_that_is_a_link_is_refused(tmp_path: Path, target: str) -> None:
    project = plant(tmp_path / "my-project")
    out = tmp_path / "images"
    out.mkdir()
    (out / "sidecar.json").write_text('{"prediction_id": "abc"}')
    (out / JOURNAL_DIR).symlink_to(target)
    journal = Journal(out)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        journal.check()
    assert journal.entries() == [] and journal.take_up() == ([], [])
    assert journal.add(PendingPrediction("p1", MODEL, time.time())) is False
    journal.remove("p1")
    assert untouched(tmp_path / "my-project", project)
    assert (out / "sidecar.json").exists() and sorted(p.name for p in out.iterdir()) == [
        JOURNAL_DIR,
        "sidecar.json",
    ]


def test_a_journal_folder_flux_tools_did_not_make_is_left_alone(tmp_path: Path) -> None:
    files = plant(tmp_path / JOURNAL_DIR)
    journal = Journal(tmp_path)
    with pytest.raises(ConfigError, match="not made by flux-tools"):
        journal.check()
    assert journal.entries() == []
    assert journal.add(PendingPrediction("p1", MODEL, time.time())) is False
    assert untouched(tmp_path / JOURNAL_DIR, files)


def test_an_earlier_versions_journal_of_entries_only_is_adopted(tmp_path: Path) -> None:
    legacy = Journal(tmp_path)
    legacy.add(PendingPrediction("p1", MODEL, time.time()))
    (tmp_path / JOURNAL_DIR / JOURNAL_MARKER).unlink()  # as an earlier version left it
    journal = Journal(tmp_path, api="https://api.replicate.com/v1")
    journal.check()
    assert [e.prediction_id for e in journal.entries()] == ["p1"]  # no API recorded: ours
    journal.remove("p1")
    assert not (tmp_path / JOURNAL_DIR).exists()


def test_each_api_and_each_person_see_only_their_entries(tmp_path: Path) -> None:
    replicate = Journal(tmp_path, api="https://api.replicate.com/v1")
    gateway = Journal(tmp_path, api="https://gateway.example/replicate/v1")
    alice = Journal(tmp_path, api="https://gateway.example/other/v1", owner="alice")
    replicate.add(PendingPrediction("r1", MODEL, time.time()))
    gateway.add(PendingPrediction("g1", MODEL, time.time()))
    alice.add(PendingPrediction("a1", MODEL, time.time()))
    assert [e.prediction_id for e in replicate.entries()] == ["r1"]
    assert [e.prediction_id for e in gateway.entries()] == ["g1"]  # same origin, not alice's
    assert [e.prediction_id for e in alice.entries()] == ["a1"]
    assert replicate.entries()[0].api == "https://api.replicate.com:443"
    assert alice.entries()[0].owner == "alice" and gateway.entries()[0].owner is None
    # Another API's entry is neither taken up nor dropped, even past its hour.
    stale = Journal(tmp_path, api="https://other.example")
    stale.add(PendingPrediction("o1", MODEL, time.time() - 2 * RETENTION_SECONDS))
    assert replicate.take_up() == (replicate.entries(), [])
    assert [e.prediction_id for e in stale.entries()] == ["o1"]
    # A server working for everyone on one API takes up every person's entries of that API,
    # each keeping its owner; what it writes for a person says whose it is.
    server = Journal(tmp_path, api="https://gateway.example/other/v1", every_owner=True)
    server.add(PendingPrediction("b1", MODEL, time.time(), owner="bob"))
    server.add(PendingPrediction("l1", MODEL, time.time()))
    owners = {e.prediction_id: e.owner for e in server.entries()}
    assert owners == {"g1": None, "a1": "alice", "b1": "bob", "l1": None}
    assert [e.prediction_id for e in alice.entries()] == ["a1"]  # Bob's is not Alice's


def test_a_half_written_entry_whose_id_is_readable_is_kept_and_resumed(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.add(PendingPrediction("whole", MODEL, time.time()))
    torn = journal._path("torn123")
    torn.write_text(f'{{"prediction_id": "torn123", "model": "{MODEL}", "cr')
    unreadable = journal._path("nothing")
    unreadable.write_bytes(b"\0" * 64)  # a power loss: no id to read
    entries = {e.prediction_id: e for e in journal.entries()}
    assert sorted(entries) == ["torn123", "whole"]
    assert entries["torn123"].damaged and entries["torn123"].model == MODEL
    assert journal.get("torn123") == entries["torn123"]
    journal.remove("torn123")  # saved: the damaged entry closes like any other
    assert not torn.exists() and unreadable.exists()
    journal.remove("nothing")  # not an entry in the exact format: left alone
    assert unreadable.exists()


def test_a_file_holding_another_id_is_not_removed_under_this_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.add(PendingPrediction("mine", MODEL, time.time()))
    journal._path("mine").replace(journal._path("someone"))  # "someone"'s name, "mine" inside
    journal.remove("someone")
    assert journal._path("someone").exists()
    assert journal.entries() == []  # a name that is not the digest of its id: no entry


@pytest.mark.parametrize("round_", range(8))
def test_concurrent_adds_and_removes_lose_no_entry(
    tmp_path: Path, round_: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The last remove takes the folder away while other threads add: none is lost, and none
    is refused (an entry removed, or the folder taken away, between a look and a read is not a
    stranger's file)."""
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
    assert "could not record" not in caplog.text
