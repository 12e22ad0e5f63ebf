"""``flux-tools batch`` as a real subprocess against the emulator: killed with SIGKILL halfway
and run again (every row made once), interrupted with Ctrl-C, bad rows, dry runs, and the
durations a CLI process leaves for the next one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flux_tools.emulator import Emulator
from flux_tools.kit import LEDGER_NAME

MakeEmulator = Callable[..., Emulator]


def batch_env(emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    return {
        **env,
        "FLUX_BASE_URL": emulator.base_url,
        "FLUX_API_TOKEN": "cli-token",
        "FLUX_CACHE_DIR": str(tmp_path / "cache"),
    }


def command(rows: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flux_tools", "batch", str(rows), "--out", str(out), *extra]


def write_rows(path: Path, count: int) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"product {i}", "seed": i}) + "\n" for i in range(count))
    )
    return path


def events(out: Path) -> list[dict[str, Any]]:
    path = out / LEDGER_NAME
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def wait_for(predicate: Callable[[], bool], seconds: float = 60) -> None:
    ends = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > ends:
            raise AssertionError("the batch did not get there in time")
        time.sleep(0.05)


def test_killed_halfway_then_rerun_pays_each_row_once(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=1.0, latency_jitter=0.5)
    n = 40
    rows, out = write_rows(tmp_path / "rows.jsonl", n), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    proc = subprocess.Popen(
        command(rows, out, "--concurrency", "10"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: sum(e["event"] == "saved" for e in events(out)) >= n // 2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    created_before = emulator.stats.predictions_created
    assert n // 2 <= created_before < n  # killed halfway: some rows never started

    done = subprocess.run(command(rows, out, "--json"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["done"] == n and report["failed"] == 0
    assert report["skipped"] >= n // 2
    # Every row made exactly once across both runs: no duplicate, nothing paid twice.
    assert emulator.stats.predictions_created == n
    assert emulator.stats.creates == n
    prompts = sorted(p.input["prompt"] for p in emulator.predictions.values())
    assert prompts == sorted(f"product {i}" for i in range(n))
    files = {f for row in report["rows"] for f in row["files"]}
    assert len(files) == n and all(Path(f).exists() for f in files)


def test_ctrl_c_cancels_what_runs_and_the_rerun_finishes(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=4.0)
    n = 6
    rows, out = write_rows(tmp_path / "rows.jsonl", n), tmp_path / "out"
    env = batch_env(emulator, tmp_path)
    proc = subprocess.Popen(
        command(rows, out, "--concurrency", "3"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: sum(e["event"] == "created" for e in events(out)) >= 3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    first = list(emulator.predictions)
    assert len(first) == 3 and emulator.stats.cancels == 3
    assert all(emulator.prediction_json(pid)["status"] == "canceled" for pid in first)
    assert len([e for e in events(out) if e["event"] == "canceled"]) == 3

    done = subprocess.run(command(rows, out, "--json"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["done"] == n
    # The canceled ones were made again (they produced nothing); each row has one image.
    succeeded = [
        p.input["prompt"]
        for pid, p in emulator.predictions.items()
        if emulator.prediction_json(pid)["status"] == "succeeded"
    ]
    assert sorted(succeeded) == sorted(f"product {i}" for i in range(n))


def test_bad_rows_exit_2_naming_row_and_field(emulator: Emulator, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "fine"}\n{"prompt": "bad", "guidance": 99}\n')
    done = subprocess.run(
        command(rows, tmp_path / "out"),
        env=batch_env(emulator, tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "row 2: guidance" in done.stderr
    assert emulator.stats.creates == 0


def test_dry_run_prints_the_cost_and_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,model,num_outputs\na,flux-pro,\nb,flux-schnell,4\n")
    done = subprocess.run(
        command(rows, tmp_path / "out", "--dry-run"),
        env=batch_env(emulator, tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    from flux_tools import MODELS

    expected = (
        MODELS["black-forest-labs/flux-pro"].price_usd
        + 4 * MODELS["black-forest-labs/flux-schnell"].price_usd
    )
    assert f"2 rows are valid; estimated cost ${expected:.2f}" in done.stdout
    assert emulator.stats.creates == 0


def test_a_cli_process_leaves_its_durations_for_the_next(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, latency=0.7)
    env = batch_env(emulator, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "flux_tools", "generate", "a fox", "--no-save"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "cache" / "durations.json").read_text())
    (samples,) = [
        v["samples"]
        for k, v in saved["durations"].items()
        if k == "127.0.0.1 black-forest-labs/flux-pro"
    ]
    assert len(samples) == 1 and 0.7 <= samples[0] < 1.5
