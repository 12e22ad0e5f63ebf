"""The documentation says what the code does: the reference (settings, errors, command line,
Python API) and the development map, each checked against the code, so that neither can drift
without a failing test. The pages are in ``docs/`` (the site, ``mkdocs.yml``).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

import flux_tools
import flux_tools.kit

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    """The section under ``## title`` of a page, to the next ``## ``."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _documented_variables() -> set[str]:
    rows = re.findall(
        r"^\| `([A-Z0-9_]+)`(?:, `([A-Z0-9_, `]+)`)? \|", page("reference/settings.md"), re.M
    )
    names: set[str] = set()
    for first, rest in rows:
        names.add(first)
        names.update(re.findall(r"[A-Z0-9_]+", rest))
    return names


def _variables_read(paths: list[Path]) -> set[str]:
    """Every FLUX_* / REPLICATE_* string literal in the sources that read the environment."""
    found: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and re.fullmatch(r"(FLUX|REPLICATE)_[A-Z0-9_]+", value):
                found.add(value)
    return found


def test_the_configuration_table_lists_exactly_the_settings() -> None:
    documented = _documented_variables()
    declared = {var.name for var in flux_tools.ENVIRONMENT}
    config = pytest.importorskip("mcp_server.config")
    declared |= {var.name for var in getattr(config, "ENVIRONMENT", ())}
    assert declared - documented == set(), "declared but not in docs/reference/settings.md"
    assert documented - declared == set(), "in docs/reference/settings.md but declared nowhere"


def test_every_variable_the_code_reads_is_declared() -> None:
    config = pytest.importorskip("mcp_server.config")
    declared = {var.name for var in flux_tools.ENVIRONMENT}
    declared |= {var.name for var in getattr(config, "ENVIRONMENT", ())}
    sources = [
        *sorted((ROOT / "flux_tools").rglob("*.py")),
        *sorted((ROOT / "mcp_server").rglob("*.py")),
    ]
    read = _variables_read(sources)
    assert read - declared == set()


def test_the_errors_reference_draws_the_exception_tree_of_the_code() -> None:
    tree = re.search(r"```text\n(FluxError.*?)```", page("reference/errors.md"), re.S)
    assert tree, "docs/reference/errors.md shows the exception tree"
    drawn = set(
        re.findall(
            r"\b([A-Z][A-Za-z]+(?:Error|Failed|Moderated|Timeout|Exceeded))\b", tree.group(1)
        )
    )
    exported = {
        name
        for name in flux_tools.__all__
        if isinstance(getattr(flux_tools, name), type)
        and issubclass(getattr(flux_tools, name), flux_tools.FluxError)
    }
    assert drawn - {"ValueError"} == exported
    for name in exported:
        cls = getattr(flux_tools, name)
        parent = cls.__mro__[1].__name__
        if name != "FluxError":
            assert re.search(rf"{parent}[\s\S]*{name}", tree.group(1)), (name, parent)


def test_the_development_map_names_every_module() -> None:
    """Every module of the core's layers and front ends, and every layer folder, is on the map."""
    section = _section(page("development.md"), "The layers")
    trivial = ("__init__.py", "__main__.py", "_version.py")
    package = ROOT / "flux_tools"
    layers = [p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    modules = [p for p in package.glob("*.py") if p.name not in trivial]
    modules += [p for layer in layers if layer.name != "emulator" for p in layer.glob("*.py")]
    modules += [p for p in (ROOT / "mcp_server").glob("*.py") if p.name not in trivial]
    missing = [str(p.relative_to(ROOT)) for p in modules if p.name not in trivial]
    missing = [m for m in missing if Path(m).name not in section]
    missing += [f"{layer.name}/" for layer in layers if f"{layer.name}/" not in section]
    assert missing == []


# -- the Python API: every public name, and nothing else --------------------------------------


def _names_in_table(section: str) -> list[str]:
    return re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", section, re.M)


@pytest.mark.parametrize("module", [flux_tools, flux_tools.kit], ids=lambda m: m.__name__)
def test_the_api_reference_lists_exactly_the_public_names(module: object) -> None:
    name = getattr(module, "__name__", "")
    listed = _names_in_table(_section(page("reference/api.md"), name))
    exported = set(getattr(module, "__all__", ()))
    assert len(listed) == len(set(listed)), "a name listed twice"
    assert exported - set(listed) == set(), f"in {name}.__all__ but not in the reference"
    assert set(listed) - exported == set(), f"in the reference but not in {name}.__all__"


# -- the command line: every option of every command, and nothing else --------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """``flux-tools SUB`` → its parser (with the default model's input flags), the emulator's and
    the MCP server's parsers."""
    from flux_tools.cli import build_parser
    from flux_tools.emulator.__main__ import _parser as emulator_parser

    config = pytest.importorskip("mcp_server.config")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for command in ("generate", "edit", "batch", "resume", "demo"):
        model = flux_tools.DEFAULT_EDIT_MODEL if command == "edit" else flux_tools.DEFAULT_MODEL
        parser, _ = build_parser(command, model)
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parsers[f"flux-tools {command}"] = action.choices[command]
    parsers["flux-tools emulator"] = emulator_parser("flux-tools emulator")
    parsers["flux-mcp"] = config._parser()
    return parsers


def _input_flags(command: str) -> set[str]:
    """The flags derived from the model's input fields (documented as a rule, not one by one)."""
    if command not in ("flux-tools generate", "flux-tools edit"):
        return set()
    from flux_tools.cli import add_input_flags

    parser = argparse.ArgumentParser()
    model = flux_tools.DEFAULT_EDIT_MODEL if command.endswith("edit") else flux_tools.DEFAULT_MODEL
    add_input_flags(parser, flux_tools.MODELS[model].input_model.model_json_schema())
    return {o for action in parser._actions for o in action.option_strings} - {"-h", "--help"}


def test_the_cli_reference_lists_every_option_of_every_command() -> None:
    text = page("reference/cli.md")
    commands = _subcommands()
    documented = set(re.findall(r"^## (flux-[\w -]+)$", text, re.M))
    assert documented == set(commands), "a section per command"
    for command, parser in commands.items():
        section = _section(text, command)
        listed = set(re.findall(r"^\| `(--?[\w-]+)` \|", section, re.M))
        options = {o for action in parser._actions for o in action.option_strings}
        expected = options - {"-h", "--help"} - _input_flags(command)
        # An input field's short alias (--format for --output-format) comes with the fields.
        expected -= {"--format"}
        assert expected - listed == set(), f"{command}: options missing from the reference"
        assert listed - options == set(), f"{command}: options in the reference it does not take"
