"""A mistyped flag, subcommand, choice or batch column is answered with the nearest known one.

Each command run as a real subprocess (``flux-tools``, its subcommands, ``flux-mcp``), before
anything is sent: the emulator counts no request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flux_tools.emulator import Emulator

MCP = [sys.executable, "-c", "import sys, mcp_server; sys.exit(mcp_server.main())"]


def run(emulator: Emulator, command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    env |= {"FLUX_BASE_URL": emulator.base_url, "FLUX_API_TOKEN": "cli-token"}
    env["FLUX_CACHE_DIR"] = str(cwd / "cache")
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False
    )


def flux_tools(*args: str) -> list[str]:
    return [sys.executable, "-m", "flux_tools", *args]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            flux_tools("generate", "--stpes", "30", "x"),
            "unrecognized argument --stpes: did you mean --steps?",
        ),
        (
            flux_tools("generate", "--aspect_ratio=16:9", "x"),
            "unrecognized argument --aspect_ratio: did you mean --aspect-ratio?",
        ),
        (flux_tools("generat", "x"), "did you mean 'generate'?"),
        (
            flux_tools("edit", "car.png", "gold", "--outt", "o"),
            "unrecognized argument --outt: did you mean --out?",
        ),
        (
            flux_tools("batch", "rows.csv", "--out", "o", "--concurency", "3"),
            "unrecognized argument --concurency: did you mean --concurrency?",
        ),
        (
            flux_tools("resume", "--jsno"),
            "unrecognized argument --jsno: did you mean --json?",
        ),
        (
            flux_tools("emulator", "--prot", "0"),
            "unrecognized argument --prot: did you mean --port?",
        ),
        (
            flux_tools("mcp", "--transprot", "stdio"),
            "unrecognized argument --transprot: did you mean --transport?",
        ),
        ([*MCP, "--output-dri", "/tmp"], "did you mean --output-dir?"),
    ],
    ids=lambda value: " ".join(value[3:]) if isinstance(value, list) else None,
)
def test_a_typo_names_the_nearest_flag(
    emulator: Emulator, tmp_path: Path, command: list[str], expected: str
) -> None:
    done = run(emulator, command, tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert emulator.stats.requests == []


def test_a_choice_typo_names_the_nearest_choice(emulator: Emulator, tmp_path: Path) -> None:
    done = run(emulator, flux_tools("generate", "--aspect-ratio", "16:8", "x"), tmp_path)
    assert done.returncode == 2
    assert done.stderr.rstrip().endswith("did you mean '16:9'?")


def test_an_unknown_flag_far_from_any_says_where_the_flags_are(
    emulator: Emulator, tmp_path: Path
) -> None:
    done = run(emulator, flux_tools("generate", "--zzzzzz", "x"), tmp_path)
    assert done.returncode == 2
    assert "unrecognized argument --zzzzzz (all flags: flux-tools generate --help)" in done.stderr
    assert "did you mean" not in done.stderr


def test_a_batch_column_typo_names_the_row_and_the_field(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "rows.csv").write_text("prompt,stpes\na red mug,20\n")
    done = run(emulator, flux_tools("batch", "rows.csv", "--out", "shoot"), tmp_path)
    assert done.returncode == 2, done.stderr
    assert "row 1: stpes" in done.stderr and "did you mean 'steps'?" in done.stderr
    assert emulator.stats.requests == []
