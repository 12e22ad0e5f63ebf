"""``flux-tools batch`` under ordinary bad luck, as real subprocesses killed with SIGKILL and
run again: a refused token, a burst of 503s, throttled reads, a torn ledger, a budget, a gateway
that cannot list, a full disk, a read-only folder, a model outside the registry. In every rerun
scenario the emulator's count of predictions equals the rows (or the budget's share of them):
nothing is paid twice, and no paid image is dropped while the provider keeps it."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_tools import MODELS
from flux_tools.emulator import Emulator, Fault
from flux_tools.kit import LEDGER_NAME, REPORT_NAME

from .test_batch_cli import batch_env, command, events, wait_for, write_rows

MakeEmulator = Callable[..., Emulator]
PRICE = MODELS["black-forest-labs/flux-pro"].price_usd


def run(
    rows: Path, out: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(rows, out, *extra), env=env, capture_output=True, text=True, timeout=120
    )


def kill_after(rows: Path, out: Path, env: dict[str, str], created: int, *extra: str) -> None:
    """Run the batch until ``created`` predictions are in its ledger, then SIGKILL it."""
    proc = subprocess.Popen(
        command(rows, out, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: sum(e["event"] == "created" for e in events(out)) >= created)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def saved_rows(out: Path) -> set[int]:
    return {e["row"] for e in events(out) if e["event"] == "saved"}


def clean_stderr(text: str) -> bool:
    return "Traceback" not in text and "ExceptionGroup" not in text


# -- 1. a prediction id, once known, is never forgotten ----------------------------------------


def test_a_refused_token_on_the_rerun_creates_nothing_and_the_good_one_saves_all(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    """Killed after 2 creates; rerun with a rotated key (401): both rows fail, saying what to
    do, nothing is created and nothing claims that nothing was billed; rerun with the good key:
    both images saved from the first two predictions."""
    emulator = make_emulator(honor_prefer_wait=False, latency=2.0, token="good-token")
    rows, out = write_rows(tmp_path / "rows.jsonl", 2), tmp_path / "out"
    good = {**batch_env(emulator, tmp_path), "FLUX_API_TOKEN": "good-token"}
    kill_after(rows, out, good, 2)
    assert emulator.stats.predictions_created == 2

    rotated = run(rows, out, {**good, "FLUX_API_TOKEN": "rotated-token"})
    assert rotated.returncode == 1, rotated.stderr
    assert rotated.stderr.count("check FLUX_API_TOKEN") == 2, rotated.stderr
    assert "the prediction is not created again" in rotated.stderr
    assert "nothing was billed" not in rotated.stderr
    assert emulator.stats.predictions_created == 2

    done = run(rows, out, good, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["done"] == 2 and report["created"] == 0
    assert emulator.stats.predictions_created == 2
    assert {r["prediction_id"] for r in report["rows"]} == set(emulator.predictions)


def test_a_burst_of_503s_on_the_first_status_check_is_outlasted(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=2.0)
    rows, out = write_rows(tmp_path / "rows.jsonl", 1), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    kill_after(rows, out, env, 1)
    emulator.add_fault(Fault("get", "503", times=6, retry_after=0.1))
    done = run(rows, out, env)
    assert done.returncode == 0, done.stderr
    assert emulator.stats.predictions_created == 1
    assert saved_rows(out) == {1}


def test_reads_throttled_during_a_rerun_create_nothing_twice(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    """12 rows killed after their creates; rerun while reads are throttled to 20 a minute and
    with a short --timeout: rows that could not be read fail and keep their prediction; the
    next run, unthrottled, saves them all. 12 predictions for 12 rows throughout."""
    emulator = make_emulator(honor_prefer_wait=False, latency=1.5)
    n = 12
    rows, out = write_rows(tmp_path / "rows.jsonl", n), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    kill_after(rows, out, env, n)
    emulator.set_rate_limits("reads=20/60")
    throttled = run(rows, out, env, "--timeout", "6")
    assert clean_stderr(throttled.stderr), throttled.stderr
    assert emulator.stats.predictions_created == n
    emulator.set_rate_limits(None)
    done = run(rows, out, env)
    assert done.returncode == 0, done.stderr
    assert emulator.stats.predictions_created == n
    assert saved_rows(out) == set(range(1, n + 1))


# -- 2. a torn ledger --------------------------------------------------------------------------


@pytest.mark.parametrize("padding", [b"", b"\0" * 512])
def test_a_ledger_torn_mid_line_loses_no_prediction(
    make_emulator: MakeEmulator, tmp_path: Path, padding: bytes
) -> None:
    """The last ``created`` line cut off after its id (a crash mid-write; NUL padding after a
    power loss), on a gateway that cannot list predictions: the id in the fragment is kept and
    its image saved, and the rerun's own events are whole lines."""
    emulator = make_emulator(honor_prefer_wait=False, latency=3.0)
    rows, out = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    kill_after(rows, out, env, 3)
    ledger = out / LEDGER_NAME
    data = ledger.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert json.loads(last)["event"] == "created"
    start = last.index(b'"prediction_id": "') + len(b'"prediction_id": "')
    cut = last.index(b'"', start) + 1  # just after the id: the rest of the line is lost
    ledger.write_bytes(data[: len(data) - len(last) - 1] + last[:cut] + padding)
    emulator.add_fault(Fault("list", "404", times=None))

    done = run(rows, out, env)
    assert done.returncode == 0, done.stderr
    assert emulator.stats.predictions_created == 3 and saved_rows(out) == {1, 2, 3}
    written = ledger.read_bytes().split(b"\n")
    unreadable = [x for x in written if x.strip(b"\0") and not x.startswith(b'{"event"')]
    assert len(unreadable) <= 1  # the old fragment; every event of the rerun is whole


