"""What LangChain would send to OpenAI and to Anthropic from our results: nothing they reject.

The results are real: our LangChain tool's ToolMessages (tool calls against the emulator), and
our MCP server's results loaded through ``langchain.mcp`` (on the 2.x SDK line) and through
``langchain-mcp-adapters`` (it pins the 1.x line: that part runs in ``.venv-mcp1``). The
payloads are built by the chat models' own offline request builders
(``_get_request_payload``): nothing is sent. What the providers refuse, from their API
references: OpenAI's Chat Completions API takes only text in a ``tool`` message, and fetches
only http(s) (or ``data:image/``) image URLs; Anthropic fetches only http(s) image URLs, and
takes base64 images of four media types.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.util
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.tools import BaseTool

from flux_tools.emulator import Emulator
from flux_tools.langchain import FluxImageTool

from ..mcp.mcp_helpers import server_env

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="langchain-openai builds the OpenAI payloads (the dev extra)"
)
langchain_anthropic = pytest.importorskip(
    "langchain_anthropic", reason="langchain-anthropic builds the Anthropic payloads (dev extra)"
)

MakeEmulator = Callable[..., Emulator]
HTTP_SCHEMES = ("https://", "http://")
ANTHROPIC_MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
#: Block types Anthropic takes inside a tool_result.
ANTHROPIC_TOOL_RESULT_BLOCKS = {"text", "image", "document", "search_result"}


# -- the providers' rules --------------------------------------------------------------------


def openai_rejections(payload: dict[str, Any]) -> list[str]:
    """What OpenAI's Chat Completions API would refuse in ``payload``."""
    problems: list[str] = []
    for index, message in enumerate(payload["messages"]):
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        if message["role"] == "tool" and not content:
            problems.append(f"messages[{index}]: an empty tool message")
        for part in parts:
            kind = part.get("type")
            if message["role"] == "tool" and kind != "text":
                problems.append(f"messages[{index}]: a {kind} part in a tool message")
            if kind == "image_url":
                url = str(part["image_url"]["url"])
                if not url.startswith((*HTTP_SCHEMES, "data:image/")):
                    problems.append(f"messages[{index}]: image URL {url[:60]!r}")
    return problems


def _anthropic_image(block: dict[str, Any], where: str) -> list[str]:
    source = block.get("source", {})
    if source.get("type") == "url":
        url = str(source.get("url", ""))
        return [] if url.startswith(HTTP_SCHEMES) else [f"{where}: image URL {url[:60]!r}"]
    if source.get("type") == "base64":
        problems = []
        if source.get("media_type") not in ANTHROPIC_MEDIA_TYPES:
            problems.append(f"{where}: image media type {source.get('media_type')!r}")
        try:
            if not base64.b64decode(source.get("data", ""), validate=True):
                problems.append(f"{where}: an empty image")
        except binascii.Error:
            problems.append(f"{where}: image data that is not base64")
        return problems
    return [f"{where}: image source {source.get('type')!r}"]


def anthropic_rejections(payload: dict[str, Any]) -> list[str]:
    """What Anthropic's Messages API would refuse in ``payload``."""
    problems: list[str] = []
    for index, message in enumerate(payload["messages"]):
        content = message.get("content")
        for position, block in enumerate(content if isinstance(content, list) else []):
            where = f"messages[{index}].content[{position}]"
            if block.get("type") == "image":
                problems += _anthropic_image(block, where)
            if block.get("type") != "tool_result":
                continue
            inner = block.get("content")
            if inner in (None, "", []):
                continue  # allowed (an empty result), though not useful
            for depth, part in enumerate(inner if isinstance(inner, list) else []):
                inner_where = f"{where}.content[{depth}]"
                if part.get("type") not in ANTHROPIC_TOOL_RESULT_BLOCKS:
                    problems.append(f"{inner_where}: a {part.get('type')} block in a tool_result")
                if part.get("type") == "image":
                    problems += _anthropic_image(part, inner_where)
    return problems


def conversation(call: ToolCall, result: ToolMessage) -> list[BaseMessage]:
    return [HumanMessage("Draw a fox."), AIMessage("", tool_calls=[call]), result]


def openai_payload(messages: list[BaseMessage]) -> dict[str, Any]:
    model = langchain_openai.ChatOpenAI(model="gpt-4o-mini", api_key="sk-offline")
    payload: dict[str, Any] = model._get_request_payload(messages)
    return payload


def anthropic_payload(messages: list[BaseMessage]) -> dict[str, Any]:
    model = langchain_anthropic.ChatAnthropic(model="claude-sonnet-4-5", api_key="sk-offline")
    payload: dict[str, Any] = model._get_request_payload(messages)
    return payload


