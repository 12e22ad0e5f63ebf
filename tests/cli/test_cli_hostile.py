"""``flux-tools generate`` (a real subprocess) against the hostile gateway (tests/hostile.py):
nothing written outside ``--out``, nothing raw on the terminal, no credentials off-origin, a
clear error (never a traceback), every run bounded (the subprocess timeout is the watchdog)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flux_tools._drivers.downloads import MAX_OUTPUTS
from flux_tools.kit import JOURNAL_DIR

from ..hostile import Answer, HostileGateway

CREATE = re.compile(r"/v1/(models/.+/)?predictions")
PREDICTIONS = re.compile(r"/v1/predictions/.*")


def generate(
    gw: HostileGateway, out: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    env.update(FLUX_BASE_URL=gw.base_url, FLUX_API_TOKEN="cli-hostile-token")
    return subprocess.run(
        [sys.executable, "-m", "flux_tools", "generate", "a cat", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=out.parent,
    )


def files_under(root: Path) -> list[Path]:
    """What the command wrote, but its journal (an image not saved stays journaled)."""
    return sorted(p for p in root.rglob("*") if not p.is_dir() and JOURNAL_DIR not in p.parts)


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    """No traceback, and nothing a terminal would obey."""
    text = done.stdout + done.stderr
    assert "Traceback" not in text, done.stderr
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\x9b]", text.replace("\r\x1b[K", "")), text


@pytest.mark.parametrize(
    "pid",
    ["/../../../../ANY/FOLDER/x", "\x1b]0;pwned\x07\x1b[2J/../x\r\nfake line", "q" * 300],
    ids=["traversal", "escapes", "300-chars"],
)
def test_a_hostile_id_is_saved_inside_out_and_printed_safely(
    hostile: HostileGateway, tmp_path: Path, pid: str
) -> None:
    hostile.prediction.update(id=pid)
    out = tmp_path / "out"
    done = generate(hostile, out)
    assert done.returncode == 0, done.stderr
    assert_clean(done)
    (saved,) = files_under(tmp_path)
    assert saved.parent == out.resolve() and saved.suffix == ".png"
    assert str(saved) in done.stdout


def test_three_hundred_outputs_fail_clearly_after_the_cap(
    hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.prediction.update(output=[f"{{api}}/files/{i}.png" for i in range(300)])
    done = generate(hostile, tmp_path / "out")
    assert done.returncode == 1
    assert_clean(done)
    assert "DownloadError" in done.stderr and "300 outputs" in done.stderr
    assert hostile.count("file") == MAX_OUTPUTS == len(files_under(tmp_path))
    assert len(list((tmp_path / "out" / JOURNAL_DIR).glob("*.json"))) == 1  # kept for resume


def test_an_output_that_is_no_image_fails_clearly(hostile: HostileGateway, tmp_path: Path) -> None:
    hostile.on("GET", "/files/x.png", Answer.raw(b"<html>oops</html>", "image/png"))
    hostile.prediction.update(output=["{api}/files/x.png"])
    done = generate(hostile, tmp_path / "out")
    assert done.returncode == 1
    assert_clean(done)
    assert "not an image" in done.stderr and files_under(tmp_path) == []


def test_an_endless_download_is_cut(hostile: HostileGateway, tmp_path: Path) -> None:
    hostile.on("GET", "/files/x.png", Answer.endless())
    hostile.prediction.update(output=["{api}/files/x.png"])
    done = generate(hostile, tmp_path / "out")
    assert done.returncode == 1
    assert_clean(done)
    assert "larger than" in done.stderr and files_under(tmp_path) == []
    (download,) = hostile.seen("file")
    assert not download.cut and download.sent < 64 * 1024**2 + 32 * 1024**2


def test_no_credentials_go_to_another_origin(hostile: HostileGateway, tmp_path: Path) -> None:
    hostile.prediction.update(output=["{other}/files/a.png"])
    done = generate(hostile, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert hostile.authorizations("other") == [None]
    assert set(hostile.authorizations("api")) == {"Bearer cli-hostile-token"}
    assert "cli-hostile-token" not in done.stdout + done.stderr


def test_a_redirect_loop_fails_clearly(hostile: HostileGateway, tmp_path: Path) -> None:
    hostile.on("GET", "/files/loop.png", Answer.redirect("/files/loop.png"))
    hostile.prediction.update(output=["{api}/files/loop.png"])
    done = generate(hostile, tmp_path / "out")
    assert done.returncode == 1
    assert_clean(done)
    assert "redirects more than" in done.stderr


def test_an_endless_api_reply_fails_clearly(hostile: HostileGateway, tmp_path: Path) -> None:
    hostile.on("POST", CREATE, Answer.endless_json())
    done = generate(hostile, tmp_path / "out")
    assert done.returncode == 1
    assert_clean(done)
    (create,) = hostile.seen("create")
    assert not create.cut and create.sent < 64 * 1024**2


def test_a_trickling_api_reply_ends_at_the_deadline(
    hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.states = [{"status": "starting"}]
    hostile.on("GET", PREDICTIONS, Answer.trickle(b'{"id": "hostile1", "status": "', every=0.1))
    done = generate(hostile, tmp_path / "out", "--timeout", "2")
    assert done.returncode == 1
    assert_clean(done)
    assert not any(r.cut for r in hostile.requests)  # the gateway's 30 s valve never had to act
