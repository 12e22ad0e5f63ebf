"""Every code block of the documentation runs or type-checks, so none of it rots.

README.md and docs/: Python blocks run against one emulator, in one process (``run_blocks.py``),
each in a folder of its own holding the inputs the docs name; blocks marked typecheck-only go
through mypy; ``flux-tools`` commands of shell blocks run against the emulator too, the MCP
server's and the emulator's commands are parsed by their own parsers, and every other command is
checked for what can be checked offline (our distribution's name and extras, declared variables,
paths of the repository, shell syntax). JSON blocks parse (the client configurations are started
by ``tests/mcp/test_mcp_client_configs.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml  # type: ignore[import-untyped]
from packaging.requirements import InvalidRequirement, Requirement
from PIL import Image

import flux_tools
from flux_tools.cli import build_parser
from flux_tools.emulator import Emulator
from flux_tools.emulator.__main__ import _parser as emulator_parser

from .blocks import (
    JSON,
    NOT_CODE,
    PYTHON,
    ROOT,
    SHELL,
    YAML,
    Block,
    Command,
    all_blocks,
    commands_of,
    installed,
)

BLOCKS = all_blocks()
TOKEN = "r8_docs-token"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXTRAS = set(PROJECT["optional-dependencies"])
OUR_COMMANDS = set(PROJECT["scripts"])
DECLARED = {var.name for var in flux_tools.ENVIRONMENT}
#: The API the docs are written for, replaced by the emulator (only what a user fills in).
API_VARIABLES = {"FLUX_API_TOKEN", "REPLICATE_API_TOKEN", "FLUX_BASE_URL", "REPLICATE_BASE_URL"}
#: ``python -m MODULE``: the command it is.
MODULE_COMMANDS = {
    "flux_tools": ["flux-tools"],
    "flux_tools.emulator": ["flux-tools", "emulator"],
    "mcp_server": ["flux-tools-mcp"],
}
#: flux-tools subcommands run against the emulator; the others are parsed only (they serve).
RUN = {"generate", "edit", "batch", "resume"}


def blocks_in(langs: set[str], marker: str | None = "any") -> list[Block]:
    return [b for b in BLOCKS if b.lang in langs and (marker == "any" or b.marker == marker)]


def inputs(folder: Path) -> Path:
    """The files the docs name as the reader's own: photos and a batch's rows."""
    folder.mkdir(parents=True)
    Image.new("RGB", (300, 200), "red").save(folder / "car.png")
    Image.new("RGB", (200, 300), "blue").save(folder / "person.png")
    Image.new("RGB", (320, 240), "green").save(folder / "room.jpg")
    (folder / "products.csv").write_text("prompt,seed\na red mug,1\na blue vase,2\n")
    return folder


def test_every_block_is_of_a_kind_that_is_checked() -> None:
    assert len(blocks_in(PYTHON)) >= 15 and len(blocks_in(SHELL)) >= 10
    unknown = [
        f"{b.where}: ```{b.lang or '(no language)'}"
        for b in BLOCKS
        if b.lang not in PYTHON | SHELL | JSON | YAML | NOT_CODE
    ]
    assert not unknown, "tag each block with its language (text for a drawing or an output)"
    misplaced = [b.where for b in BLOCKS if b.marker and b.lang not in PYTHON]
    assert not misplaced, "typecheck-only and pytest mark Python blocks"


# -- what runs: Python blocks and flux-tools commands, in one process -------------------------


def cli_jobs(block: Block, folder: Path) -> Iterator[dict[str, Any]]:
    env: dict[str, str] = {}
    for command in commands_of(block.code):
        if command.argv[:1] == ["export"]:
            env |= dict(a.split("=", 1) for a in command.argv[1:] if "=" in a)
        argv = command.argv
        if argv[:1] == ["flux-tools"] and argv[1:2] and argv[1] in RUN:
            values = {**env, **command.assignments}
            values = {k: v for k, v in values.items() if k not in API_VARIABLES}
            yield {"kind": "cli", "argv": argv[1:], "env": values, "folder": str(folder)}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Runs every runnable block once (one emulator, one process): the results, in order."""
    root = tmp_path_factory.mktemp("docs-blocks")
    jobs: list[dict[str, Any]] = []
    for number, block in enumerate(BLOCKS):
        folder = root / f"{number:03d}"
        where = {"where": block.where, "line": block.line - 1 + 1}
        if block.lang in PYTHON and block.marker != "typecheck-only":
            kind = "pytest" if block.marker == "pytest" else "python"
            jobs.append({"kind": kind, "code": block.code, "folder": str(inputs(folder)), **where})
        elif block.lang in SHELL:
            for job in cli_jobs(block, folder):
                if not folder.exists():
                    inputs(folder)
                jobs.append({**job, **where})
    (root / "jobs.json").write_text(json.dumps(jobs))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    with Emulator(latency=0.05, queue_time=0.01, image_scale=0.25) as emulator:
        env = {
            **base,
            "FLUX_BASE_URL": emulator.base_url,
            "FLUX_API_TOKEN": TOKEN,
            "FLUX_CACHE_DIR": str(root / "cache"),
            "NO_COLOR": "1",
        }
        command = [sys.executable, str(Path(__file__).with_name("run_blocks.py"))]
        done = subprocess.run(
            [*command, str(root / "jobs.json"), str(root / "results.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads((root / "results.json").read_text())
    assert len(results) == len(jobs)
    return results


def test_python_blocks_and_flux_tools_commands_run(ran: list[dict[str, Any]]) -> None:
    assert sum(1 for r in ran) >= len(blocks_in(PYTHON)) - len(blocks_in(PYTHON, "typecheck-only"))
    failed = [f"{r['where']}:\n{r['output']}" for r in ran if not r["ok"]]
    assert not failed, "\n\n".join(failed)


def test_typecheck_only_blocks_type_check(tmp_path: Path) -> None:
    blocks = blocks_in(PYTHON, "typecheck-only")
    assert blocks, "the gateway example at least"
    files = []
    for number, block in enumerate(blocks):
        path = tmp_path / f"block_{number}.py"
        path.write_text(block.code)
        files.append(str(path))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # Named by the page and line (mypy's cache may recall a block under an earlier tmp path).
    report = done.stdout
    for number, block in enumerate(blocks):
        report = re.sub(rf"[^\s:]*block_{number}\.py", block.where, report)
    assert done.returncode == 0, report


# -- what is checked without running: the other commands ---------------------------------------


def _requirement_problem(text: str) -> str | None:
    """A requirement the docs install must be our distribution, with extras it has."""
    local = re.fullmatch(r"\.(?:\[(?P<extras>[\w,]+)\])?", text)
    if local:
        extras = set((local.group("extras") or "").split(",")) - {""}
    else:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            return f"{text!r} is not a requirement"
        if requirement.name != "flux-tools":
            return f"{text!r} is not our distribution (flux-tools)"
        extras = set(requirement.extras)
    return f"{text!r}: no extra {sorted(extras - EXTRAS)}" if extras - EXTRAS else None


def _env(command: Command, exported: dict[str, str]) -> dict[str, str]:
    return {**exported, **command.assignments}


def check(command: Command, exported: dict[str, str]) -> list[str]:
    """What is wrong with one command line, checked offline (empty: nothing)."""
    argv, env = command.argv, _env(command, exported)
    problems = [
        f"{name} is not a variable flux-tools reads"
        for name in command.assignments
        if name.startswith(("FLUX_", "REPLICATE_")) and name not in DECLARED
    ]
    if not argv:
        return problems
    program = Path(argv[0]).name
    if program == "flux-tools":
        problems += _check_flux_tools(argv[1:], env)
    elif program in OUR_COMMANDS:  # the MCP server, under any of its names
        problems += _check_server(argv[1:], env)
    elif program in ("pip", "pip3") or argv[1:3] == ["-m", "pip"]:
        words = argv[argv.index("install") + 1 :] if "install" in argv else []
        problems += [p for w in words if not w.startswith("-") if (p := _requirement_problem(w))]
    elif program == "uvx":
        problems += _check_uvx(argv[1:], env)
    elif program == "claude" and "--" in argv:
        problems += check(Command({}, argv[argv.index("--") + 1 :], command.text), env)
    elif program == "which":
        problems += [f"{w} is not a command of ours" for w in argv[1:] if w not in OUR_COMMANDS]
    elif program == "export":
        for word in argv[1:]:
            name = word.split("=", 1)[0]
            if name.startswith(("FLUX_", "REPLICATE_")) and name not in DECLARED:
                problems.append(f"{name} is not a variable flux-tools reads")
    elif program.startswith("python") and argv[1:2] == ["-m"] and argv[2] in MODULE_COMMANDS:
        problems += check(Command({}, [*MODULE_COMMANDS[argv[2]], *argv[3:]], command.text), env)
    elif program.startswith("python") or argv[0].startswith(("./", ".venv/")):
        problems += _check_paths(argv)
    return problems


def _check_flux_tools(argv: list[str], env: dict[str, str]) -> list[str]:
    if argv[:1] == ["emulator"]:
        return _parses(lambda: emulator_parser("flux-tools emulator").parse_args(argv[1:]))
    if argv[:1] == ["mcp"]:
        return _check_server(argv[1:], env)
    model = "black-forest-labs/flux-pro"
    if "--model" in argv:
        model = argv[argv.index("--model") + 1]
    parser, _ = build_parser(argv[0] if argv else "", model)
    return _parses(lambda: parser.parse_args(argv))


def _check_server(argv: list[str], env: dict[str, str]) -> list[str]:
    from mcp_server.config import load_config

    values = {"FLUX_API_TOKEN": TOKEN, **env}
    return _parses(lambda: load_config(argv, environ=values))


def _check_uvx(argv: list[str], env: dict[str, str]) -> list[str]:
    problems = []
    words = list(argv)
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in ("--from", "--with") and words:
            problem = _requirement_problem(words.pop(0))
            problems += [problem] if problem else []
    if not words or words[0] not in OUR_COMMANDS:
        return [*problems, f"uvx runs {words[:1]}, not a command of ours"]
    if "--from" not in argv and "--with" not in argv:
        problems.append("uvx must name our distribution with --from")
    return problems + check(Command({}, words, ""), env)


def _check_paths(argv: list[str]) -> list[str]:
    problems = []
    if "-m" in argv and (module := argv[argv.index("-m") + 1]) and find_spec(module) is None:
        problems.append(f"no module {module}")
    for word in argv:
        looks_like_path = "/" in word and not word.startswith(("-", "http", "/"))
        if looks_like_path and not (ROOT / word).exists():
            problems.append(f"{word} is not in the repository")
    return problems


def _parses(parse: Any) -> list[str]:
    try:
        parse()
    except SystemExit as exit_:
        return [] if exit_.code in (0, None) else [f"refused by its parser (exit {exit_.code})"]
    except ValueError as error:  # ConfigError: a setting that cannot work
        return [f"refused: {error}"]
    return []


def test_shell_blocks_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    problems = []
    for block in blocks_in(SHELL):
        syntax = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
        if syntax.returncode != 0:
            problems.append(f"{block.where}: {syntax.stderr.strip()}")
        exported: dict[str, str] = {}
        for command in commands_of(block.code):
            if command.argv[:1] == ["export"]:
                exported |= dict(a.split("=", 1) for a in command.argv[1:] if "=" in a)
            problems += [f"{block.where}: {command.text}: {p}" for p in check(command, exported)]
    capsys.readouterr()  # the parsers' --help and usage lines
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("flux-tools generate --stpes 30 x", "refused by its parser"),
        ("pip install flux-mcp", "not our distribution"),
        ("pip install 'flux-tools[mpc]'", "no extra ['mpc']"),
        ("uvx flux-tools-mcp", "must name our distribution"),
        ("export FLUX_TOKEN=x", "FLUX_TOKEN is not a variable"),
        ("flux-tools-mcp --transport streamable-http --host 0.0.0.0", "refused"),
        ("python examples/nothing.py", "not in the repository"),
    ],
)
def test_the_shell_check_catches(line: str, problem: str) -> None:
    (command,) = commands_of(line)
    assert any(problem in p for p in check(command, {})), check(command, {})


def test_json_and_yaml_blocks_parse() -> None:
    problems = []
    for block in blocks_in(JSON | YAML):
        try:
            json.loads(block.code) if block.lang in JSON else yaml.safe_load(block.code)
        except (ValueError, yaml.YAMLError) as error:
            problems.append(f"{block.where}: {error}")
    assert not problems, "\n".join(problems)


def test_the_installed_commands_are_found() -> None:
    assert Path(installed("flux-tools-mcp")).exists()