def tool_message_in(payload: dict[str, Any], provider: str) -> Any:
    """The tool result as the provider receives it."""
    last = payload["messages"][-1]
    if provider == "openai":
        assert last["role"] == "tool"
        return last["content"]
    (block,) = [b for b in last["content"] if b.get("type") == "tool_result"]
    return block["content"]


def text_of(sent: Any) -> str:
    if isinstance(sent, str):
        return sent
    return "\n".join(str(part.get("text", "")) for part in sent if part.get("type") == "text")


# -- the rules themselves catch what they should ----------------------------------------------


def test_the_rules_catch_what_the_providers_refuse() -> None:
    # Built the same way as below, from what langchain.mcp makes of a resource link and an
    # inline image today: the checks must see both, or their silence below means nothing.
    call = ToolCall(name="generate_image", args={"prompt": "a fox"}, id="call_1", type="tool_call")
    link = {"type": "image", "url": "flux://images/fox.png", "mime_type": "image/png"}
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0").decode()
    inline = {"type": "image", "base64": jpeg, "mime_type": "image/jpeg"}
    text = {"type": "text", "text": "Generated 1 image."}
    linked = conversation(call, ToolMessage(content=[text, link], tool_call_id="call_1"))
    previewed = conversation(call, ToolMessage(content=[text, inline], tool_call_id="call_1"))
    plain = conversation(call, ToolMessage(content=[text], tool_call_id="call_1"))
    assert any("in a tool message" in p for p in openai_rejections(openai_payload(linked)))
    assert any("in a tool message" in p for p in openai_rejections(openai_payload(previewed)))
    assert any("flux://" in p for p in anthropic_rejections(anthropic_payload(linked)))
    assert anthropic_rejections(anthropic_payload(previewed)) == []
    assert openai_rejections(openai_payload(plain)) == []
    assert anthropic_rejections(anthropic_payload(plain)) == []


# -- our own LangChain tool ------------------------------------------------------------------


@pytest.fixture
async def tool_for() -> AsyncIterator[Callable[..., FluxImageTool]]:
    tools: list[FluxImageTool] = []

    def make(emulator: Emulator, **options: Any) -> FluxImageTool:
        tool = FluxImageTool(api_token="test-token", base_url=emulator.base_url, **options)
        tools.append(tool)
        return tool

    yield make
    for tool in tools:
        await tool.aclose()


@pytest.mark.parametrize(
    ("emulator_options", "prompt"),
    [
        ({}, "a red fox"),  # a URL output
        ({"output_mode": "data"}, "a red fox"),  # an inline data: output
        ({}, "[emulator:moderate] a red fox"),  # an error result
    ],
    ids=["url", "inline", "error"],
)
async def test_our_tool_messages_are_accepted_by_both(
    make_emulator: MakeEmulator,
    tool_for: Callable[..., FluxImageTool],
    tmp_path: Path,
    emulator_options: dict[str, Any],
    prompt: str,
) -> None:
    emulator = make_emulator(**emulator_options)
    tool = tool_for(emulator, output_dir=tmp_path)
    call = ToolCall(name="generate_image", args={"prompt": prompt}, id="call_1", type="tool_call")
    result = await tool.ainvoke(call)
    assert isinstance(result, ToolMessage)
    messages = conversation(call, result)
    for provider, payload, rejections in (
        ("openai", openai_payload(messages), openai_rejections),
        ("anthropic", anthropic_payload(messages), anthropic_rejections),
    ):
        assert rejections(payload) == [], provider
        sent = text_of(tool_message_in(payload, provider))
        # The model is told what it needs: the prediction, and the image or what went wrong.
        assert sent == result.content
        if result.status == "success":
            assert result.artifact["prediction_id"] in sent and "Saved to:" in sent
            assert "data:" not in sent  # an inline output is named, not pasted
        else:
            assert "No image was generated" in sent


async def test_image_blocks_suit_anthropic_and_not_openai(
    make_emulator: MakeEmulator, tool_for: Callable[..., FluxImageTool]
) -> None:
    """Why ``include_image_blocks`` is off by default: OpenAI would refuse the message."""
    tool = tool_for(make_emulator(), include_image_blocks=True)
    call = ToolCall(name="generate_image", args={"prompt": "a fox"}, id="call_1", type="tool_call")
    result = await tool.ainvoke(call)
    messages = conversation(call, result)
    anthropic = anthropic_payload(messages)
    assert anthropic_rejections(anthropic) == []
    text, image = tool_message_in(anthropic, "anthropic")
    assert text["type"] == "text" and image["type"] == "image"  # text first
    assert image["source"] == {"type": "url", "url": result.artifact["urls"][0]}
    assert openai_rejections(openai_payload(messages)) == [
        "messages[2]: a image_url part in a tool message"
    ]


# -- our MCP server through LangChain's MCP clients --------------------------------------------

