"""Crash recovery: a server killed mid-generation loses nothing the provider still holds.

The server journals each prediction it creates (``<output folder>/.flux-journal/``) until its
image is saved; on start it resumes what a killed predecessor left: finished images are
downloaded, running ones watched again (never canceled), entries past the provider's retention
dropped with a log line. The prediction id reaches the client in the first progress message
after the create, and the log at any level.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flux_tools import FluxClient
from flux_tools.emulator import Emulator
from flux_tools.kit import JOURNAL_DIR, Journal, PendingPrediction

from .mcp_helpers import Progress, server_env, server_process, stdio_session, text_of

pytestmark = pytest.mark.mcp

PROMPT = "a fox in the snow, woodcut"
ID_IN_TEXT = re.compile(r"prediction ([a-z0-9]{8,})")


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg", ".webp"))


def journal_files(folder: Path) -> list[Path]:
    return sorted((folder / JOURNAL_DIR).glob("*.json")) if (folder / JOURNAL_DIR).is_dir() else []


def is_progress_with_id(message: dict[str, Any]) -> bool:
    params = message.get("params") or {}
    return message.get("method") == "notifications/progress" and bool(
        ID_IN_TEXT.search(str(params.get("message") or ""))
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_server_killed_mid_generation_saves_the_image_after_a_restart(
    emulator: Emulator, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    env = server_env(emulator.base_url, images)
    with server_process([], env, tmp_path, stdio=True) as server:
        server.initialize()
        server.call_tool(1, "generate_image", {"prompt": f"{PROMPT} [emulator:latency=4]"})
        first = server.wait_for_stdout(is_progress_with_id)
        match = ID_IN_TEXT.search(first["params"]["message"])
        assert match is not None
        pid = match.group(1)
        assert journal_files(images), "the prediction was not journaled before the kill"
        server.kill()  # SIGKILL: no cancel, no save, no cleanup

    assert pid in emulator.predictions
    assert emulator.prediction_json(pid)["status"] in ("starting", "processing")
    assert images_in(images) == []

    # A new server, and no tool call at all: it finds the journal and finishes the job.
    with server_process([], env, tmp_path, stdio=True) as again:
        again.initialize()
        assert wait_until(lambda: bool(images_in(images)), timeout=40), again.stderr
        again.wait_for_stderr(rf"resumed prediction {pid}: its image is saved")
        assert wait_until(lambda: journal_files(images) == [])

    [saved] = images_in(images)
    assert saved.stem == pid and saved.stat().st_size > 0
    sidecar = json.loads(saved.with_name(saved.name + ".json").read_text())
    assert sidecar["prediction_id"] == pid and sidecar["prompt"].startswith(PROMPT)
    assert emulator.prediction_json(pid)["status"] == "succeeded"
    assert emulator.stats.creates == 1 and emulator.stats.cancels == 0


def test_a_finished_prediction_left_unsaved_is_downloaded_on_start(
    emulator: Emulator, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    env = server_env(emulator.base_url, images, FLUX_MCP_WAIT_SECONDS="1")
    with server_process([], env, tmp_path, stdio=True) as server:
        server.initialize()
        server.call_tool(1, "generate_image", {"prompt": f"{PROMPT} [emulator:latency=2]"})
        pending = json.loads(server.receive(1))["result"]["structuredContent"]
        assert pending["status"] in ("starting", "processing")
        server.kill()
    pid = pending["prediction_id"]
    assert wait_until(lambda: emulator.prediction_json(pid)["status"] == "succeeded")
    assert images_in(images) == [] and len(journal_files(images)) == 1

    with server_process([], env, tmp_path, stdio=True) as again:
        assert wait_until(lambda: bool(images_in(images))), again.stderr
    assert [p.stem for p in images_in(images)] == [pid]
    assert emulator.stats.creates == 1 and emulator.stats.cancels == 0


def test_entries_past_the_providers_retention_are_dropped_with_a_log_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    old_id = "oldprediction00000000000001"
    Journal(images).add(PendingPrediction(old_id, "black-forest-labs/flux-pro", time.time() - 7200))
    (images / JOURNAL_DIR / "garbage.json").write_text("{not json")
    assert len(journal_files(images)) == 2
    env = server_env(emulator.base_url, images)
    with server_process([], env, tmp_path, stdio=True) as server:
        server.wait_for_stderr(rf"prediction {old_id} was created 120 minutes ago.*retention")
        assert "left alone in the journal folder: garbage.json is not a journal" in server.stderr
    # The expired entry is gone; a file that is no entry is never deleted.
    assert [p.name for p in journal_files(images)] == ["garbage.json"]
    assert emulator.stats.requests == []  # nothing asked of the API for it


async def test_the_id_is_in_the_first_progress_message_and_logged_at_warning(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    env = server_env(emulator.base_url, tmp_path / "images", FLUX_MCP_LOG_LEVEL="WARNING")
    progress = Progress()
    async with stdio_session(env, cwd=workdir, errlog=errlog) as session:
        result = await session.call(
            "generate_image", {"prompt": f"{PROMPT} [emulator:latency=1]"}, progress
        )
    assert not result.get("isError"), text_of(result)
    pid = result["structuredContent"]["prediction_id"]
    assert progress.messages[0] == "FLUX Pro: sending the request, 0 s elapsed"
    assert pid in progress.messages[1]  # the first message after the create
    log = errlog.read_text()
    assert f"prediction {pid} created" in log
    assert " INFO mcp_server: " not in log  # the level is WARNING: only the record of creates


def test_a_crash_loses_no_running_prediction_it_did_not_own(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    """Resuming watches: a prediction still running at restart is never canceled by it."""
    emulator = make_emulator()
    images = tmp_path / "images"
    env = server_env(emulator.base_url, images, FLUX_MCP_WAIT_SECONDS="1")
    with server_process([], env, tmp_path, stdio=True) as server:
        server.initialize()
        server.call_tool(1, "generate_image", {"prompt": f"{PROMPT} [emulator:hang]"})
        pid = json.loads(server.receive(1))["result"]["structuredContent"]["prediction_id"]
        server.kill()
    with server_process([], env, tmp_path, stdio=True) as again:
        again.wait_for_stderr(rf"resuming prediction {pid}")
        time.sleep(1.5)  # a few polls of the resumed watch
        assert emulator.stats.gets >= 1
    # The restarted server stopped (its stdin closed): its watch ended, the prediction did not.
    assert emulator.prediction_json(pid)["status"] == "processing"
    assert emulator.stats.cancels == 0
    assert len(journal_files(images)) == 1  # still to be resumed by the next start


def test_servers_on_two_apis_sharing_a_folder_each_save_their_own(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    """Two servers on different APIs, one output folder: each takes up only its own API's
    entries. Server A never watches (nor drops, on a 404) the prediction made on B."""
    first, second = make_emulator(), make_emulator()
    images = tmp_path / "images"
    with FluxClient(base_url=second.base_url, api_token="t") as client:
        made = client.create(prompt="made on the second API [emulator:latency=0.5]")
    Journal(images, api=second.base_url).add(
        PendingPrediction(made.id, "black-forest-labs/flux-pro", time.time())
    )
    with server_process([], server_env(first.base_url, images), tmp_path, stdio=True) as a:
        a.initialize()
        a.call_tool(1, "list_models", {})
        a.receive(1)
        time.sleep(1.0)  # what a start would resume has been started by now
    assert first.stats.requests == [] and len(journal_files(images)) == 1
    with server_process([], server_env(second.base_url, images), tmp_path, stdio=True) as b:
        b.wait_for_stderr(rf"resumed prediction {made.id}: its image is saved")
    assert [p.stem for p in images_in(images)] == [made.id]
    assert journal_files(images) == [] and second.stats.creates == 1


def test_a_journal_folder_that_is_a_link_is_left_alone_at_start(
    emulator: Emulator, tmp_path: Path
) -> None:
    project = tmp_path / "my-project"
    project.mkdir()
    files = {"package.json": b'{"name": "x"}', "tsconfig.json": b"{}", "settings.json": b"{"}
    for name, data in files.items():
        (project / name).write_bytes(data)
    images = tmp_path / "images"
    images.mkdir()
    (images / JOURNAL_DIR).symlink_to("../my-project")
    with server_process([], server_env(emulator.base_url, images), tmp_path, stdio=True) as server:
        server.wait_for_stderr("is a symbolic link")
    assert {p.name: p.read_bytes() for p in project.iterdir()} == files
