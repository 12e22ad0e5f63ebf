"""A LangChain agent loop that generates an image, offline.

The chat model is scripted (``langchain_core``'s fake chat model: it asks for one image, then
answers); the tool runs for real against the emulator. Run it with
``python examples/langchain_agent.py [output-dir]``: no API key, no network.

With a real model and token, drop the emulator and the scripted model:

    tool = FluxImageTool(output_dir="images")   # FLUX_API_TOKEN or REPLICATE_API_TOKEN
    model = ChatAnthropic(model="...").bind_tools([tool])
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import SecretStr

from flux_tools.emulator import Emulator
from flux_tools.langchain import FluxImageTool


class ScriptedChatModel(GenericFakeChatModel):
    """Replies with the scripted messages in turn; accepts tools like a real chat model."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # What a provider integration sends: the tools' JSON schemas.
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def run_agent(
    model: Runnable[LanguageModelInput, AIMessage],
    tools: Sequence[BaseTool],
    question: str,
    max_turns: int = 5,
) -> list[BaseMessage]:
    """The smallest agent: call the model, run the tools it asks for, repeat until it answers."""
    by_name = {tool.name: tool for tool in tools}
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(max_turns):
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return messages
        for call in reply.tool_calls:
            # Invoked with the tool call itself, a tool returns a ToolMessage (with its artifact).
            messages.append(by_name[call["name"]].invoke(call))
    raise RuntimeError(f"no answer after {max_turns} turns")


def main(out_dir: str = "flux-images") -> Path:
    scripted = ScriptedChatModel(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        {
                            "name": "generate_image",
                            "args": {
                                "prompt": "The world's largest black forest cake, the size of "
                                "a building, golden hour, photorealistic",
                                "aspect_ratio": "16:9",
                                "seed": 42,
                            },
                            "id": "call_1",
                            "type": "tool_call",
                        }
                    ],
                ),
                AIMessage("Here is your black forest cake, the size of a building."),
            ]
        )
    )
    with Emulator(latency=1.0) as emulator:
        # A placeholder token: a real one from the environment has no business here.
        tool = FluxImageTool(
            base_url=emulator.base_url, api_token=SecretStr("offline"), output_dir=Path(out_dir)
        )
        try:
            messages = run_agent(scripted.bind_tools([tool]), [tool], "Draw a giant cake.")
        finally:
            tool.close()
    result = next(m for m in messages if isinstance(m, ToolMessage))
    if result.status == "error":
        raise SystemExit(f"the tool failed: {result.content}")
    print(f"tool:   {result.content}", file=sys.stderr)
    print(f"answer: {messages[-1].content}")
    path = Path(result.artifact["files"][0])
    print(f"image:  {path}")
    return path


if __name__ == "__main__":
    main(*sys.argv[1:])
