"""FluxImageTool through real tool calls, an agent loop and ``abatch``, against the emulator."""

from __future__ import annotations

import asyncio
import base64
import itertools
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.tools import ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import Image
from pydantic import BaseModel, SecretStr, ValidationError

from flux_tools import FluxClient, FluxProInput, RetryPolicy
from flux_tools.emulator import Emulator, Fault
from flux_tools.langchain import PROGRESS_EVENT, FluxImageTool

from ..conftest import requests_to

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-secret-0123456789abcdef"
MakeEmulator = Callable[..., Emulator]
MakeTool = Callable[..., FluxImageTool]


@pytest.fixture
async def make_tool() -> AsyncIterator[MakeTool]:
    """Tools on an emulator; the clients they build are closed at the end."""
    tools: list[FluxImageTool] = []

    def make(emulator: Emulator | None = None, **options: Any) -> FluxImageTool:
        if emulator is not None:
            options.setdefault("base_url", emulator.base_url)
        options.setdefault("api_token", "test-token")
        tool = FluxImageTool(**options)
        tools.append(tool)
        return tool

    yield make
    for tool in tools:
        await tool.aclose()


def tool_call(args: dict[str, Any], call_id: str = "call_1") -> ToolCall:
    return ToolCall(name="generate_image", args=args, id=call_id, type="tool_call")


# -- the schema a chat model receives ------------------------------------------------------------


def model_properties() -> dict[str, Any]:
    """FluxProInput's own JSON schema, as the source every tool schema must match."""
    schema = FluxProInput.model_json_schema()
    return {
        name: {k: v for k, v in prop.items() if k != "title"}
        for name, prop in schema["properties"].items()
    }


def test_schema_is_derived_from_the_input_model() -> None:
    tool = FluxImageTool(api_token="t", base_url="http://127.0.0.1:9/v1")
    assert tool.name == "generate_image"
    assert tool.args_schema is FluxProInput
    expected = model_properties()
    assert expected["steps"]["minimum"] == 1 and "enum" in expected["aspect_ratio"]

    openai = convert_to_openai_tool(tool)["function"]
    assert openai["name"] == "generate_image" and openai["description"] == tool.description
    assert openai["parameters"]["properties"] == expected
    assert openai["parameters"]["required"] == FluxProInput.model_json_schema()["required"]

    call_schema = tool.tool_call_schema
    assert isinstance(call_schema, type) and issubclass(call_schema, BaseModel)
    props = call_schema.model_json_schema()["properties"]
    for name, prop in expected.items():
        for key in ("description", "default", "enum", "minimum", "maximum", "anyOf"):
            assert props[name].get(key) == prop.get(key), (name, key)


def test_a_subclass_of_the_input_model_shows_up_in_the_tool() -> None:
    from pydantic import Field

    class Extended(FluxProInput):
        mood: str = Field(default="calm", description="The mood of the picture.")

    tool = FluxImageTool(api_token="t", args_schema=Extended)
    props = convert_to_openai_tool(tool)["function"]["parameters"]["properties"]
    assert props["mood"]["description"] == "The mood of the picture."
    assert set(props) == set(model_properties()) | {"mood"}


# -- configuration -------------------------------------------------------------------------------


def test_token_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUX_API_TOKEN", raising=False)
    monkeypatch.setenv("REPLICATE_API_TOKEN", "from-replicate-env")
    monkeypatch.setenv("FLUX_BASE_URL", "http://127.0.0.1:9/gateway/v1/")
    tool = FluxImageTool()
    assert isinstance(tool.api_token, SecretStr)
    assert tool.api_token.get_secret_value() == "from-replicate-env"
    assert tool.base_url == "http://127.0.0.1:9/gateway/v1"
    monkeypatch.setenv("FLUX_API_TOKEN", "from-flux-env")
    monkeypatch.setenv("FLUX_MODEL", "flux-pro")
    tool = FluxImageTool()
    assert tool.api_token == SecretStr("from-flux-env")
    assert tool.model == "black-forest-labs/flux-pro" and tool.args_schema is FluxProInput


