"""FluxImageEditTool and FluxToolkit: editing from LangChain, against the emulator."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import Image
from pydantic import Field

from flux_tools import FluxClient
from flux_tools.emulator import Emulator
from flux_tools.langchain import FluxImageEditTool, FluxImageTool, FluxToolkit

from ..conftest import requests_to


def edit_call(args: dict[str, Any]) -> ToolCall:
    return ToolCall(name="edit_image", args=args, id="call_edit", type="tool_call")


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    image = Image.new("RGB", (600, 400), (30, 60, 200))
    image.paste((250, 220, 20), (40, 40, 300, 300))
    path = folder / "car.png"
    image.save(path)
    return path


@pytest.fixture
def edit_tool(emulator: Emulator, photo: Path, tmp_path: Path) -> Iterator[FluxImageEditTool]:
    tool = FluxImageEditTool(
        api_token="t",
        base_url=emulator.base_url,
        output_dir=tmp_path / "out",
        image_dirs=[photo.parent],
    )
    yield tool
    tool.close()


def test_the_schema_is_the_edit_models_with_the_image_required() -> None:
    tool = FluxImageEditTool(api_token="t", base_url="http://127.0.0.1:9/v1")
    params = convert_to_openai_tool(tool)["function"]["parameters"]
    assert tool.name == "edit_image" and tool.model == "black-forest-labs/flux-kontext-pro"
    assert set(params["required"]) == {"prompt", "input_image"}
    assert "prediction id" in params["properties"]["input_image"]["description"]
    assert params["properties"]["aspect_ratio"]["default"] == "match_input_image"
    assert params["properties"]["output_format"]["enum"] == ["jpg", "png"]
    dev = FluxImageEditTool(api_token="t", base_url="http://127.0.0.1:9/v1", model="flux-dev")
    dev_params = convert_to_openai_tool(dev)["function"]["parameters"]
    assert set(dev_params["required"]) == {"prompt", "image"}
    assert dev_params["properties"]["prompt_strength"]["maximum"] == 1
    with pytest.raises(ValueError, match="does not edit images"):
        FluxImageEditTool(api_token="t", base_url="http://127.0.0.1:9/v1", model="flux-schnell")


@pytest.mark.parametrize("kind", ["path", "relative", "data_uri"])
async def test_edit_a_local_or_inline_image(
    edit_tool: FluxImageEditTool, emulator: Emulator, photo: Path, call: Any, kind: str
) -> None:
    source = {
        "path": str(photo),
        "relative": photo.name,
        "data_uri": "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode(),
    }[kind]
    message = await call(edit_tool, edit_call({"input_image": source, "prompt": "make it gold"}))
    assert isinstance(message, ToolMessage) and message.status == "success"
    assert "flux-kontext-pro" in message.content and "Saved to:" in message.content
    (saved,) = message.artifact["files"]
    with Image.open(saved) as image:
        assert abs(image.width / image.height - 1.5) < 0.05  # the photo's shape
    sent = emulator.prediction_json(message.artifact["prediction_id"])["input"]["input_image"]
    assert sent.startswith("data:image/png;base64,")


async def test_outside_paths_become_an_error_message(
    edit_tool: FluxImageEditTool, emulator: Emulator, call: Any
) -> None:
    message = await call(edit_tool, edit_call({"input_image": "/etc/hostname", "prompt": "gold"}))
    assert message.status == "error"
    assert "outside the allowed folders" in message.content and "input_image" in message.content
    assert emulator.stats.creates == 0


async def test_missing_image_is_a_validation_error(edit_tool: FluxImageEditTool, call: Any) -> None:
    message = await call(edit_tool, edit_call({"prompt": "gold"}))
    assert message.status == "error"
    assert "input_image" in message.content and "required" in message.content


def test_toolkit_shares_one_client(emulator: Emulator, tmp_path: Path) -> None:
    toolkit = FluxToolkit(api_token="t", base_url=emulator.base_url, output_dir=tmp_path)
    generate, edit = toolkit.get_tools()
    assert isinstance(generate, FluxImageTool) and isinstance(edit, FluxImageEditTool)
    assert generate.client is edit.client and isinstance(generate.client, FluxClient)
    assert generate.async_client is edit.async_client
    assert (generate.name, edit.name) == ("generate_image", "edit_image")
    assert edit.model == "black-forest-labs/flux-kontext-pro"
    flux_1_1 = FluxToolkit(api_token="t", base_url=emulator.base_url, model="flux-1.1-pro")
    params = convert_to_openai_tool(flux_1_1.get_tools()[0])["function"]["parameters"]
    assert "steps" not in params["properties"]  # flux-1.1-pro has none: the schema follows


class FunctionChatModel(BaseChatModel):
    """A scripted chat model whose turns are functions of the conversation so far."""

    turns: list[Callable[[list[BaseMessage]], AIMessage]]
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "function-chat-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        reply = self.turns[len(self.seen) - 1](messages)
        return ChatResult(generations=[ChatGeneration(message=reply)])


def test_agent_edits_the_image_it_just_generated(emulator: Emulator, tmp_path: Path) -> None:
    tools = {
        t.name: t
        for t in FluxToolkit(
            api_token="t", base_url=emulator.base_url, output_dir=tmp_path
        ).get_tools()
    }

    def ask_generate(_: list[BaseMessage]) -> AIMessage:
        args = {"prompt": "a red car on a street", "seed": 5}
        return AIMessage(
            "", tool_calls=[ToolCall(name="generate_image", args=args, id="c1", type="tool_call")]
        )

    def ask_edit(messages: list[BaseMessage]) -> AIMessage:
        # Like a real model: read the prediction id from the tool's text, not from hidden data.
        text = str(messages[-1].content)
        (prediction_id,) = re.findall(r"prediction (\w+)", text)
        args = {"input_image": prediction_id, "prompt": "make the car gold"}
        return AIMessage(
            "", tool_calls=[ToolCall(name="edit_image", args=args, id="c2", type="tool_call")]
        )

    def answer(messages: list[BaseMessage]) -> AIMessage:
        last = messages[-1]
        assert isinstance(last, ToolMessage)
        return AIMessage(f"Done: {last.artifact['files'][0]}")

    model = FunctionChatModel(turns=[ask_generate, ask_edit, answer]).bind_tools(
        list(tools.values())
    )
    messages: list[BaseMessage] = [HumanMessage("Draw a red car, then make it gold.")]
    for _ in range(4):
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        messages.extend(tools[c["name"]].invoke(c) for c in reply.tool_calls)
    generated, edited = (m for m in messages if isinstance(m, ToolMessage))
    assert generated.status == edited.status == "success"
    sent = emulator.prediction_json(edited.artifact["prediction_id"])["input"]["input_image"]
    assert sent.startswith("data:image/webp;base64,")  # the saved file, read from output_dir
    assert (
        base64.b64decode(sent.split(",", 1)[1]) == Path(generated.artifact["files"][0]).read_bytes()
    )
    assert str(messages[-1].content).startswith("Done: ") and str(tmp_path) in str(
        messages[-1].content
    )
    assert len(requests_to(emulator, "create")) == 2
    for tool in tools.values():
        assert isinstance(tool, FluxImageTool | FluxImageEditTool)
        tool.close()