# -- 3. a budget across reruns -----------------------------------------------------------------


def test_a_budget_holds_across_a_kill_and_a_rerun(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=2.5)
    rows, out = write_rows(tmp_path / "rows.jsonl", 4), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    budget = f"{2 * PRICE + 0.001:.3f}"  # two flux-pro images
    kill_after(rows, out, env, 2, "--budget", budget)
    again = run(rows, out, env, "--budget", budget, "--json")
    assert again.returncode == 1, again.stderr
    report = json.loads(again.stdout)
    assert report["done"] == 2 and report["refused"] == 2
    assert emulator.stats.predictions_created == 2
    assert report["cost"] <= float(budget)
    third = run(rows, out, env, "--budget", budget, "--json")
    assert json.loads(third.stdout)["refused"] == 2
    assert emulator.stats.predictions_created == 2


# -- 4. "not in the list" is not "never sent" --------------------------------------------------


def test_creates_whose_answer_was_lost_are_not_sent_again_on_an_empty_listing(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    """3 creates the API accepted but never answered; rerun on a gateway whose listing is
    empty: unresolved, nothing sent; rerun where the listing works: the 3 are found."""
    emulator = make_emulator(honor_prefer_wait=False, latency=0.3)
    rows, out = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    emulator.add_fault(Fault("create", "drop", times=3))
    first = run(rows, out, env)
    assert first.returncode == 1 and emulator.stats.predictions_created == 3

    emulator.add_fault(Fault("list", "empty", times=None))
    empty = run(rows, out, env, "--json")
    assert empty.returncode == 1, empty.stderr
    assert json.loads(empty.stdout)["unresolved"] == 3
    assert emulator.stats.predictions_created == 3

    emulator.clear_faults()
    found = run(rows, out, env, "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["recovered"] == 3
    assert emulator.stats.predictions_created == 3 and saved_rows(out) == {1, 2, 3}


# -- 8. folders that cannot be written; a model outside the registry ---------------------------


@contextlib.contextmanager
def mounted(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs of our own at ``folder`` (root only), unmounted at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """A folder this process cannot write: a read-only mount as root, else its mode."""
    if os.geteuid() == 0:
        with mounted(folder, "ro,size=1m") as path:
            yield path
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def test_a_read_only_out_folder_pays_for_nothing(emulator: Emulator, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 2)
    env = batch_env(emulator, tmp_path)
    with read_only(tmp_path / "ro") as folder:
        for args in (
            command(rows, folder / "shoot"),
            [sys.executable, "-m", "flux_tools", "generate", "a fox", "--out", str(folder)],
        ):
            done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 1, done.stderr
            assert "cannot be written" in done.stderr or "Read-only" in done.stderr
            assert clean_stderr(done.stderr) and len(done.stderr.strip().splitlines()) <= 3
    assert emulator.stats.creates == 0


def test_a_disk_that_fills_up_mid_batch_stops_it_in_one_line_and_the_rerun_pays_nothing_twice(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=0.6, image_scale=0.1)
    n = 8
    rows = write_rows(tmp_path / "rows.jsonl", n)
    env = batch_env(emulator, tmp_path)
    with mounted(tmp_path / "disk", "size=2m") as disk:
        out = disk / "shoot"
        proc = subprocess.Popen(
            command(rows, out, "--concurrency", "2"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: bool(saved_rows(out)))
        filler = disk / "filler"
        with open(filler, "wb") as fill, contextlib.suppress(OSError):
            while True:
                fill.write(b"\0" * 65536)
                fill.flush()
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1, stderr
        assert clean_stderr(stderr), stderr
        assert "No space left on device" in stderr
        assert len(stderr.strip().splitlines()) <= 12, stderr  # progress lines and one error
        created = emulator.stats.predictions_created
        assert created < n
        filler.unlink()
        done = run(rows, out, env)
        assert done.returncode == 0, done.stderr
        assert emulator.stats.predictions_created == n
        assert saved_rows(out) == set(range(1, n + 1))


SKETCH = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string"},
                    "strokes": {"type": "integer", "minimum": 1, "maximum": 9},
                },
            }
        }
    }
}


