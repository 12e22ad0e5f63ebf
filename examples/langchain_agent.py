"""A LangChain agent (``langchain.agents.create_agent``) that generates an image, offline.

The chat model is scripted (``langchain_core``'s fake chat model: it asks for one image, then
answers); the agent and the tool run for real, the tool against the emulator. Run it with
``python examples/langchain_agent.py [output-dir]``: no API key, no network. Needs
``pip install langchain "flux-tools[langchain,emulator]"``.

With a real model and token, drop the emulator and the scripted model:

    from langchain.agents import create_agent

    tool = FluxImageTool(output_dir="images")   # FLUX_API_TOKEN or REPLICATE_API_TOKEN
    agent = create_agent("anthropic:claude-sonnet-4-5", [tool])
    agent.invoke({"messages": [HumanMessage("Draw a giant cake.")]})
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import merge_configs
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
    model: BaseChatModel | Runnable[LanguageModelInput, AIMessage],
    tools: Sequence[BaseTool],
    question: str,
    max_turns: int = 5,
) -> list[BaseMessage]:
    """Ask ``question`` to an agent made by ``create_agent``; return the whole conversation.

    ``model`` is a chat model, or one already configured (``model.with_config(callbacks=...)``,
    ``model.bind_tools(...)``): the agent binds the tools itself, and the configuration applies
    to the whole run.
    """
    config: RunnableConfig = {}
    while isinstance(model, RunnableBinding):
        config = merge_configs(model.config, config)
        model = model.bound
    if not isinstance(model, BaseChatModel):
        raise TypeError(f"run_agent needs a chat model, got {type(model).__name__}")
    agent = create_agent(model, list(tools))
    # Each turn is a model step and a tools step.
    config["recursion_limit"] = 2 * max_turns + 1
    state = agent.invoke({"messages": [HumanMessage(question)]}, config)
    messages: list[BaseMessage] = state["messages"]
    return messages


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
    # A placeholder token: a real one from the environment has no business here.
    with (
        Emulator(latency=1.0) as emulator,
        FluxImageTool(
            base_url=emulator.base_url, api_token=SecretStr("offline"), output_dir=Path(out_dir)
        ) as tool,
    ):
        messages = run_agent(scripted, [tool], "Draw a giant cake.")
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
