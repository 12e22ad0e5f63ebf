"""The ``flux-tools`` command, run as a real subprocess against the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from flux_tools import FluxProInput
from flux_tools.cli import build_parser
from flux_tools.emulator import Emulator
from flux_tools.kit import JOURNAL_DIR

from ..conftest import requests_to


def run(
    emulator: Emulator, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flux_tools", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=cli_env(emulator),
    )


def cli_env(emulator: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    return {**env, "FLUX_BASE_URL": emulator.base_url, "FLUX_API_TOKEN": "cli-token"}


def test_generate_saves_and_prints(emulator: Emulator, tmp_path: Path) -> None:
    done = run(emulator, "generate", "a red fox", "--aspect-ratio", "16:9", "--seed", "5",
               "--format", "png", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    url, path = done.stdout.split()
    assert url.startswith(emulator.origin)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height
    assert Path(path).parent == tmp_path
    assert "succeeded" in done.stderr and "seed 5" in done.stderr
    (create,) = requests_to(emulator, "create")
    assert create.headers["authorization"] == "Bearer cli-token"


def test_generate_json(emulator: Emulator, tmp_path: Path) -> None:
    done = run(emulator, "generate", "a blue fox", "--json", "--no-prompt-upsampling",
               "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and len(result["files"]) == 1
    assert result["input"] == {"prompt": "a blue fox", "prompt_upsampling": False}
    assert Path(result["files"][0]).exists()


def test_every_input_field_is_a_flag() -> None:
    parser, fields = build_parser("generate", "black-forest-labs/flux-pro")
    assert set(fields) == set(FluxProInput.model_fields) - {"prompt"}
    commands = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    help_text = commands.choices["generate"].format_help()  # type: ignore[index]
    for name, info in FluxProInput.model_fields.items():
        if name != "prompt":
            assert "--" + name.replace("_", "-") in help_text
            assert info.description and info.description.split()[0] in help_text
    assert "[1-50]" in help_text and "16:9" in help_text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "99"], "--steps: "),
        (["--steps", "many"], "--steps: invalid int value"),
        (["--aspect-ratio", "7:5"], "--aspect-ratio: invalid choice"),
        (["--guidance", "9"], "allowed: 2 to 5"),
        (["--image-prompt", "/etc/passwd"], "--image-prompt"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    emulator: Emulator, args: list[str], message: str
) -> None:
    done = run(emulator, "generate", "a fox", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert emulator.stats.creates == 0


def test_api_failure_exits_1_with_the_cause(emulator: Emulator) -> None:
    done = run(emulator, "generate", "a fox [emulator:moderate]", "--no-save")
    assert done.returncode == 1
    assert "ContentModerated" in done.stderr and "E005" in done.stderr


def test_ctrl_c_cancels_the_prediction(emulator: Emulator, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_tools", "generate", "a fox [emulator:hang]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(emulator),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while not requests_to(emulator, "get") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert emulator.stats.cancels == 1
    (pid,) = list(emulator.predictions)
    assert emulator.prediction_json(pid)["status"] == "canceled"
    assert f"prediction {pid} was canceled" in err
    # It was journaled in the output folder (here the working one) until then: canceled
    # upstream, nothing is left to resume, and no journal folder is left behind.
    assert not (tmp_path / JOURNAL_DIR).exists()


def test_emulator_subcommand(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_tools", "emulator", "--port", "0", "--latency", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("FLUX emulator listening on http://127.0.0.1:")
        base_url = line.split()[-1]
        from flux_tools import FluxClient

        with FluxClient(api_token="x", base_url=base_url) as client:
            assert client.generate(prompt="through the subcommand").status == "succeeded"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_edit_a_file(emulator: Emulator, tmp_path: Path) -> None:
    photo = tmp_path / "car.jpg"
    Image.new("RGB", (600, 400), (200, 30, 30)).save(photo)
    done = run(emulator, "edit", str(photo), "make the car gold", "--out", str(tmp_path / "out"),
               "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "black-forest-labs/flux-kontext-pro"
    (saved,) = result["files"]
    with Image.open(saved) as image:
        assert image.format == "PNG" and image.width > image.height  # 3:2 like the input
    assert result["input"]["input_image"].startswith("data:image/jpeg;base64 (")


def test_edit_flags_follow_the_edit_model(emulator: Emulator, tmp_path: Path) -> None:
    _, fields = build_parser("edit", "black-forest-labs/flux-kontext-pro")
    assert "input_image" not in fields and "aspect_ratio" in fields
    done = run(emulator, "edit", "https://example.com/a.png", "gold", "--steps", "3")
    # flux-kontext-pro has no steps; no other flag is near enough to be suggested.
    assert done.returncode == 2 and "unrecognized argument --steps (" in done.stderr
    assert "did you mean" not in done.stderr
    done = run(emulator, "edit", "https://example.com/a.png", "gold", "--model", "flux-schnell")
    assert done.returncode == 2 and "does not edit images" in done.stderr
