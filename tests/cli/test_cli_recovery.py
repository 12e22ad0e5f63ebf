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
    assert "prediction unknownprediction1:" in resumed.stderr
    assert "it is over, dropped" in resumed.stderr
    assert f"prediction {hanging}:" in resumed.stderr and "kept for another try" in resumed.stderr
    assert [e.prediction_id for e in journal.entries()] == [hanging]
    assert emulator.stats.cancels == cancels  # resume only watches
