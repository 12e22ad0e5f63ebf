"""``flux-tools edit IMAGE... PROMPT``: one image, or several for models that take references,
run as a real subprocess against the emulator."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from PIL import Image

from flux_tools.cli import build_parser
from flux_tools.emulator import Emulator

from ..conftest import requests_to
from .test_cli import run


def make_images(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for name, colour in (("person.png", (200, 30, 30)), ("room.jpg", (30, 200, 40))):
        Image.new("RGB", (320, 240), colour).save(folder / name)
        paths.append(folder / name)
    return paths


def test_edit_composes_from_several_images(emulator: Emulator, tmp_path: Path) -> None:
    person, room = make_images(tmp_path / "in")
    first = run(emulator, "generate", "a lamp", "--out", str(tmp_path / "first"), "--json")
    assert first.returncode == 0, first.stderr
    earlier = json.loads(first.stdout)
    inline = "data:image/png;base64," + base64.b64encode(person.read_bytes()).decode()
    done = run(
        emulator, "edit", "--model", "flux-2-pro", str(person), str(room), inline,
        earlier["prediction_id"], "the person from image 1 in the room of image 2",
        "--resolution", "0.5 MP", "--out", str(tmp_path / "out"), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "black-forest-labs/flux-2-pro"
    assert len(requests_to(emulator, "create")) == 2
    sent = emulator.prediction_json(result["prediction_id"])["input"]
    assert sent["prompt"] == "the person from image 1 in the room of image 2"
    assert sent["resolution"] == "0.5 MP"
    kinds = [s.split(";")[0] if s.startswith("data:") else "url" for s in sent["input_images"]]
    assert kinds == ["data:image/png", "data:image/jpeg", "data:image/png", "url"]
    assert sent["input_images"][3] == earlier["urls"][0]
    assert Path(result["files"][0]).exists()


def test_one_image_still_edits_with_kontext(emulator: Emulator, tmp_path: Path) -> None:
    person, room = make_images(tmp_path / "in")
    done = run(emulator, "edit", str(person), str(room), "swap them")
    assert done.returncode == 2
    assert "edits one image; 2 were given" in done.stderr and "flux-2-pro" in done.stderr
    assert requests_to(emulator, "create") == []


def test_a_refused_image_names_its_position(emulator: Emulator, tmp_path: Path) -> None:
    person, _ = make_images(tmp_path / "in")
    notes = tmp_path / "in" / "notes.png"
    notes.write_text("not an image")
    done = run(emulator, "edit", "--model", "flux-2-pro", str(person), str(notes), "combine")
    assert done.returncode == 2
    assert "input-images[1]" in done.stderr or "input_images[1]" in done.stderr
    assert "not an image" in done.stderr
    assert requests_to(emulator, "create") == []


def test_the_edit_help_says_how_many_images() -> None:
    parser, fields = build_parser("edit", "black-forest-labs/flux-2-flex")
    assert "input_images" not in fields and "steps" in fields
    commands = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    text = commands.choices["edit"].format_help()  # type: ignore[index]
    assert "IMAGE [IMAGE ...] PROMPT" in text and "1 to 10 images" in text