def test_a_model_outside_the_registry_is_checked_from_its_live_schema_before_any_create(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.add_model("acme/sketch", SKETCH)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"prompt": "fine", "strokes": 3}\n{"prompt": "x", "strokes": 12}\n{"prompt": "y", '
        '"colour": "red"}\n'
    )
    env = batch_env(emulator, tmp_path)
    for extra in (("--dry-run",), ()):
        done = run(rows, tmp_path / "out", env, "--model", "acme/sketch", *extra)
        assert done.returncode == 2, done.stderr
        assert "row 2: strokes" in done.stderr and "row 3: colour" in done.stderr
    assert emulator.stats.creates == 0


# -- batches as deliverables: files named by their rows, and a report ---------------------------


def test_files_are_named_by_their_rows_with_a_report_and_names_hold_across_reruns(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=0.3)
    rows = tmp_path / "products.csv"
    rows.write_text(
        "sku,prompt,seed\nA-1,red shoe,1\nB/2,blue shoe,2\nA-1,red shoe again,3\nC 3,green,4\n"
    )
    out = tmp_path / "shoot"
    out.mkdir()
    (out / "C-3-4.webp").write_bytes(b"the user's own file")  # not ours: never replaced
    env = batch_env(emulator, tmp_path)
    first = run(rows, out, env, "--name", "{sku}-{seed}")
    assert first.returncode == 0, first.stderr
    sent = sorted(json.dumps(p.input, sort_keys=True) for p in emulator.predictions.values())
    assert all("sku" not in s for s in sent)
    report = list(csv.DictReader((out / f"{REPORT_NAME}.csv").open()))
    assert [r["row"] for r in report] == ["1", "2", "3", "4"]
    assert list(report[0]) == [
        "row",
        "name",
        "status",
        "files",
        "prediction_id",
        "cost",
        "error",
    ]
    names = {r["name"]: r["files"] for r in report}
    assert set(names) == {"A-1-1", "B-2-2", "A-1-3", "C-3-4"}
    for stem in ("A-1-1", "B-2-2", "A-1-3"):
        assert Path(names[stem]).stem == stem and (out / names[stem]).exists()
    assert (out / "C-3-4.webp").read_bytes() == b"the user's own file"
    assert Path(names["C-3-4"]).stem == report[3]["prediction_id"]  # kept its id's name
    assert all(r["status"] == "saved" and float(r["cost"]) == PRICE for r in report)
    jsonl = [json.loads(x) for x in (out / f"{REPORT_NAME}.jsonl").read_text().splitlines()]
    assert [x["name"] for x in jsonl] == ["A-1-1", "B-2-2", "A-1-3", "C-3-4"]

    again = run(rows, out, env, "--name", "{sku}-{seed}")
    assert again.returncode == 0, again.stderr
    assert list(csv.DictReader((out / f"{REPORT_NAME}.csv").open())) == report
    assert emulator.stats.predictions_created == 4


def test_a_name_column_names_the_files_and_is_not_sent(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=0.3)
    rows = tmp_path / "rows.jsonl"
    lines: list[dict[str, Any]] = [
        {"prompt": "front", "name": "Front view"},
        {"prompt": "back", "name": "Front view"},
        {"prompt": "drafts", "name": "../drafts", "model": "flux-schnell", "num_outputs": 2},
    ]
    rows.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    done = run(rows, out, batch_env(emulator, tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    files = {r["row"]: [Path(f).name for f in r["files"]] for r in json.loads(done.stdout)["rows"]}
    assert [Path(f).stem for f in files[1]] == ["Front-view"]
    assert [Path(f).stem for f in files[2]] == ["Front-view-2"]
    assert [Path(f).stem for f in files[3]] == ["drafts_0", "drafts_1"]
    assert all("name" not in p.input for p in emulator.predictions.values())
    assert not (tmp_path / "drafts_0.webp").exists()


def test_a_report_lists_rows_done_in_earlier_runs(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=0.3)
    rows, out = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    partial = tmp_path / "two.jsonl"
    partial.write_text("".join(rows.read_text().splitlines(keepends=True)[:2]))
    assert run(partial, out, env).returncode == 0
    assert run(rows, out, env).returncode == 0
    report = list(csv.DictReader((out / f"{REPORT_NAME}.csv").open()))
    assert [(r["row"], r["status"]) for r in report] == [
        ("1", "saved"),
        ("2", "saved"),
        ("3", "saved"),
    ]
    assert emulator.stats.predictions_created == 3
    assert all(r["files"] and (out / r["files"]).exists() for r in report)
