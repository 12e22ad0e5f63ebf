"""The README says what the code does: its configuration table, its exception tree, its map.

Documentation checked against the code, so that neither can drift without a failing test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import flux_tools

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _documented_variables() -> set[str]:
    rows = re.findall(
        r"^\| `([A-Z0-9_]+)`(?:, `([A-Z0-9_, `]+)`)? \|", _section("Configuration"), re.M
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
    assert declared - documented == set(), "declared but not in the README's table"
    assert documented - declared == set(), "in the README's table but declared nowhere"


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


def test_the_readme_draws_the_exception_tree_of_the_code() -> None:
    tree = re.search(r"```\n(FluxError.*?)```", README, re.S)
    assert tree, "the README shows the exception tree"
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
    section = _section("Development")
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
