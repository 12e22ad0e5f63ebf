"""No documented command runs a stranger's package.

``flux-mcp`` is also another project on PyPI (MCP tools for the Flux HPC framework), and nothing
stops anyone from publishing a ``flux-tools-mcp``: ``uvx flux-mcp``, ``pip install flux-mcp`` or a
client config ``"command": "uvx", "args": ["flux-mcp"]`` would install and run their code. Our
distribution is ``flux-tools``: every one-liner names it (``uvx --from 'flux-tools[mcp]'
flux-tools-mcp``, ``pip install 'flux-tools[mcp]'``). This reads the docs, examples, bundle,
registry entry and the messages in the code for the bare forms.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Console names of ours that are not our distribution's name on PyPI.
OUR_COMMANDS = r"(?:flux-mcp|flux_mcp|flux-tools-mcp|flux_tools_mcp)"
#: Whatever installs or runs a distribution by the name that follows.
INSTALLERS = (
    r"(?:uvx|uv\s+tool\s+(?:run|install)|uv\s+pip\s+install|uv\s+add|pipx\s+(?:run|install)"
    r"|(?:python3?\s+-m\s+)?pip3?\s+install)"
)
BARE = re.compile(rf"\b{INSTALLERS}(?:\s+--?[\w-]+(?:=\S+)?)*\s+['\"]?{OUR_COMMANDS}\b")
#: A client config running uvx (or pipx) with one of those names as the package.
BARE_CONFIG = re.compile(
    rf'"command"\s*:\s*"(?:uvx|pipx)"\s*,\s*"args"\s*:\s*\[\s*(?:"--?[\w-]+"\s*,\s*)*'
    rf'"{OUR_COMMANDS}"'
)
SCANNED = ("*.md", "server.json", "docs/**/*", "examples/**/*", "bundle/**/*", "scripts/*")
SCANNED_CODE = ("flux_tools/**/*.py", "mcp_server/**/*.py")


def scanned_files() -> list[Path]:
    found = {p for pattern in (*SCANNED, *SCANNED_CODE) for p in ROOT.glob(pattern)}
    return sorted(p for p in found if p.is_file() and ".venv" not in p.parts)


def offenses(text: str) -> list[str]:
    return [m.group(0) for pattern in (BARE, BARE_CONFIG) for m in pattern.finditer(text)]


@pytest.mark.parametrize(
    "text",
    [
        "uvx flux-mcp",
        "uvx flux-tools-mcp --transport stdio",
        "pip install flux-mcp",
        "pip install 'flux-mcp'",
        "python -m pip install --upgrade flux-mcp",
        "uv tool install flux-mcp",
        "pipx run flux-tools-mcp",
        "claude mcp add flux -- uvx flux-mcp",
        '{"command": "uvx", "args": ["flux-mcp"]}',
        '"command": "uvx",\n  "args": ["--quiet", "flux-tools-mcp"]',
    ],
)
def test_the_check_catches_a_bare_name(text: str) -> None:
    assert offenses(text), text


@pytest.mark.parametrize(
    "text",
    [
        "uvx --from 'flux-tools[mcp]' flux-mcp",
        "uvx --from flux-tools[mcp] flux-tools-mcp",
        "pip install 'flux-tools[mcp]'",
        "which flux-mcp",
        '"command": "uvx", "args": ["--from", "flux-tools[mcp]", "flux-tools-mcp"]',
        '"command": "/abs/.venv/bin/flux-mcp"',
        "uvx --with 'flux-tools[mcp]==0.1.0' flux-tools mcp",
    ],
)
def test_the_check_lets_our_name_through(text: str) -> None:
    assert not offenses(text), text


def test_docs_name_our_distribution() -> None:
    assert len(scanned_files()) > 20
    found = []
    for path in scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # an image
        found += [f"{path.relative_to(ROOT)}: {offense!r}" for offense in offenses(text)]
    assert not found, "bare names of a stranger's package:\n" + "\n".join(found)