def test_bad_configuration_is_refused_at_construction() -> None:
    with pytest.raises(ValidationError, match="base_url"):
        FluxImageTool(api_token="t", base_url="ftp://example.com")
    with pytest.raises(ValidationError, match="timeout"):
        FluxImageTool(api_token="t", timeout=0)
    with pytest.raises(ValidationError, match="outputdir"):
        FluxImageTool(api_token="t", outputdir="images")  # type: ignore[call-arg]  # a typo
    with pytest.raises(ValidationError, match="model must look like owner/name"):
        FluxImageTool(api_token="t", model="a/b/c")


def test_relative_output_dir_is_made_absolute_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tool = FluxImageTool(api_token="t", output_dir="images")
    assert tool.output_dir == tmp_path.resolve() / "images"


def test_the_token_never_shows(tmp_path: Path) -> None:
    tool = FluxImageTool(api_token=SECRET, base_url="http://127.0.0.1:9/v1", output_dir=tmp_path)
    dumped = tool.model_dump_json()
    assert '"base_url":"http://127.0.0.1:9/v1"' in dumped
    for text in (repr(tool), str(tool), dumped, str(tool.model_dump()), str(tool.to_json())):
        assert SECRET not in text
    assert tool.lc_secrets == {"api_token": "FLUX_API_TOKEN"}


async def test_a_wrong_token_is_reported_without_the_token(
    make_emulator: MakeEmulator, make_tool: MakeTool, call: Callable[..., Any]
) -> None:
    emulator = make_emulator(token="the-right-token")
    tool = make_tool(emulator, api_token=SECRET)
    message = await call(tool, tool_call({"prompt": "a fox"}))
    assert message.status == "error"
    assert "401" in message.content and "FLUX_API_TOKEN" in message.content
    assert "retrying will not fix" in message.content
    assert SECRET not in message.content
    assert emulator.stats.predictions_created == 0


async def test_an_injected_client_is_used_as_it_is(emulator: Emulator, make_tool: MakeTool) -> None:
    with FluxClient("injected-token", base_url=emulator.base_url) as client:
        tool = make_tool(client=client, api_token=None, base_url=None)
        assert tool.base_url == emulator.base_url and tool.model == client.model
        message = await asyncio.to_thread(tool.invoke, tool_call({"prompt": "a fox"}))
    assert message.status == "success"
    (create,) = requests_to(emulator, "create")
    assert create.headers["authorization"] == "Bearer injected-token"
    assert "client" not in repr(tool) and "client" not in tool.model_dump()


# -- a successful call ---------------------------------------------------------------------------


async def test_tool_call_gives_text_content_and_the_result_as_artifact(
    emulator: Emulator, make_tool: MakeTool, call: Callable[..., Any], tmp_path: Path
) -> None:
    tool = make_tool(emulator, output_dir=tmp_path)
    message = await call(tool, tool_call({"prompt": "a black forest cake", "seed": 42}))
    assert isinstance(message, ToolMessage)
    assert message.status == "success" and message.tool_call_id == "call_1"
    assert message.name == "generate_image"

    artifact = message.artifact
    assert artifact["status"] == "succeeded" and artifact["seed"] == 42
    assert artifact["model"] == "black-forest-labs/flux-pro"
    assert artifact["prediction_id"] in emulator.predictions
    assert artifact["timings"]["total"] > 0
    # Only what the caller chose is sent: the server applies its own defaults.
    assert artifact["input"] == {"prompt": "a black forest cake", "seed": 42}
    (url,) = artifact["urls"]
    (file,) = artifact["files"]
    assert Path(file).parent == tmp_path and Image.open(file).size[0] > 0

    content = message.content
    assert isinstance(content, str)  # OpenAI chat models accept only text in tool messages
    assert url in content and file in content and "seed 42" in content
    assert artifact["prediction_id"] in content and "temporary" in content


async def test_a_plain_string_input_is_the_prompt(emulator: Emulator, make_tool: MakeTool) -> None:
    tool = make_tool(emulator)
    content = await tool.ainvoke("a red fox in the snow")
    assert isinstance(content, str) and "Generated image" in content
    (prediction,) = emulator.predictions.values()
    assert prediction.input == {"prompt": "a red fox in the snow"}


