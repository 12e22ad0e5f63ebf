"""After money is spent nothing escapes the tools raw; clients are closed and bound to no loop.

Real tool calls against the emulator, as in ``test_langchain.py``; the folder troubles are made
on disk, not mocked.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolCall, ToolMessage

from flux_tools import DEFAULT_MODEL, MODELS
from flux_tools.emulator import Emulator
from flux_tools.langchain import PROGRESS_EVENT, FluxImageEditTool, FluxImageTool, FluxToolkit

MakeEmulator = Callable[..., Emulator]


def generate_call(args: dict[str, Any]) -> ToolCall:
    return ToolCall(name="generate_image", args=args, id="call_1", type="tool_call")


def edit_call(args: dict[str, Any]) -> ToolCall:
    return ToolCall(name="edit_image", args=args, id="call_2", type="tool_call")


# -- before anything is sent -------------------------------------------------------------------


async def test_an_output_dir_that_cannot_be_created_is_refused_before_sending(
    emulator: Emulator, call: Callable[..., Any], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with FluxImageTool(
        api_token="t", base_url=emulator.base_url, output_dir=blocker / "images"
    ) as tool:
        message = await call(tool, generate_call({"prompt": "a fox"}))
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert str(blocker / "images") in message.content and "Nothing was sent" in message.content
    assert "configuration problem" in message.content
    assert emulator.stats.requests == []  # nothing was paid for an image that could not be kept


async def test_a_bare_base64_image_is_an_error_message_not_an_oserror(
    emulator: Emulator, call: Callable[..., Any], tmp_path: Path
) -> None:
    # Kilobytes with '/' in them: taken for a path, too long for the OS. Whichever layer
    # notices (the schema, the local-file check, the OS), it is a clear error, before sending.
    bare = base64.b64encode(bytes(range(256)) * 12).decode()
    with FluxImageEditTool(api_token="t", base_url=emulator.base_url, output_dir=tmp_path) as tool:
        message = await call(tool, edit_call({"input_image": bare, "prompt": "make it gold"}))
    assert message.status == "error" and message.tool_call_id == "call_2"
    assert "input_image" in message.content and "again" in message.content
    # Named, not pasted back: kilobytes of base64 would flood the model's context.
    assert bare not in message.content and len(message.content) < 1000
    assert emulator.stats.creates == 0


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
async def test_a_local_image_that_cannot_be_read_is_an_error_message(
    emulator: Emulator, call: Callable[..., Any]
) -> None:
    # A file that is there, in an allowed folder, and fails when read (EIO): an OSError from
    # the operating system itself, not a refusal of the input checks.
    with FluxImageEditTool(
        api_token="t", base_url=emulator.base_url, image_dirs=[Path("/proc/self")]
    ) as tool:
        message = await call(tool, edit_call({"input_image": "/proc/self/mem", "prompt": "gold"}))
    assert message.status == "error"
    assert "could not be read" in message.content and "call edit_image again" in message.content
    assert emulator.stats.creates == 0


# -- after the image was made ------------------------------------------------------------------


class RemoveFolderWhenDone(BaseCallbackHandler):
    """Replaces the output folder by a file once the prediction succeeded, before the save."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name == PROGRESS_EVENT and data["status"] == "succeeded":
            shutil.rmtree(self.folder)
            self.folder.write_text("the folder went away")


async def test_a_folder_that_breaks_after_the_image_was_made_keeps_the_image(
    make_emulator: MakeEmulator, tmp_path: Path, call: Callable[..., Any]
) -> None:
    emulator = make_emulator(honor_prefer_wait=False)  # polled: the callback sees "succeeded"
    folder = tmp_path / "images"
    with FluxImageTool(api_token="t", base_url=emulator.base_url, output_dir=folder) as tool:
        config = {"callbacks": [RemoveFolderWhenDone(folder)]}
        message = await call(tool, generate_call({"prompt": "a fox", "seed": 4}), config=config)
    # The image is paid for: the model gets it (and no reason to pay for another one).
    assert message.status == "success"
    (prediction_id,) = emulator.predictions
    (url,) = message.artifact["urls"]
    assert message.artifact["prediction_id"] == prediction_id and message.artifact["files"] == []
    assert "save_error" in message.artifact
    assert prediction_id in message.content and url in message.content
    assert "Saving the image failed" in message.content and "give it to the user now" in (
        message.content
    )
    assert folder.is_file()  # nothing was written in its place


# -- clients: per loop, closed -----------------------------------------------------------------


def unclosed_resources(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ResourceWarning)]


