"""``flux-tools generate`` killed or unable to save: the journal keeps the billed prediction and
``flux-tools resume`` saves its image. Real subprocesses against the emulator."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from flux_tools import FluxClient, Running
from flux_tools.emulator import Emulator, Fault
from flux_tools.kit import JOURNAL_DIR, Journal, PendingPrediction

from .test_cli import cli_env, run

ID_IN_PROGRESS = re.compile(r"\(prediction ([a-z0-9]{8,})\)")


def journal_files(folder: Path) -> list[Path]:
    directory = folder / JOURNAL_DIR
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg", ".webp"))


def test_a_generate_killed_mid_generation_is_saved_by_resume(
    emulator: Emulator, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flux_tools",
            "generate",
            "a lighthouse [emulator:latency=4]",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(emulator),
    )
    assert proc.stderr is not None
    # The first progress line names the prediction: the user has its id before anything else.
    first = proc.stderr.readline()
    match = ID_IN_PROGRESS.search(first)
    assert match is not None, first
    pid = match.group(1)
    assert len(journal_files(out)) == 1, "journaled before the first progress line"
    proc.send_signal(signal.SIGKILL)  # no cancel, no save, no cleanup
    proc.communicate(timeout=30)
    assert emulator.prediction_json(pid)["status"] in ("starting", "processing")
    assert images_in(out) == []

    # The next run in that folder says what is pending and how to get it.
    quick = run(emulator, "generate", "a quick sketch", "--out", str(out))
    assert quick.returncode == 0, quick.stderr
    assert f"1 earlier prediction(s) in {out} were not saved ({pid})" in quick.stderr
    assert f"flux-tools resume --out {out}" in quick.stderr

    resumed = run(emulator, "resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    saved = [Path(line) for line in resumed.stdout.split()]
    assert [p.stem for p in saved] == [pid] and saved[0].stat().st_size > 0
    assert journal_files(out) == [] and not (out / JOURNAL_DIR).exists()
    assert emulator.prediction_json(pid)["status"] == "succeeded"
    assert emulator.stats.creates == 2 and emulator.stats.cancels == 0  # watched, not canceled

    again = run(emulator, "resume", "--out", str(out))
    assert again.returncode == 0 and "nothing to resume" in again.stderr
    assert emulator.stats.creates == 2


def test_an_image_that_could_not_be_downloaded_is_saved_by_resume(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.add_fault(Fault("file", "404", times=None))
    failed = run(emulator, "generate", "a red kite", "--out", str(tmp_path))
    assert failed.returncode == 1
    assert f"flux-tools resume --out {tmp_path}" in failed.stderr
    [entry] = Journal(tmp_path).entries()
    assert emulator.prediction_json(entry.prediction_id)["status"] == "succeeded"

    emulator.clear_faults()
    resumed = run(emulator, "resume", "--out", str(tmp_path), "--json")
    assert resumed.returncode == 0, resumed.stderr
    [summary] = json.loads(resumed.stdout)
    assert summary["prediction_id"] == entry.prediction_id
    assert [p.stem for p in images_in(tmp_path)] == [entry.prediction_id]
    assert journal_files(tmp_path) == []
    assert emulator.stats.creates == 1


def test_a_generation_that_ends_leaves_no_journal(emulator: Emulator, tmp_path: Path) -> None:
    done = run(emulator, "generate", "a calm sea", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    failed = run(emulator, "generate", "a storm [emulator:fail]", "--out", str(tmp_path))
    assert failed.returncode == 1
    assert not (tmp_path / JOURNAL_DIR).exists()  # no clutter left in the user's folder
    assert "were not saved" not in failed.stderr


def test_resume_drops_what_cannot_be_had_and_keeps_what_may_yet(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = Journal(tmp_path)
    model = "black-forest-labs/flux-pro"
    journal.add(PendingPrediction("oldprediction1", model, time.time() - 7200))
    journal.add(PendingPrediction("unknownprediction1", model, time.time()))
    # A prediction still running when resume's deadline passes: kept, never canceled.
    with FluxClient(base_url=emulator.base_url, api_token="cli-token") as client:
        running = client.run(prompt="a slow one [emulator:hang]", budget=0)
    assert isinstance(running, Running)
    hanging = running.prediction_id
    journal.add(PendingPrediction(hanging, model, time.time()))
    cancels = emulator.stats.cancels

    resumed = run(emulator, "resume", "--out", str(tmp_path), "--timeout", "1")
    assert resumed.returncode == 1
    assert "prediction oldprediction1 was created 120 minutes ago" in resumed.stderr
    # A 404 is no proof that it is over (a wrong base URL says it too): kept for its hour.
    assert "prediction unknownprediction1:" in resumed.stderr
    assert "kept: the API at FLUX_BASE_URL does not know it" in resumed.stderr
    assert f"prediction {hanging}:" in resumed.stderr and "kept for another try" in resumed.stderr
    assert sorted(e.prediction_id for e in journal.entries()) == sorted(
        ["unknownprediction1", hanging]
    )
    assert emulator.stats.cancels == cancels  # resume only watches


def test_resume_on_the_wrong_base_url_keeps_the_entry_for_the_right_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The base URL's path is wrong (same host): every id is a 404 there. The entry stays,
    the command says what to check and fails; on the right base URL the image is saved."""
    emulator.add_fault(Fault("file", "404", times=None))
    failed = run(emulator, "generate", "a red kite", "--out", str(tmp_path))
    assert failed.returncode == 1
    [entry] = Journal(tmp_path).entries()
    emulator.clear_faults()
    wrong = {**cli_env(emulator), "FLUX_BASE_URL": emulator.origin + "/v2"}
    resumed = subprocess.run(
        [sys.executable, "-m", "flux_tools", "resume", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=wrong,
    )
    assert resumed.returncode == 1, resumed.stderr
    assert "does not know it" in resumed.stderr and "FLUX_BASE_URL" in resumed.stderr
    assert [e.prediction_id for e in Journal(tmp_path).entries()] == [entry.prediction_id]
    # Another API (another origin) does not even see it: it is left for its own.
    other = {**cli_env(emulator), "FLUX_BASE_URL": "http://127.0.0.1:9/v1"}
    elsewhere = subprocess.run(
        [sys.executable, "-m", "flux_tools", "resume", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=other,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "1 prediction(s) of another API are left for it" in elsewhere.stderr
    right = run(emulator, "resume", "--out", str(tmp_path))
    assert right.returncode == 0, right.stderr
    assert [p.stem for p in images_in(tmp_path)] == [entry.prediction_id]
    assert journal_files(tmp_path) == [] and emulator.stats.creates == 1


def plant_project(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "package.json": b'{"name": "my-project", "version": "1.0.0"}\n',
        "tsconfig.json": b'{"compilerOptions": {}}\n',
        "settings.json": b"{\n  // a comment: not JSON\n}\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_journal_folder_that_is_a_link_is_refused_and_nothing_is_deleted(
    emulator: Emulator, tmp_path: Path
) -> None:
    """``images/.flux-journal -> ../my-project``: generate and resume refuse in one line, before
    anything is paid for, and the project's files are all there."""
    project = plant_project(tmp_path / "my-project")
    images = tmp_path / "images"
    images.mkdir()
    (images / JOURNAL_DIR).symlink_to("../my-project")
    for args in (("generate", "a fox"), ("resume",)):
        done = run(emulator, *args, "--out", str(images))
        assert done.returncode == 1, done.stderr
        assert "is a symbolic link" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) <= 2, done.stderr  # the error, advice
    assert contents(tmp_path / "my-project") == project
    assert emulator.stats.creates == 0


def test_a_journal_link_to_the_output_folder_deletes_no_sidecar(
    emulator: Emulator, tmp_path: Path
) -> None:
    done = run(emulator, "generate", "a calm sea", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (tmp_path / "notes.json").write_text("{ not json")
    (tmp_path / "0123456789abcdef0123456789abcdef.json").write_text('{"prediction_id": 1}')
    before = contents(tmp_path)
    (tmp_path / JOURNAL_DIR).symlink_to(".")
    resumed = run(emulator, "resume", "--out", str(tmp_path))
    assert resumed.returncode == 1 and "is a symbolic link" in resumed.stderr
    assert contents(tmp_path) == before