#: What each FLUX_MCP_CONTENT setting gives each provider (None: the server's default for
#: LangChain's MCP clients): (OpenAI accepts it, Anthropic accepts it).
CONTENT_SETTINGS: dict[str | None, tuple[bool, bool]] = {
    None: (True, True),
    "text": (True, True),
    "text+preview": (False, True),
    "text+links": (False, False),
    "text+links+preview": (False, False),
}


def _mcp_env(emulator: Emulator, images: Path, content: str | None) -> dict[str, str]:
    env = server_env(emulator.base_url, images, FLUX_MCP_CONTENT=content)
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    return env


GENERATE = ToolCall(
    name="generate_image", args={"prompt": "a red kite", "seed": 3}, id="c1", type="tool_call"
)
REFUSED = ToolCall(
    name="generate_image", args={"prompt": "[emulator:moderate] a kite"}, id="c2", type="tool_call"
)


def _check_mcp_error(result: ToolMessage) -> None:
    """An error result is text only, whatever the setting: both providers take it."""
    assert result.status == "error"
    messages = conversation(REFUSED, result)
    openai, anthropic = openai_payload(messages), anthropic_payload(messages)
    assert openai_rejections(openai) == [] and anthropic_rejections(anthropic) == []
    assert "content filter" in text_of(tool_message_in(openai, "openai"))


def _check_mcp_result(
    call: ToolCall, result: ToolMessage, images: Path, content: str | None
) -> None:
    assert result.status == "success", result.content
    structured = result.artifact["structured_content"]
    (saved,) = [Path(p) for p in structured["files"]]
    assert saved.is_file() and saved.parent == images
    messages = conversation(call, result)
    openai, anthropic = openai_payload(messages), anthropic_payload(messages)
    openai_ok, anthropic_ok = CONTENT_SETTINGS[content]
    assert (openai_rejections(openai) == []) is openai_ok, openai_rejections(openai)
    assert (anthropic_rejections(anthropic) == []) is anthropic_ok, anthropic_rejections(anthropic)
    # Whatever else it carries, the text tells the model where the image is.
    for provider, payload in (("openai", openai), ("anthropic", anthropic)):
        sent = text_of(tool_message_in(payload, provider))
        assert str(saved) in sent and structured["prediction_id"] in sent, provider


@contextlib.contextmanager
def _quiet_beta() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*langchain.mcp.* is in beta")
        yield


@pytest.mark.mcp
@pytest.mark.skipif(
    importlib.util.find_spec("fastmcp") is None
    or importlib.util.find_spec("mcp.server.mcpserver") is None,
    reason="langchain.mcp needs fastmcp and the 2.x line of the mcp SDK (the dev extra)",
)
@pytest.mark.parametrize("content", list(CONTENT_SETTINGS), ids=lambda c: c or "default")
async def test_mcp_results_through_langchain_mcp(
    make_emulator: MakeEmulator, tmp_path: Path, content: str | None
) -> None:
    from fastmcp.client.transports import StdioTransport

    with _quiet_beta():
        from langchain.mcp import MCPAdapter

    emulator = make_emulator()
    images = tmp_path / "images"
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "mcp_server"],
        env=_mcp_env(emulator, images, content),
        cwd=str(tmp_path),
        log_file=tmp_path / "server-stderr.log",
    )
    async with MCPAdapter(transport) as adapter:
        tools: dict[str, BaseTool] = {t.name: t for t in await adapter.list_tools()}
        result = await tools["generate_image"].ainvoke(GENERATE)
        refused = await tools["generate_image"].ainvoke(REFUSED)
    _check_mcp_result(GENERATE, result, images, content)
    _check_mcp_error(refused)


@pytest.mark.mcp
@pytest.mark.skipif(
    importlib.util.find_spec("langchain_mcp_adapters") is None,
    reason="langchain-mcp-adapters pins mcp<2: it runs in .venv-mcp1 (scripts/test-mcp1)",
)
@pytest.mark.parametrize("content", list(CONTENT_SETTINGS), ids=lambda c: c or "default")
async def test_mcp_results_through_langchain_mcp_adapters(
    make_emulator: MakeEmulator, tmp_path: Path, content: str | None
) -> None:
    from langchain_mcp_adapters.client import MultiServerMCPClient

    emulator = make_emulator()
    images = tmp_path / "images"
    client = MultiServerMCPClient(
        {
            "flux": {
                "transport": "stdio",
                "command": sys.executable,
                "args": ["-m", "mcp_server"],
                "env": _mcp_env(emulator, images, content),
                "cwd": str(tmp_path),
            }
        }
    )
    tools = {tool.name: tool for tool in await client.get_tools()}
    result = await tools["generate_image"].ainvoke(GENERATE)
    refused = await tools["generate_image"].ainvoke(REFUSED)
    _check_mcp_result(GENERATE, result, images, content)
    _check_mcp_error(refused)