def test_toolkit_tools_work_across_event_loops_and_leave_nothing_open(
    emulator: Emulator, tmp_path: Path
) -> None:
    gc.collect()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", ResourceWarning)
        with FluxToolkit(api_token="t", base_url=emulator.base_url, output_dir=tmp_path) as kit:
            generate, edit = kit.get_tools()
            first = asyncio.run(generate.ainvoke(generate_call({"prompt": "one", "seed": 1})))
            # A second asyncio.run: a new event loop, where no client of the first may be used.
            second = asyncio.run(generate.ainvoke(generate_call({"prompt": "two", "seed": 2})))
            prediction_id = second.artifact["prediction_id"]
            edited = asyncio.run(
                edit.ainvoke(edit_call({"input_image": prediction_id, "prompt": "make it gold"}))
            )
            blocking = generate.invoke(generate_call({"prompt": "three", "seed": 3}))
        del generate, edit
        gc.collect()
    assert [m.status for m in (first, second, edited, blocking)] == ["success"] * 4, [
        m.content for m in (first, second, edited, blocking)
    ]
    assert emulator.stats.predictions_created == 4
    assert unclosed_resources(record) == []


def test_toolkit_close_ends_its_client_and_get_tools_after_builds_a_new_one(
    emulator: Emulator,
) -> None:
    kit = FluxToolkit(api_token="t", base_url=emulator.base_url)
    generate, _ = kit.get_tools()
    again, _ = kit.get_tools()
    assert isinstance(generate, FluxImageTool) and isinstance(again, FluxImageTool)
    assert generate.client is again.client  # one pool for every tool of the toolkit
    kit.close()
    fresh, _ = kit.get_tools()
    assert isinstance(fresh, FluxImageTool) and fresh.client is not generate.client
    message = fresh.invoke(generate_call({"prompt": "a fox"}))
    kit.close()
    assert message.status == "success"


def test_a_tool_alone_keeps_no_async_client_between_calls(emulator: Emulator) -> None:
    gc.collect()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", ResourceWarning)
        tool = FluxImageTool(api_token="t", base_url=emulator.base_url)
        messages = [asyncio.run(tool.ainvoke(generate_call({"prompt": p}))) for p in "ab"]
        del tool  # never closed: nothing was left open to close
        gc.collect()
    assert [m.status for m in messages] == ["success", "success"]
    assert unclosed_resources(record) == []


def test_every_call_of_a_tool_spends_from_one_budget(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Room for two images: the third call is refused, whichever client (blocking, or async
    # on another event loop) would make it.
    price = MODELS[DEFAULT_MODEL].price_usd
    monkeypatch.setenv("FLUX_BUDGET_USD", str(2.5 * price))
    with FluxImageTool(api_token="t", base_url=emulator.base_url) as tool:
        first = tool.invoke(generate_call({"prompt": "one"}))
        second = asyncio.run(tool.ainvoke(generate_call({"prompt": "two"})))
        third = asyncio.run(tool.ainvoke(generate_call({"prompt": "three"})))
    assert [m.status for m in (first, second, third)] == ["success", "success", "error"]
    assert "FLUX_BUDGET_USD" in third.content and "No image was generated" in third.content
    assert emulator.stats.creates == 2


def test_concurrent_async_calls_share_one_client_closed_after(emulator: Emulator) -> None:
    tool = FluxImageTool(api_token="t", base_url=emulator.base_url)
    seen: list[int] = []

    async def main() -> list[ToolMessage]:
        calls = [tool.ainvoke(generate_call({"prompt": f"fox {i}"})) for i in range(8)]
        watch = asyncio.ensure_future(_watch(tool, seen))
        try:
            return list(await asyncio.gather(*calls))
        finally:
            watch.cancel()

    messages = asyncio.run(main())
    assert [m.status for m in messages] == ["success"] * 8
    assert len(set(seen)) == 1  # one client for the loop's calls, however many run at once
    assert tool._aclients == {}  # and none left once they ended


async def _watch(tool: FluxImageTool, seen: list[int]) -> None:
    while True:
        seen.extend(id(shared.client) for shared in tool._aclients.values())
        await asyncio.sleep(0.01)


# -- LangChain's standard content blocks ---------------------------------------------------------


@pytest.mark.parametrize("output_mode", ["url", "data"])
async def test_content_is_made_of_standard_blocks_text_first(
    make_emulator: MakeEmulator, tmp_path: Path, output_mode: str
) -> None:
    emulator = make_emulator(output_mode=output_mode)
    tool = FluxImageTool(
        api_token="t", base_url=emulator.base_url, output_dir=tmp_path, include_image_blocks=True
    )
    message = await tool.ainvoke(generate_call({"prompt": "a fox"}))
    # ``content_blocks`` is LangChain's own reading of the content as standard blocks.
    blocks = message.content_blocks
    assert [b["type"] for b in blocks] == ["text", "image"]
    text, image = blocks
    assert text.get("text") == message.content[0]["text"]
    if output_mode == "url":
        assert image.get("url") == message.artifact["urls"][0]
    else:
        saved = Path(message.artifact["files"][0])
        assert base64.b64decode(str(image.get("base64"))) == saved.read_bytes()
        assert str(image.get("mime_type")).startswith("image/")
    plain = FluxImageTool(api_token="t", base_url=emulator.base_url)
    only_text = await plain.ainvoke(generate_call({"prompt": "a fox"}))
    assert [b["type"] for b in only_text.content_blocks] == ["text"]
