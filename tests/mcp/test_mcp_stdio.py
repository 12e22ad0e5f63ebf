"""The MCP server over stdio, driven by the SDK's own client, against the emulator.

The server runs as a subprocess started the way desktop clients start it: from an unrelated
working directory, with configuration only in its environment.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_tools import FluxProInput
from flux_tools.emulator import Emulator, Fault
from mcp_server._sdk import lean_schema

from .mcp_helpers import (
    DUMMY_TOKEN,
    Progress,
    blocks,
    server_env,
    stdio_session,
    text_of,
)

pytestmark = pytest.mark.mcp

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return tmp_path / "images"


def session_for(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path, **env: str | None
) -> Any:
    return stdio_session(server_env(emulator.base_url, images, **env), cwd=workdir, errlog=errlog)


async def test_tools_list_is_derived_from_the_input_model(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog) as session:
        tools = await session.list_tools()

    assert set(tools) == {
        "generate_image",
        "edit_image",
        "get_prediction",
        "cancel_prediction",
        "list_models",
    }
    generate = tools["generate_image"]
    schema = generate["inputSchema"]
    expected = lean_schema(FluxProInput.model_json_schema())  # as tools/list publishes it
    assert schema["properties"] == expected["properties"]
    assert schema["required"] == ["prompt"]
    assert schema["additionalProperties"] is False
    for name, info in FluxProInput.model_fields.items():
        prop = schema["properties"][name]
        assert prop["description"] == info.description
        if not info.is_required():
            assert prop.get("default") == info.default  # a null default: left out
    assert schema["properties"]["aspect_ratio"]["enum"][:2] == ["custom", "1:1"]
    assert schema["properties"]["steps"]["minimum"] == 1
    assert schema["properties"]["steps"]["maximum"] == 50
    assert schema["properties"]["width"]["maximum"] == 1440

    out = generate["outputSchema"]["properties"]
    for key in ("urls", "files", "prediction_id", "status", "model", "seed", "timings"):
        assert key in out
    assert generate["title"]
    assert generate["annotations"]["readOnlyHint"] is False
    assert generate["annotations"]["openWorldHint"] is True
    assert generate["annotations"]["idempotentHint"] is False
    get = tools["get_prediction"]["annotations"]
    assert get["readOnlyHint"] is True and get["idempotentHint"] is True
    assert tools["cancel_prediction"]["annotations"]["destructiveHint"] is True


async def test_a_full_generation(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    progress = Progress()
    async with session_for(emulator, images, workdir, errlog) as session:
        result = await session.call(
            "generate_image", {"prompt": PROMPT, "seed": 7, "output_format": "png"}, progress
        )
        assert not result.get("isError"), text_of(result)
        structured = result["structuredContent"]
        links = blocks(result, "resource_link")
        resource = await session.read_resource(links[0]["uri"])

    assert structured["status"] == "succeeded"
    assert structured["seed"] == 7
    assert structured["model"] == "black-forest-labs/flux-pro"
    assert structured["timings"]["total"] is not None
    [path] = [Path(p) for p in structured["files"]]
    assert path.parent == images and path.suffix == ".png"
    assert path.read_bytes().startswith(b"\x89PNG")
    prediction = emulator.prediction_json(structured["prediction_id"])
    assert structured["urls"] == [prediction["output"]]

    text = text_of(result)
    assert str(path) in text and structured["urls"][0] in text
    # The text comes first: clients that take only text still get the paths and URLs.
    assert result["content"][0]["type"] == "text"

    assert links[0]["uri"] == f"flux://images/{path.name}"
    assert links[0]["mimeType"] == "image/png"
    assert links[0]["size"] == path.stat().st_size
    [content] = resource
    assert content["mimeType"] == "image/png"
    assert base64.b64decode(content["blob"]) == path.read_bytes()

    [image] = blocks(result, "image")
    assert image["mimeType"] == "image/jpeg"
    preview = base64.b64decode(image["data"])
    assert preview.startswith(b"\xff\xd8")
    # base64 only in the image block: never in text or structured content.
    assert image["data"][:200] not in json.dumps(structured) + text

    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["prompt"] == PROMPT
    assert sidecar["seed"] == 7
    assert sidecar["prediction_id"] == structured["prediction_id"]
    assert sidecar["model"] == "black-forest-labs/flux-pro"
    assert sidecar["created_at"] and sidecar["completed_at"]
    assert emulator.stats.creates == 1 and emulator.stats.cancels == 0
    assert progress.messages, "no progress notification received"


async def test_progress_notifications_say_what_is_happening(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    progress = Progress()
    async with session_for(emulator, images, workdir, errlog) as session:
        result = await session.call(
            "generate_image", {"prompt": f"{PROMPT} [emulator:latency=1.5]"}, progress
        )
    assert not result.get("isError"), text_of(result)
    values = [value for value, _, _ in progress.events]
    assert len(values) >= 3
    assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing
    assert any("FLUX Pro: processing" in m and "s elapsed" in m for m in progress.messages)
    assert any("succeeded" in m for m in progress.messages)


async def test_budget_runs_out_then_get_prediction_finishes_the_job(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog, FLUX_MCP_WAIT_SECONDS="1") as session:
        first = await session.call("generate_image", {"prompt": f"{PROMPT} [emulator:latency=3]"})
        assert not first.get("isError"), text_of(first)
        pending = first["structuredContent"]
        pid = pending["prediction_id"]
        assert pending["status"] in ("starting", "processing")
        assert pending["files"] == [] and pending["urls"] == []
        assert "get_prediction" in text_of(first) and pid in text_of(first)
        assert not blocks(first, "image")
        # It goes on running upstream: not canceled.
        assert emulator.prediction_json(pid)["status"] in ("starting", "processing")

        resumed: dict[str, Any] = {}
        for _ in range(10):  # each call waits at most the 1 s budget
            resumed = await session.call("get_prediction", {"prediction_id": pid})
            assert not resumed.get("isError"), text_of(resumed)
            if resumed["structuredContent"]["status"] == "succeeded":
                break
        again = await session.call("get_prediction", {"prediction_id": pid})

    done = resumed["structuredContent"]
    assert done["status"] == "succeeded" and done["prediction_id"] == pid
    [path] = [Path(p) for p in done["files"]]
    assert path.is_file() and path.parent == images
    assert blocks(resumed, "image") and blocks(resumed, "resource_link")
    assert emulator.stats.creates == 1 and emulator.stats.cancels == 0
    # Asking again serves the saved file: no second download.
    files_before = emulator.stats.files
    assert again["structuredContent"]["files"] == done["files"]
    assert emulator.stats.files == files_before


async def test_get_prediction_without_waiting_reports_the_state(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog, FLUX_MCP_WAIT_SECONDS="1") as session:
        first = await session.call("generate_image", {"prompt": f"{PROMPT} [emulator:hang]"})
        pid = first["structuredContent"]["prediction_id"]
        state = await session.call("get_prediction", {"prediction_id": pid, "wait": False})
        canceled = await session.call("cancel_prediction", {"prediction_id": pid})
    assert state["structuredContent"]["status"] == "processing"
    assert "get_prediction" in text_of(state)
    assert canceled["structuredContent"]["status"] == "canceled"
    assert emulator.prediction_json(pid)["status"] == "canceled"
    assert emulator.stats.cancels == 1


async def test_client_cancellation_cancels_the_prediction_upstream(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    progress = Progress()
    async with session_for(emulator, images, workdir, errlog) as session:
        await session.call_then_cancel(
            "generate_image", {"prompt": f"{PROMPT} [emulator:hang]"}, progress
        )
        with anyio.fail_after(20):
            while emulator.stats.cancels == 0:
                await anyio.sleep(0.05)
        # The server is still serving after the canceled call.
        tools = await session.list_tools()
    assert "generate_image" in tools
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"
    assert emulator.stats.creates == 1


async def test_cancellation_during_the_create_request_still_reaches_the_api(
    make_emulator: Callable[..., Emulator], images: Path, workdir: Path, errlog: Path
) -> None:
    # The create answers after 2 s: the client cancels while it is in flight, before any id
    # is known. The server lets the create finish, then cancels the prediction it made.
    emulator = make_emulator(faults=[Fault("create", "slow", delay=2)])
    progress = Progress()
    async with session_for(emulator, images, workdir, errlog) as session:
        await session.call_then_cancel(
            "generate_image", {"prompt": f"{PROMPT} [emulator:hang]"}, progress
        )
        with anyio.fail_after(20):
            while emulator.stats.cancels == 0:
                await anyio.sleep(0.05)
    assert progress.messages == ["FLUX Pro: sending the request, 0 s elapsed"]
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"
    assert emulator.stats.gets == 0  # canceled before any poll: the create was the only call


async def test_without_a_token_tools_are_listed_and_calls_say_what_to_set(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog, FLUX_API_TOKEN=None) as session:
        tools = await session.list_tools()
        results = [
            await session.call("generate_image", {"prompt": PROMPT}),
            await session.call("get_prediction", {"prediction_id": "abc"}),
            await session.call("cancel_prediction", {"prediction_id": "abc"}),
        ]
    assert "generate_image" in tools
    for result in results:
        assert result["isError"] is True
        text = text_of(result)
        assert "FLUX_API_TOKEN" in text and "REPLICATE_API_TOKEN" in text
        assert "env" in text and "claude_desktop_config.json" in text
    assert emulator.stats.requests == []


BAD_ARGUMENTS: list[tuple[dict[str, Any], str, str]] = [
    ({"prompt": PROMPT, "steps": 0}, "steps", "1 to 50"),
    ({"prompt": PROMPT, "steps": "many"}, "steps", "1 to 50"),
    ({"prompt": PROMPT, "aspect_ratio": "7:3"}, "aspect_ratio", "'16:9'"),
    ({"prompt": PROMPT, "num_outputs": 2}, "num_outputs", "is not a field"),
    (
        {"prompt": PROMPT, "stpes": 30},
        "stpes",
        "is not a field of this model; did you mean 'steps'?",
    ),
    ({"prompt": ""}, "prompt", "non-empty"),
    ({"steps": 20}, "prompt", "is required"),
    ({"prompt": PROMPT, "aspect_ratio": "custom", "width": 512}, "custom", "width and height"),
    ({"prompt": PROMPT, "width": 4000, "aspect_ratio": "custom", "height": 512}, "width", "1440"),
    ({"prompt": PROMPT, "image_prompt": "file:///etc/passwd"}, "image_prompt", "http"),
    ({"prompt": PROMPT, "guidance": 9.5}, "guidance", "2 to 5"),
]


async def test_bad_arguments_are_named_and_the_server_keeps_serving(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog) as session:
        results = [await session.call("generate_image", args) for args, _, _ in BAD_ARGUMENTS]
        bad_ids = [
            await session.call("get_prediction", {"prediction_id": "../../etc/passwd"}),
            await session.call("cancel_prediction", {}),
        ]
        good = await session.call("generate_image", {"prompt": PROMPT})

    for (args, field, allowed), result in zip(BAD_ARGUMENTS, results, strict=True):
        text = text_of(result)
        assert result["isError"] is True, args
        assert field in text and allowed in text, text
        assert "nothing was sent" in text
    assert "prediction_id" in text_of(bad_ids[0]) and bad_ids[0]["isError"]
    assert "prediction_id" in text_of(bad_ids[1]) and "is required" in text_of(bad_ids[1])
    # Nothing reached the API before the good call.
    assert emulator.stats.creates == 1
    assert not good.get("isError") and good["structuredContent"]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("directive", "expected"),
    [("fail", "failed"), ("moderate", "content filter")],
)
async def test_failed_and_moderated_predictions_are_error_results(
    emulator: Emulator,
    images: Path,
    workdir: Path,
    errlog: Path,
    directive: str,
    expected: str,
) -> None:
    async with session_for(emulator, images, workdir, errlog) as session:
        result = await session.call(
            "generate_image", {"prompt": f"{PROMPT} [emulator:{directive}]"}
        )
        after = await session.call("generate_image", {"prompt": PROMPT})
    assert result["isError"] is True
    text = text_of(result)
    assert expected in text
    [prediction] = [p for p in emulator.predictions.values() if directive in str(p.input)]
    assert prediction.id in text
    assert not after.get("isError")


async def test_api_errors_never_show_the_token(
    make_emulator: Callable[..., Emulator], images: Path, workdir: Path, errlog: Path
) -> None:
    emulator = make_emulator(token="the-right-token-0123456789")
    async with session_for(emulator, images, workdir, errlog) as session:
        result = await session.call("generate_image", {"prompt": PROMPT})
        listed = await session.list_tools()
    assert result["isError"] is True
    text = text_of(result)
    assert "401" in text and "FLUX_API_TOKEN" in text
    assert DUMMY_TOKEN not in text
    assert "generate_image" in listed
    log = errlog.read_text()
    assert log, "the server logged nothing to stderr"
    assert DUMMY_TOKEN not in log


async def test_preview_can_be_turned_off(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog, FLUX_MCP_PREVIEW="off") as session:
        result = await session.call("generate_image", {"prompt": PROMPT})
    assert not result.get("isError"), text_of(result)
    assert blocks(result, "image") == []
    assert blocks(result, "resource_link") and result["structuredContent"]["files"]


async def test_preview_size_is_configurable(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    from PIL import Image

    async with session_for(emulator, images, workdir, errlog, FLUX_MCP_PREVIEW="256") as session:
        result = await session.call("generate_image", {"prompt": PROMPT, "aspect_ratio": "16:9"})
    [image] = blocks(result, "image")
    with Image.open(io.BytesIO(base64.b64decode(image["data"]))) as preview:
        assert max(preview.size) == 256


async def test_reading_an_unknown_or_unsafe_resource_fails_cleanly(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog) as session:
        for uri in ("flux://images/nothere.png", "flux://images/..%2Fsecret.png"):
            with pytest.raises(Exception):  # noqa: B017 - the SDK's error type differs per line
                await session.read_resource(uri)
        assert "generate_image" in await session.list_tools()


async def test_an_unwritable_output_folder_is_explained_and_the_image_recoverable(
    emulator: Emulator, tmp_path: Path, workdir: Path, errlog: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    async with session_for(emulator, blocked / "images", workdir, errlog) as session:
        result = await session.call("generate_image", {"prompt": PROMPT})
    assert result["isError"] is True
    text = text_of(result)
    [prediction] = emulator.predictions.values()
    url = emulator.prediction_json(prediction.id)["output"]
    assert "could not be saved" in text and "FLUX_OUTPUT_DIR" in text
    assert url in text and prediction.id in text and "get_prediction" in text
