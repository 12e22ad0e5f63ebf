"""The LangChain tools against a gateway that lies (tests/hostile.py), through real tool calls:
nothing written outside ``output_dir``, no credentials off-origin, time bounded, and a
ToolMessage (never a raw exception) that carries the prediction id and where the image is.

Each scenario runs through ``invoke`` and ``ainvoke`` (the ``call`` fixture).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolCall, ToolMessage

from flux_tools.langchain import FluxImageTool

from ..hostile import Answer, HostileGateway

CREATE = re.compile(r"/v1/(models/.+/)?predictions")
#: Far above every deadline used here: a call still running then is a bug.
WATCHDOG = 45.0
TOKEN = "hostile-test-token"
#: What a terminal or a chat UI could be made to obey if the gateway's text passed through raw.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def generate_call(prompt: str = "a cat") -> ToolCall:
    return ToolCall(name="generate_image", args={"prompt": prompt}, id="call_1", type="tool_call")


@pytest.fixture
def run_tool(hostile: HostileGateway, call: Callable[..., Any]) -> Callable[..., Any]:
    """Call a tool on the gateway (through invoke or ainvoke), bounded by the watchdog."""

    async def run(**options: Any) -> ToolMessage:
        options.setdefault("api_token", TOKEN)
        started = time.monotonic()
        with FluxImageTool(base_url=hostile.base_url, **options) as tool:
            try:
                message = await asyncio.wait_for(call(tool, generate_call()), WATCHDOG)
            except TimeoutError:
                pytest.fail(f"the tool was still running after {time.monotonic() - started:.0f} s")
        assert isinstance(message, ToolMessage)
        assert not CONTROL.search(str(message.content)), message.content
        assert TOKEN not in str(message.content)
        return message

    return run


@pytest.mark.parametrize(
    "pid",
    ["/../../../../ANY/FOLDER/x", "..", "x\x00y", "\x1b]0;owned\x07\x1b[2J", "p" * 300],
    ids=["traversal", "dotdot", "nul", "escapes", "300-chars"],
)
async def test_a_hostile_id_is_saved_inside_the_folder_and_shown_safely(
    run_tool: Callable[..., Any], hostile: HostileGateway, tmp_path: Path, pid: str
) -> None:
    hostile.prediction.update(id=pid)
    out = tmp_path / "deep" / "out"
    message = await run_tool(output_dir=out)
    assert message.status == "success", message.content
    (path,) = (Path(p) for p in message.artifact["files"])
    assert path.parent == out.resolve() and re.fullmatch(r"[a-z0-9.-]+\.png", path.name)
    assert files_under(tmp_path) == [path]
    assert str(path) in message.content


async def test_no_credentials_go_to_another_origin(
    run_tool: Callable[..., Any], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.prediction.update(output=["{other}/files/a.png"])
    message = await run_tool(output_dir=tmp_path)
    assert message.status == "success" and len(files_under(tmp_path)) == 1
    others = hostile.authorizations("other")
    assert others and all(auth is None for auth in others)
    assert set(hostile.authorizations("api")) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer.redirect("{other}/files/x.png"), "same origin"),
        (Answer.raw(b"<html>402 Payment Required</html>", "image/png"), "not an image"),
    ],
    ids=["redirect-off-origin", "not-an-image"],
)
async def test_a_download_refused_keeps_the_image_url_for_the_model(
    run_tool: Callable[..., Any],
    hostile: HostileGateway,
    tmp_path: Path,
    answer: Answer,
    reason: str,
) -> None:
    hostile.on("GET", "/files/r.png", answer)
    hostile.prediction.update(output=["{api}/files/r.png"])
    message = await run_tool(output_dir=tmp_path)
    # Paid for: a success that says where the image is and why it was not saved.
    assert message.status == "success"
    assert reason in message.artifact["save_error"] and files_under(tmp_path) == []
    assert f"{hostile.origin}/files/r.png" in message.content
    assert "hostile1" in message.content and "Saving the image failed" in message.content
    assert hostile.authorizations("other") == []


async def test_an_unknown_status_is_an_error_naming_the_prediction(
    run_tool: Callable[..., Any], hostile: HostileGateway
) -> None:
    hostile.states = [{"status": "starting"}, {"status": "exploded"}]
    message = await run_tool(timeout=2)
    assert message.status == "error" and "hostile1" in message.content
    assert "No image was generated" in message.content


async def test_an_endless_api_reply_is_an_error_not_a_hang(
    run_tool: Callable[..., Any], hostile: HostileGateway
) -> None:
    hostile.on("POST", CREATE, Answer.endless_json())
    message = await run_tool()
    assert message.status == "error" and "No image was generated" in message.content
    (create,) = hostile.seen("create")
    assert not create.cut  # the client stopped reading, not the gateway's safety valve


async def test_a_cancel_that_reports_success_gives_the_image(
    run_tool: Callable[..., Any], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.states = [{"status": "starting"}, {"status": "processing"}]
    hostile.cancel_state = {"status": "succeeded"}
    message = await run_tool(timeout=1.5, output_dir=tmp_path)
    assert message.status == "success", message.content
    assert hostile.count("cancel") == 1 and len(files_under(tmp_path)) == 1


async def test_only_fetchable_urls_become_image_blocks(
    run_tool: Callable[..., Any], hostile: HostileGateway
) -> None:
    hostile.prediction.update(output=["file:///etc/passwd", "{api}/files/x.png"])
    message = await run_tool(include_image_blocks=True)
    if message.status == "success":
        images = [b for b in message.content if isinstance(b, dict) and b["type"] == "image"]
        assert [b["url"] for b in images] == [f"{hostile.origin}/files/x.png"]
    else:  # the core may refuse such an output outright: then it says so
        assert "No image was generated" in str(message.content)
