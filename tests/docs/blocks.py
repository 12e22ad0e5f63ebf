"""The fenced code blocks of the documentation (README.md and docs/), as the tests check them.

A block's marker is an HTML comment on the line before it, invisible on the site and on GitHub:
``<!-- typecheck-only: why -->`` (a Python block that cannot run offline: type-checked with mypy
instead) or ``<!-- pytest -->`` (a Python block that is a test module: run by pytest).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell", "console", "zsh"}
JSON = {"json", "jsonc"}
YAML = {"yaml", "yml"}
#: Not code of ours: drawings, outputs, and configuration of other software (a proxy's, an
#: identity provider's), shown as text. Everything else must be one of the kinds above.
NOT_CODE = {"text", "txt", "caddyfile", "nginx", "haproxy", "ini", "conf", "toml", "dockerfile"}
MARKERS = ("typecheck-only", "pytest")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<name>[a-z-]+)\b.*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    #: The line of the opening fence (1-based).
    line: int
    lang: str
    marker: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence = opening.group("fence")
        info = opening.group("info").strip()
        lang = re.split(r"[\s{]", info, maxsplit=1)[0].lstrip(".").lower() if info else ""
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence[0] * len(fence))
            and lines[end].strip().strip(fence[0]) == ""
        ):
            body.append(lines[end])
            end += 1
        before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = _MARKER.match(before)
        name = marker.group("name") if marker and marker.group("name") in MARKERS else None
        code = textwrap.dedent("\n".join(body)) + "\n"
        found.append(Block(page, index + 1, lang, name, code))
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks_of(page)]


def installed(command: str) -> str:
    """The path of a command of this environment (its scripts sit beside its python)."""
    beside = Path(sys.executable).parent / command
    return str(beside) if beside.exists() else shutil.which(command) or command


# -- shell -------------------------------------------------------------------------------------

_WHICH = re.compile(r"\$\(which ([\w.-]+)\)")
_SUBSTITUTION = re.compile(r"\$\([^)]*\)")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


@dataclass(frozen=True)
class Command:
    """One command line of a shell block: its ``NAME=value`` prefixes and its words."""

    assignments: dict[str, str]
    argv: list[str]
    text: str


def commands_of(code: str) -> Iterator[Command]:
    """The commands of a shell block, continuation lines joined, comments dropped;
    ``$(which NAME)`` is the installed command's path, any other ``$(...)`` a 64-character
    stand-in (a token made by ``openssl rand -hex 32``)."""
    for line in code.replace("\\\n", " ").splitlines():
        text = _WHICH.sub(lambda m: installed(m.group(1)), line)
        text = _SUBSTITUTION.sub("0123456789abcdef" * 4, text)
        words = shlex.split(text, comments=True)
        assignments: dict[str, str] = {}
        while words and (assignment := _ASSIGNMENT.match(words[0])):
            assignments[assignment.group(1)] = assignment.group(2)
            words.pop(0)
        if words or assignments:
            yield Command(assignments, words, line.strip())
