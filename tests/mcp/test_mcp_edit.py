"""Editing over MCP: ``edit_image`` with every kind of image source, the allowed folders (output
folder, FLUX_IMAGE_DIRS, the client's roots), refusals that never read the file, ``list_models``
and the model configuration.

The server runs as a subprocess driven by the SDK's own client (stdio; HTTP where the transport
matters: roots are asked for on the call's own stream), against the emulator, whose edits keep
the input image's shape.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from flux_tools import MODELS
from flux_tools.emulator import Emulator
from flux_tools.kit import edit_arguments, known_model
from mcp_server._sdk import lean_schema

from .mcp_helpers import (
    ONE_MIB,
    Progress,
    Roots,
    blocks,
    http_server,
    http_session,
    listening_url,
    server_env,
    stdio_session,
    text_of,
)
from .real_clients import LEGACY, combinations, connect, serving

pytestmark = pytest.mark.mcp

INSTRUCTION = "make the car gold, keep the background"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    path = tmp_path / "images"
    path.mkdir()
    return path


def photo(path: Path, size: tuple[int, int] = (600, 400)) -> Path:
    """A "photo" with clear structure; 3:2 by default, so a square output would show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (30, 60, 200))
    w, h = size
    image.paste((250, 220, 20), (w // 15, h // 10, w // 2, h * 3 // 4))
    image.paste((200, 20, 40), (w * 2 // 3, h // 4, w * 9 // 10, h * 9 // 10))
    image.save(path)
    return path


def data_uri(path: Path, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(path.read_bytes()).decode()}"


def aspect(path: Path) -> float:
    with Image.open(path) as image:
        return image.size[0] / image.size[1]


def session_for(
    emulator: Emulator,
    images: Path,
    workdir: Path,
    errlog: Path,
    roots: Roots | None = None,
    **env: str | None,
) -> Any:
    return stdio_session(
        server_env(emulator.base_url, images, **env), cwd=workdir, errlog=errlog, roots=roots
    )


def sent_image(emulator: Emulator, result: dict[str, Any], field: str = "input_image") -> str:
    pid = result["structuredContent"]["prediction_id"]
    value: str = emulator.prediction_json(pid)["input"][field]
    return value


def edited_file(result: dict[str, Any]) -> Path:
    assert not result.get("isError"), text_of(result)
    structured = result["structuredContent"]
    assert structured["status"] == "succeeded"
    assert structured["model"] == "black-forest-labs/flux-kontext-pro"
    [path] = [Path(p) for p in structured["files"]]
    assert path.is_file()
    assert text_of(result).startswith("Edited image with black-forest-labs/flux-kontext-pro")
    return path


# -- the tools as clients see them ----------------------------------------------------------------


async def test_edit_image_and_list_models_are_described_for_the_agent(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog) as session:
        tools = await session.list_tools()

    edit = tools["edit_image"]
    expected = lean_schema(edit_arguments(known_model("flux-kontext-pro")).model_json_schema())
    schema = edit["inputSchema"]
    assert schema["properties"] == expected["properties"]
    assert set(schema["required"]) == {"prompt", "input_image"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["aspect_ratio"]["default"] == "match_input_image"
    assert edit["title"]
    assert edit["annotations"]["readOnlyHint"] is False
    assert edit["annotations"]["openWorldHint"] is True
    assert edit["annotations"]["destructiveHint"] is False
    # The result is generate_image's: its output schema is published once, there.
    assert "outputSchema" not in edit and "outputSchema" in tools["generate_image"]
    description = edit["description"]
    assert "prediction_id" in description and "just generated" in description
    assert "uploaded in the chat" in description and "data: URI" in description
    assert str(images) in description  # where local files may be

    models = tools["list_models"]
    assert models["title"]
    assert models["annotations"]["readOnlyHint"] is True
    assert models["annotations"]["idempotentHint"] is True
    assert models["inputSchema"]["properties"] == {}
    assert {"models", "generate_model", "edit_model"} <= set(models["outputSchema"]["properties"])


async def test_list_models_describes_the_registry_and_the_configuration(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(
        emulator,
        images,
        workdir,
        errlog,
        FLUX_MODEL="flux-1.1-pro-ultra",
        FLUX_EDIT_MODEL="black-forest-labs/flux-dev",
        FLUX_API_TOKEN=None,  # describing the models needs no token
    ) as session:
        result = await session.call("list_models", {})
        wrong = await session.call("list_models", {"model": "flux-pro"})

    assert not result.get("isError"), text_of(result)
    structured = result["structuredContent"]
    assert structured["models"] == [spec.describe() for spec in MODELS.values()]
    assert structured["generate_model"] == "black-forest-labs/flux-1.1-pro-ultra"
    assert structured["edit_model"] == "black-forest-labs/flux-dev"
    text = text_of(result)
    for spec in MODELS.values():
        assert spec.name in text and spec.strengths in text
    assert "generate_image uses black-forest-labs/flux-1.1-pro-ultra" in text
    assert "edit_image uses black-forest-labs/flux-dev" in text
    assert "FLUX_MODEL" in text and "FLUX_EDIT_MODEL" in text and "env" in text
    assert wrong["isError"] is True and "model" in text_of(wrong)
    assert emulator.stats.requests == []


# -- every kind of image source -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["data_uri", "url", "output_path", "relative_path", "image_dir", "root", "prediction_id"],
)
async def test_edit_with_each_kind_of_image_source(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path, tmp_path: Path, kind: str
) -> None:
    roots = Roots([tmp_path / "project"])
    extra_dir = tmp_path / "photos"
    async with session_for(
        emulator, images, workdir, errlog, roots=roots, FLUX_IMAGE_DIRS=str(extra_dir)
    ) as session:
        original: Path
        if kind == "data_uri":
            original = photo(tmp_path / "elsewhere" / "car.png")
            source = expected = data_uri(original)
        elif kind == "url":
            # An image the API serves: an earlier edit's output URL.
            first = await session.call(
                "edit_image",
                {"prompt": "a red car", "input_image": data_uri(photo(tmp_path / "x/car.png"))},
            )
            original = edited_file(first)
            source = expected = first["structuredContent"]["urls"][0]
            assert source.startswith("http://127.0.0.1:")
        elif kind in ("output_path", "relative_path"):
            original = photo(images / "car.png", (400, 600))
            source = str(original) if kind == "output_path" else "car.png"
            expected = data_uri(original)
        elif kind == "image_dir":
            original = photo(extra_dir / "car.png", (800, 400))
            source, expected = str(original), data_uri(original)
        elif kind == "root":
            original = photo(tmp_path / "project" / "assets" / "car.png", (640, 360))
            source, expected = str(original), data_uri(original)
        else:  # "edit the image just generated": its prediction id
            generated = await session.call(
                "generate_image", {"prompt": "a blue car", "aspect_ratio": "16:9"}
            )
            assert not generated.get("isError"), text_of(generated)
            [saved] = generated["structuredContent"]["files"]
            original = Path(saved)
            source = generated["structuredContent"]["prediction_id"]
            # Read from the saved file, not the expiring URL.
            expected = data_uri(original, "image/webp")
        progress = Progress()
        result = await session.call(
            "edit_image", {"prompt": INSTRUCTION, "input_image": source}, progress
        )

    out = edited_file(result)
    assert out.parent == images and out.suffix == ".png"  # kontext's default format
    assert sent_image(emulator, result) == expected
    assert abs(aspect(out) - aspect(original)) < 0.05  # match_input_image keeps the shape
    assert blocks(result, "resource_link") and blocks(result, "image")
    # Progress names the edit model. A warm model (the "url" case edited once already) may be
    # polled only once it is done: "processing" is then never seen, and need not be.
    assert any(m.startswith("FLUX Kontext Pro: ") for m in progress.messages), progress.messages
    pid = result["structuredContent"]["prediction_id"]
    assert f"edit_image with input_image set to '{pid}'" in text_of(result)
    # Roots are asked for only when a local path (or a prediction id) is given.
    assert (roots.asked > 0) == (kind not in ("data_uri", "url"))


async def test_roots_are_asked_for_on_each_call_over_http(
    emulator: Emulator, images: Path, tmp_path: Path
) -> None:
    """Over streamable HTTP, with the folders the client shares changing between calls."""
    first_root, later_root = tmp_path / "first", tmp_path / "later"
    early, late = photo(first_root / "a.png"), photo(later_root / "b.png", (300, 600))
    roots = Roots([first_root])
    env = server_env(emulator.base_url, images)
    with http_server(env, tmp_path) as server:
        url = listening_url(server)
        async with http_session(url, roots=roots) as session:
            ok = await session.call(
                "edit_image", {"prompt": INSTRUCTION, "input_image": str(early)}
            )
            refused = await session.call(
                "edit_image", {"prompt": INSTRUCTION, "input_image": str(late)}
            )
            roots.folders.append(later_root)  # the user opened another folder
            later = await session.call(
                "edit_image", {"prompt": INSTRUCTION, "input_image": str(late)}
            )
    assert sent_image(emulator, ok) == data_uri(early)
    assert refused["isError"] is True and "outside the allowed folders" in text_of(refused)
    assert sent_image(emulator, later) == data_uri(late)
    assert abs(aspect(edited_file(later)) - 0.5) < 0.05
    assert roots.asked == 3
    assert emulator.stats.creates == 2


async def test_stateless_http_cannot_ask_for_roots_and_uses_the_other_folders(
    emulator: Emulator, images: Path, tmp_path: Path
) -> None:
    in_output, in_root = photo(images / "a.png"), photo(tmp_path / "project" / "b.png")
    roots = Roots([in_root.parent])
    env = server_env(emulator.base_url, images)
    with http_server(env, tmp_path, "--stateless") as server:
        url = listening_url(server)
        async with http_session(url, roots=roots) as session:
            ok = await session.call("edit_image", {"prompt": INSTRUCTION, "input_image": "a.png"})
            refused = await session.call(
                "edit_image", {"prompt": INSTRUCTION, "input_image": str(in_root)}
            )
    assert sent_image(emulator, ok) == data_uri(in_output)
    assert refused["isError"] is True and "outside the allowed folders" in text_of(refused)
    assert str(images) in text_of(refused)
    assert emulator.stats.creates == 1


async def test_edit_the_image_just_generated_then_edit_the_edit_over_http(
    emulator: Emulator, images: Path, tmp_path: Path
) -> None:
    env = server_env(emulator.base_url, images)
    with http_server(env, tmp_path) as server:
        url = listening_url(server)
        async with http_session(url) as session:  # a client without roots
            generated = await session.call(
                "generate_image", {"prompt": "a blue car on a road", "aspect_ratio": "2:3"}
            )
            pid = generated["structuredContent"]["prediction_id"]
            first = await session.call("edit_image", {"prompt": INSTRUCTION, "input_image": pid})
            second_pid = first["structuredContent"]["prediction_id"]
            second = await session.call(
                "edit_image", {"prompt": "now make it night", "input_image": second_pid}
            )
    [saved] = [Path(p) for p in generated["structuredContent"]["files"]]
    first_out, second_out = edited_file(first), edited_file(second)
    assert sent_image(emulator, first) == data_uri(saved, "image/webp")
    assert sent_image(emulator, second) == data_uri(first_out)
    assert abs(aspect(second_out) - 2 / 3) < 0.05
    assert emulator.stats.files == 3  # each output downloaded once; inputs read from disk
    sidecar = second_out.with_name(second_out.name + ".json").read_text()
    assert f'"input_image": "{second_pid}"' in sidecar  # provenance: edited from that result
    assert "base64," not in sidecar  # the inline input is not copied into the sidecar


# -- refusals -------------------------------------------------------------------------------------


async def test_refused_images_are_never_read_and_the_server_keeps_serving(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # FIFOs: opening one for reading blocks until a writer comes, so a call that returns at all
    # (within the client's timeout) shows it was never opened.
    fifo = outside / "secret.png"
    os.mkfifo(fifo)
    (images / "innocent.png").symlink_to(fifo)
    real_outside = photo(outside / "real.png")
    (images / "linked.png").symlink_to(real_outside)
    shared_elsewhere = photo(tmp_path / "project" / "car.png")  # a root, but none declared
    big = photo(images / "big.png")
    assert big.stat().st_size > 1000
    small = images / "small.png"
    Image.new("RGB", (30, 20), (10, 20, 30)).save(small)
    assert small.stat().st_size <= 1000
    (images / "notes.png").write_text("not an image at all")

    cases: list[tuple[dict[str, Any], str]] = [
        ({"input_image": str(fifo)}, "outside the allowed folders"),
        ({"input_image": "../outside/secret.png"}, "outside the allowed folders"),
        ({"input_image": str(images / "innocent.png")}, "outside the allowed folders"),
        ({"input_image": "linked.png"}, "outside the allowed folders"),
        ({"input_image": str(shared_elsewhere)}, "outside the allowed folders"),
        ({"input_image": str(big)}, "over the 1000-byte limit"),
        ({"input_image": str(images / "notes.png")}, "not an image"),
        ({"input_image": str(images / "missing.png")}, "no such image file"),
        ({"input_image": "abcdefghijklmnopqrstuvwxyz"}, "nor a known prediction id"),
        ({"input_image": "file:///etc/passwd"}, "unsupported URL scheme"),
        ({}, "is required"),
    ]
    async with session_for(
        emulator, images, workdir, errlog, FLUX_MCP_MAX_IMAGE_BYTES="1000"
    ) as session:
        results = [
            await session.call("edit_image", {"prompt": INSTRUCTION, **args}) for args, _ in cases
        ]
        good = await session.call("edit_image", {"prompt": INSTRUCTION, "input_image": "small.png"})

    for (args, message), result in zip(cases, results, strict=True):
        text = text_of(result)
        assert result["isError"] is True, args
        assert message in text, text
        assert "input_image" in text and "nothing was sent" in text
        assert "call edit_image again" in text
    for result in results[:5]:  # what to do instead
        text = text_of(result)
        assert str(images) in text and "FLUX_IMAGE_DIRS" in text and "data: URI" in text
    assert "FLUX_MCP_MAX_IMAGE_BYTES" in text_of(results[5]) and "1000 bytes" in text_of(results[5])
    assert sent_image(emulator, good) == data_uri(small)
    assert emulator.stats.creates == 1  # only the good call reached the API


async def test_an_image_prompt_path_for_generate_image_is_read_the_same_way(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path, tmp_path: Path
) -> None:
    guide = photo(images / "guide.png")
    outside = photo(tmp_path / "outside" / "guide.png")
    async with session_for(emulator, images, workdir, errlog) as session:
        ok = await session.call("generate_image", {"prompt": "a car", "image_prompt": "guide.png"})
        refused = await session.call(
            "generate_image", {"prompt": "a car", "image_prompt": str(outside)}
        )
    assert not ok.get("isError"), text_of(ok)
    assert sent_image(emulator, ok, "image_prompt") == data_uri(guide)
    assert text_of(ok).startswith("Generated image")
    assert refused["isError"] is True
    assert "image_prompt" in text_of(refused) and "outside the allowed folders" in text_of(refused)
    assert emulator.stats.creates == 1


# -- the edit call behaves like a generation ------------------------------------------------------


async def test_an_edit_outlasting_the_budget_is_resumed_with_get_prediction(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path, tmp_path: Path
) -> None:
    source = photo(images / "car.png", (300, 600))
    async with session_for(emulator, images, workdir, errlog, FLUX_MCP_WAIT_SECONDS="1") as session:
        first = await session.call(
            "edit_image",
            {"prompt": f"{INSTRUCTION} [emulator:latency=3]", "input_image": "car.png"},
        )
        pending = first["structuredContent"]
        assert pending["status"] in ("starting", "processing"), text_of(first)
        assert "get_prediction" in text_of(first)
        resumed: dict[str, Any] = {}
        for _ in range(10):
            resumed = await session.call(
                "get_prediction", {"prediction_id": pending["prediction_id"]}
            )
            if resumed["structuredContent"]["status"] == "succeeded":
                break
    out = edited_file(resumed)
    assert abs(aspect(out) - aspect(source)) < 0.05
    assert emulator.stats.creates == 1 and emulator.stats.cancels == 0


async def test_canceling_an_edit_cancels_the_prediction_upstream(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    photo(images / "car.png")
    progress = Progress()
    async with session_for(emulator, images, workdir, errlog) as session:
        await session.call_then_cancel(
            "edit_image",
            {"prompt": f"{INSTRUCTION} [emulator:hang]", "input_image": "car.png"},
            progress,
        )
        with anyio.fail_after(20):
            while emulator.stats.cancels == 0:
                await anyio.sleep(0.05)
        assert "edit_image" in await session.list_tools()
    [prediction] = emulator.predictions.values()
    assert emulator.prediction_json(prediction.id)["status"] == "canceled"


# -- the configured models ------------------------------------------------------------------------


async def test_flux_schnell_gives_its_schema_and_every_image_of_a_list_output(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    async with session_for(emulator, images, workdir, errlog, FLUX_MODEL="flux-schnell") as session:
        tools = await session.list_tools()
        result = await session.call(
            "generate_image", {"prompt": "three drafts of a logo", "num_outputs": 3}
        )
        refused = await session.call("generate_image", {"prompt": "x", "steps": 20})

    schnell = known_model("flux-schnell")
    schema = tools["generate_image"]["inputSchema"]
    published = lean_schema(schnell.input_model.model_json_schema())
    assert schema["properties"] == published["properties"]
    assert schema["properties"]["num_outputs"]["maximum"] == 4
    assert "flux-schnell" in tools["generate_image"]["description"]

    assert not result.get("isError"), text_of(result)
    structured = result["structuredContent"]
    files = [Path(p) for p in structured["files"]]
    pid = structured["prediction_id"]
    assert len(files) == 3 and len(set(files)) == 3
    assert [f.name for f in files] == [f"{pid}_{i}.webp" for i in range(3)]
    assert all(f.is_file() and f.parent == images for f in files)
    assert structured["urls"] == emulator.prediction_json(pid)["output"]
    assert len(structured["urls"]) == 3
    text = text_of(result)
    assert text.startswith("Generated 3 images")
    assert all(str(f) in text for f in files) and all(u in text for u in structured["urls"])
    assert len(blocks(result, "resource_link")) == 3
    assert len(blocks(result, "image")) == 3
    assert len(str(result).encode()) < ONE_MIB
    assert refused["isError"] is True and "num_inference_steps" in text_of(refused)
    assert emulator.stats.creates == 1


async def test_flux_dev_as_the_edit_model(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path
) -> None:
    source = photo(images / "car.png", (400, 600))
    async with session_for(
        emulator, images, workdir, errlog, FLUX_EDIT_MODEL="flux-dev"
    ) as session:
        tools = await session.list_tools()
        result = await session.call(
            "edit_image", {"prompt": "as a watercolor", "image": "car.png", "num_outputs": 2}
        )
        wrong_field = await session.call(
            "edit_image", {"prompt": "as a watercolor", "input_image": "car.png"}
        )
    schema = tools["edit_image"]["inputSchema"]
    assert set(schema["required"]) == {"prompt", "image"}
    assert "prompt_strength" in schema["properties"]
    assert not result.get("isError"), text_of(result)
    files = [Path(p) for p in result["structuredContent"]["files"]]
    assert len(files) == 2
    assert all(abs(aspect(f) - aspect(source)) < 0.05 for f in files)
    assert sent_image(emulator, result, "image") == data_uri(source)
    assert "edit_image with image set to its saved path" in text_of(result)
    assert wrong_field["isError"] is True and "input_image" in text_of(wrong_field)


async def test_a_copied_result_is_found_in_a_root(
    emulator: Emulator, images: Path, workdir: Path, errlog: Path, tmp_path: Path
) -> None:
    """A saved result moved into the user's project is editable from there by path."""
    project = tmp_path / "project"
    async with session_for(emulator, images, workdir, errlog, roots=Roots([project])) as session:
        generated = await session.call("generate_image", {"prompt": "a car", "aspect_ratio": "3:2"})
        [saved] = generated["structuredContent"]["files"]
        moved = project / "hero.webp"
        project.mkdir()
        shutil.move(saved, moved)
        result = await session.call(
            "edit_image", {"prompt": INSTRUCTION, "input_image": str(moved)}
        )
    assert sent_image(emulator, result) == data_uri(moved, "image/webp")
    assert abs(aspect(edited_file(result)) - 1.5) < 0.05


# -- roots under both protocol eras -------------------------------------------------------------


@pytest.mark.parametrize(("client", "era"), combinations())
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_file_in_a_shared_root_is_edited_in_each_protocol_era(
    emulator: Emulator,
    images: Path,
    tmp_path: Path,
    workdir: Path,
    errlog: Path,
    client: str,
    era: str,
    transport: str,
) -> None:
    """Under 2025-11-25 the server asks ``roots/list`` mid-call; under 2026-07-28 it cannot
    (no back channel), and the SDK's resolver asks with the call's first answer instead."""
    project = tmp_path / "project"
    original = photo(project / "assets" / "car.png", (640, 360))
    env = server_env(emulator.base_url, images)
    with serving(transport, env, workdir, errlog) as target:
        async with connect(client, era, target, roots=[project]) as caller:
            result = await caller.call(
                "edit_image", {"prompt": INSTRUCTION, "input_image": str(original)}
            )
            outside = await caller.call(
                "edit_image",
                {"prompt": INSTRUCTION, "input_image": str(photo(tmp_path / "other" / "x.png"))},
            )
    if era != LEGACY:
        assert caller.protocol_version == era
    edited_file(result)
    assert sent_image(emulator, result) == data_uri(original)
    assert outside["isError"] is True and "outside the allowed folders" in text_of(outside)
    assert emulator.stats.creates == 1
