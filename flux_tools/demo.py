"""``flux-tools demo``: the whole idea, offline, in under a minute.

It starts the emulator (a fake Replicate API on a loopback port), then generates one image
through each front end a user would wire into an agent:

1. the MCP server, started as a subprocess over stdio exactly as Claude Desktop starts it, and
   driven by the official MCP client (list the tools, call ``generate_image`` with progress);
2. the LangChain tool, invoked with a tool call as an agent would, with progress events;

and ends with where the images are and what to do next. No API key, no network.
Needs the ``all`` extra (``mcp``, ``langchain-core``, Pillow).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import SecretStr

from flux_tools import DEFAULT_MODEL
from flux_tools.emulator import Emulator

#: A generation long enough to show progress, short enough for a one-minute demo.
DEMO_LATENCY = 2.0
PROMPT = "The world's largest black forest cake, the size of a building, golden hour"


def say(text: str = "") -> None:
    print(text, flush=True)


async def _through_mcp(emulator: Emulator, out_dir: Path) -> list[str]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    # The env block a desktop client passes: only these reach the server.
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server"],
        env={
            "FLUX_API_TOKEN": "demo-token",
            "FLUX_BASE_URL": emulator.base_url,
            "FLUX_OUTPUT_DIR": str(out_dir / "mcp"),
            "FLUX_MCP_LOG_LEVEL": "WARNING",
        },
    )

    async def progress(done: float, total: float | None, message: str | None) -> None:
        say(f"    progress: {message or done}")

    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        say(f"  tools: {', '.join(tool.name for tool in tools)}")
        call_tool: Any = session.call_tool  # its overloads differ between SDK lines

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            shown = ", ".join(f"{k}={str(v)[:40]!r}" for k, v in arguments.items())
            say(f"  calling {name}({shown})")
            answer = await call_tool(name, arguments, progress_callback=progress)
            # The result as it travels (the same keys on both SDK lines).
            result: dict[str, Any] = answer.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
            say(f"  result content: {', '.join(block['type'] for block in result['content'])}")
            data: dict[str, Any] = result.get("structuredContent") or {}
            if result.get("isError") or not data.get("files"):
                text = next((b["text"] for b in result["content"] if b["type"] == "text"), "")
                raise RuntimeError(f"the MCP server answered with an error: {text}")
            for path in data["files"]:
                say(f"  saved: {path}")
            return data

        made = await call("generate_image", {"prompt": PROMPT, "aspect_ratio": "16:9", "seed": 42})
        # "Edit the image you just made": its prediction id is enough.
        edited = await call(
            "edit_image",
            {"input_image": made["prediction_id"], "prompt": "make it a lemon cake"},
        )
    return [*made["files"], *edited["files"]]


def _through_langchain(emulator: Emulator, out_dir: Path) -> list[str]:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from .langchain import PROGRESS_EVENT, FluxImageTool

    class ShowProgress(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
            if name == PROGRESS_EVENT:
                say(f"    progress: {data['status']} after {data['elapsed']:.1f} s")

    tool = FluxImageTool(
        api_token=SecretStr("demo-token"),
        base_url=emulator.base_url,
        output_dir=out_dir / "langchain",
    )
    # What an agent loop does with the model's tool call: the answer is a ToolMessage.
    call = {
        "type": "tool_call",
        "id": "call_1",
        "name": "generate_image",
        "args": {"prompt": PROMPT + ", watercolor", "aspect_ratio": "1:1", "seed": 7},
    }
    offered = convert_to_openai_tool(tool)["function"]["parameters"]["properties"]
    say(f"  what the chat model is offered: generate_image({', '.join(offered)})")
    message = tool.invoke(call, config={"callbacks": [ShowProgress()]})
    tool.close()
    say("  ToolMessage.content (what the chat model reads):")
    for line in str(message.content).splitlines():
        say(f"    | {line}")
    files: list[str] = message.artifact["files"]
    return files


def _next_steps(out_dir: Path) -> None:
    # Desktop apps do not see the shell's PATH: the absolute path of this venv's server.
    server = shutil.which("flux-mcp") or str(Path(sys.executable).parent / "flux-mcp")
    config = {
        "mcpServers": {
            "flux": {
                "command": server,
                "env": {"FLUX_API_TOKEN": "r8_...", "FLUX_OUTPUT_DIR": str(out_dir)},
            }
        }
    }
    say("Next steps")
    say("  1. Use a real token:  export REPLICATE_API_TOKEN=r8_...   (Replicate)")
    say("     or a gateway:      export FLUX_API_TOKEN=... FLUX_BASE_URL=https://HOST/replicate/v1")
    say('     then:              flux-tools generate "a fox in the snow" --aspect-ratio 16:9')
    say(f"  2. Claude Code:       claude mcp add flux --env REPLICATE_API_TOKEN=r8_... -- {server}")
    say("     Claude Desktop, Cursor, VS Code: add this to the client's MCP configuration:")
    for line in json.dumps(config, indent=2).splitlines():
        say(f"       {line}")
    say("  3. LangChain:         from flux_tools.langchain import FluxImageTool")
    say("  4. Your own tests:    from flux_tools.emulator import Emulator  (this demo's fake API)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flux-tools demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="flux-images", metavar="DIR", help="where images go")
    args = parser.parse_args(argv)
    out_dir = Path(args.out).expanduser().resolve()
    try:
        import langchain_core  # noqa: F401
        import mcp  # noqa: F401
    except ImportError as exc:
        say(f"flux-tools demo needs the extras: pip install 'flux-tools[all]' ({exc})")
        return 2

    say(f"flux-tools demo: {DEFAULT_MODEL} on an offline emulator (no key, no network)\n")
    # Gateway mode (no Prefer: wait) so that progress is visible while the image "renders".
    with Emulator(latency=DEMO_LATENCY, honor_prefer_wait=False) as emulator:
        say(f"emulator: {emulator.base_url}\n")
        say("1. MCP: the server over stdio, driven by the official MCP client")
        mcp_files = asyncio.run(_through_mcp(emulator, out_dir))
        say("\n2. LangChain: FluxImageTool invoked with a tool call, as an agent does")
        lc_files = _through_langchain(emulator, out_dir)
        made = emulator.stats.predictions_created
    files = mcp_files + lc_files
    say(f"\nDone: {made} predictions, {len(files)} images saved under {out_dir}")
    for path in files:
        size = Path(path).stat().st_size
        say(f"  {path}  ({size // 1024} KiB)")
    say()
    _next_steps(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