async def test_image_blocks_follow_the_text_when_asked(
    emulator: Emulator, make_tool: MakeTool, call: Callable[..., Any]
) -> None:
    tool = make_tool(emulator, include_image_blocks=True)
    message = await call(tool, tool_call({"prompt": "a fox"}))
    text, image = message.content
    assert text["type"] == "text" and "Generated image" in text["text"]
    assert image["type"] == "image" and image["url"] == message.artifact["urls"][0]


async def test_inline_outputs_stay_out_of_the_text(
    make_emulator: MakeEmulator, make_tool: MakeTool, tmp_path: Path
) -> None:
    emulator = make_emulator(output_mode="data")
    tool = make_tool(emulator, output_dir=tmp_path, include_image_blocks=True)
    message = await tool.ainvoke(tool_call({"prompt": "a fox"}))
    (url,) = message.artifact["urls"]
    assert url.startswith("data:image/") and url.endswith("characters)")  # shortened
    text, image = message.content
    assert "data:" not in text["text"] and "inline image/" in text["text"]
    saved = Path(message.artifact["files"][0])
    assert base64.b64decode(image["base64"]) == saved.read_bytes()
    assert image["mime_type"].startswith("image/")


async def test_a_failed_download_keeps_the_generated_image(
    make_emulator: MakeEmulator, make_tool: MakeTool, call: Callable[..., Any], tmp_path: Path
) -> None:
    emulator = make_emulator(faults=[Fault("file", "404", times=None)])
    tool = make_tool(emulator, output_dir=tmp_path)
    message = await call(tool, tool_call({"prompt": "a fox"}))
    assert message.status == "success"
    assert message.artifact["files"] == [] and "gone" in message.artifact["save_error"]
    assert message.artifact["urls"][0] in message.content
    assert "Saving the image failed" in message.content
    assert list(tmp_path.iterdir()) == []


def test_each_event_loop_gets_a_working_client(emulator: Emulator) -> None:
    # asyncio.run() twice: pooled connections of the first loop must not be reused.
    tool = FluxImageTool(api_token="t", base_url=emulator.base_url)
    for prompt in ("one", "two"):
        message = asyncio.run(tool.ainvoke(tool_call({"prompt": prompt})))
        assert message.status == "success", message.content
    asyncio.run(tool.aclose())
    assert emulator.stats.predictions_created == 2


# -- errors the chat model can act on ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"prompt": "a fox", "steps": 99}, ["steps", "1 to 50"]),
        ({"prompt": "a fox", "aspect_ratio": "7:5"}, ["aspect_ratio", "'16:9'"]),
        ({"prompt": "a fox", "aspect_ratio": "custom"}, ["custom", "width and height"]),
        ({"steps": 10}, ["prompt", "is required"]),
        ({"prompt": "a fox", "colour": "red"}, ["colour", "not a field", "fields: prompt"]),
        ({"prompt": "a fox", "stpes": 30}, ["- stpes: is not a field", "did you mean 'steps'?"]),
    ],
)
async def test_invalid_arguments_name_the_field_and_what_it_allows(
    emulator: Emulator,
    make_tool: MakeTool,
    call: Callable[..., Any],
    args: dict[str, Any],
    expected: list[str],
) -> None:
    tool = make_tool(emulator)
    message = await call(tool, tool_call(args))
    assert message.status == "error" and message.tool_call_id == "call_1"
    assert "Tool input validation error" not in message.content
    for text in expected:
        assert text in message.content
    assert "call the tool again" in message.content
    assert emulator.stats.requests == []  # nothing was sent, nothing was paid


async def test_moderation_says_to_change_the_prompt(
    emulator: Emulator, make_tool: MakeTool, call: Callable[..., Any]
) -> None:
    tool = make_tool(emulator)
    message = await call(tool, tool_call({"prompt": "[emulator:moderate] a fox"}))
    assert message.status == "error"
    assert "No image was generated" in message.content
    assert "content filter" in message.content and "Change the prompt" in message.content
    assert message.artifact is None


async def test_a_failed_prediction_says_whether_to_retry(
    emulator: Emulator, make_tool: MakeTool, call: Callable[..., Any]
) -> None:
    tool = make_tool(emulator)
    message = await call(tool, tool_call({"prompt": "[emulator:fail] a fox"}))
    (prediction_id,) = emulator.predictions
    assert message.status == "error"
    assert f"Prediction {prediction_id} failed" in message.content
    assert "call generate_image once more" in message.content


async def test_a_timeout_names_the_prediction_to_check_later(
    emulator: Emulator, make_tool: MakeTool, call: Callable[..., Any]
) -> None:
    tool = make_tool(emulator, timeout=1.5)  # whole seconds race the server's Cancel-After
    message = await call(tool, tool_call({"prompt": "[emulator:hang] a fox"}))
    (prediction_id,) = emulator.predictions
    assert message.status == "error"
    assert "did not finish within" in message.content
    assert f"prediction id {prediction_id} to check it later" in message.content
    assert "fewer steps" in message.content
    assert emulator.stats.cancels == 1  # not left running (and billing) upstream


async def test_an_unreachable_api_says_so(
    make_tool: MakeTool, call: Callable[..., Any], unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/v1"
    with FluxClient("t", base_url=url, retry=RetryPolicy(max_retries=0)) as client:
        tool = make_tool(client=client)
        message = await call(tool, tool_call({"prompt": "a fox"}))
    assert message.status == "error"
    assert "Could not reach the API" in message.content
    assert "Call generate_image again later" in message.content


async def test_rate_limit_says_how_long_to_wait(
    make_emulator: MakeEmulator, make_tool: MakeTool
) -> None:
    emulator = make_emulator(faults=[Fault("create", "429", times=None, retry_after=0)])
    with FluxClient("t", base_url=emulator.base_url, retry=RetryPolicy(max_retries=1)) as client:
        tool = make_tool(client=client)
        message = await asyncio.to_thread(tool.invoke, tool_call({"prompt": "a fox"}))
    assert message.status == "error"
    assert (
        "rate limit" in message.content and "before calling generate_image again" in message.content
    )
    assert emulator.stats.predictions_created == 0


async def test_errors_can_still_be_raised_when_asked(
    emulator: Emulator, make_tool: MakeTool
) -> None:
    tool = make_tool(emulator, handle_tool_error=False, handle_validation_error=False)
    with pytest.raises(ToolException, match="content filter"):
        await tool.ainvoke(tool_call({"prompt": "[emulator:moderate] a fox"}))
    with pytest.raises(ValidationError, match="steps"):
        await tool.ainvoke(tool_call({"prompt": "a fox", "steps": 0}))


# -- progress through the run's callbacks --------------------------------------------------------


class ProgressRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], UUID]] = []
        self.tool_runs: list[UUID] = []

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, **kw: Any) -> None:
        self.tool_runs.append(run_id)

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))


class AsyncProgressRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], UUID]] = []
        self.tool_runs: list[UUID] = []

    async def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, **kw: Any
    ) -> None:
        self.tool_runs.append(run_id)

    async def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_status_changes_reach_the_callbacks(
    make_emulator: MakeEmulator, make_tool: MakeTool, kind: str
) -> None:
    # Without Prefer: wait the create answers at once, so the wait sees every status; long
    # enough that the polls (spaced by the model's usual run time) also see some twice.
    emulator = make_emulator(honor_prefer_wait=False, latency=3.0)
    tool = make_tool(emulator)
    recorder: ProgressRecorder | AsyncProgressRecorder
    if kind == "sync":
        recorder = ProgressRecorder()
        message = await asyncio.to_thread(
            tool.invoke, tool_call({"prompt": "a fox"}), {"callbacks": [recorder]}
        )
    else:
        recorder = AsyncProgressRecorder()
        message = await tool.ainvoke(tool_call({"prompt": "a fox"}), {"callbacks": [recorder]})

    assert message.status == "success"
    names = {name for name, _, _ in recorder.events}
    statuses = [data["status"] for _, data, _ in recorder.events]
    assert names == {PROGRESS_EVENT}
    assert statuses[0] == "starting" and statuses[-1] == "succeeded" and "processing" in statuses
    assert all(a != b for a, b in itertools.pairwise(statuses))  # changes only
    assert len(requests_to(emulator, "get")) + 1 > len(statuses)  # some polls were not reported
    assert {data["prediction_id"] for _, data, _ in recorder.events} == {
        message.artifact["prediction_id"]
    }
    elapsed = [data["elapsed"] for _, data, _ in recorder.events]
    assert elapsed == sorted(elapsed)
    # Attached to the tool's run, so a UI can show them under the right call.
    assert {run_id for _, _, run_id in recorder.events} == set(recorder.tool_runs)


# -- an agent round trip -------------------------------------------------------------------------


def load_example() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "langchain_agent", ROOT / "examples" / "langchain_agent.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SeenMessages(BaseCallbackHandler):
    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], dict[str, Any]]] = []

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: list[list[Any]],
        *,
        invocation_params: Any = None,
        **kw: Any,
    ) -> None:
        self.calls.append((messages[0], invocation_params or {}))


async def test_agent_round_trip_with_a_scripted_chat_model(
    emulator: Emulator, make_tool: MakeTool, tmp_path: Path
) -> None:
    example = load_example()
    answer = "Here is your fox."
    model = example.ScriptedChatModel(
        messages=iter(
            [
                AIMessage("", tool_calls=[tool_call({"prompt": "a fox", "seed": 7}, "call_fox")]),
                AIMessage(answer),
            ]
        )
    )
    tool = make_tool(emulator, output_dir=tmp_path)
    seen = SeenMessages()
    bound = model.bind_tools([tool]).with_config(callbacks=[seen])
    messages = await asyncio.to_thread(example.run_agent, bound, [tool], "Draw a fox.")

    _human, request, result, final = messages
    assert request.tool_calls[0]["name"] == "generate_image"
    assert isinstance(result, ToolMessage) and result.tool_call_id == "call_fox"
    assert result.status == "success" and result.artifact["seed"] == 7
    assert Path(result.artifact["files"][0]).is_file()
    assert final.content == answer and not final.tool_calls

    # The model was offered the derived schema, and read the tool's text on its second turn.
    (_, params), (second_call, _) = seen.calls
    (offered,) = params["tools"]
    assert offered["function"]["parameters"]["properties"] == model_properties()
    assert second_call[-1].content == result.content
    assert emulator.stats.predictions_created == 1


def test_the_example_runs_offline(tmp_path: Path) -> None:
    out = tmp_path / "images"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_agent.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    answer, image = proc.stdout.strip().splitlines()
    assert answer.startswith("answer: ") and len(answer) > len("answer: ")
    path = Path(image.removeprefix("image:  "))
    width, height = Image.open(path).size
    assert path.parent == out and width > height  # the 16:9 the scripted model asked for


# -- many concurrent calls -----------------------------------------------------------------------


async def test_abatch_of_many_calls_makes_one_prediction_each(
    emulator: Emulator, make_tool: MakeTool
) -> None:
    tool = make_tool(emulator)
    count = 60
    threads_before = {t.ident for t in threading.enumerate()}
    calls: list[str | dict[str, Any] | ToolCall] = [
        tool_call({"prompt": f"fox number {i}", "seed": i}, f"call_{i}") for i in range(count)
    ]
    messages = await tool.abatch(calls, {"max_concurrency": 20})
    new_threads = {t.name for t in threading.enumerate() if t.ident not in threads_before}

    assert [m.status for m in messages] == ["success"] * count
    assert [m.tool_call_id for m in messages] == [f"call_{i}" for i in range(count)]
    for i, message in enumerate(messages):
        assert message.artifact["input"] == {"prompt": f"fox number {i}", "seed": i}
    ids = {m.artifact["prediction_id"] for m in messages}
    assert len(ids) == count and ids == set(emulator.predictions)
    assert emulator.stats.creates == emulator.stats.predictions_created == count
    # _arun is native: no worker thread ran a blocking call, no blocking client was built.
    assert new_threads == set()
    assert tool._client is None
