"""Every third-party module the package imports is a declared dependency of what needs it.

Read from the source with :mod:`ast` (no import, no venv): the core may import only
``[project].dependencies``; each front end also what its extra declares. Lazy imports (inside
functions) count as much as top-level ones: they run too. A module that imports something
undeclared works in the clone (where everything is installed) and crashes for a user who installed
the wheel, as ``flux_tools/_client.py`` did with ``sniffio``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "flux-tools"

#: Which extra each part of the package needs, by path prefix (the longest prefix wins); None is
#: the core (``[project].dependencies`` only). Everything under ``flux_tools/_`` is core, so the
#: layer folders (``_base``, ``_domain``, ``_settings``, ``_protocol``, ``_drivers``) need no
#: entry of their own. Update this table when a front end moves or a new one appears.
MODULE_EXTRAS: dict[str, str | None] = {
    "flux_tools/_": None,
    "flux_tools/__init__": None,
    "flux_tools/__main__": None,
    "flux_tools/kit": None,
    "flux_tools/cli": None,  # the CLI needs no extra (its emulator and demo commands import them)
    "flux_tools/py.typed": None,
    "flux_tools/langchain": "langchain",
    "flux_tools/emulator": "emulator",
    "flux_tools/demo": "all",
    "mcp_server": "mcp",
    "mcp_server/objects": "server",
}
#: Distributions the core may import lazily, inside a function that fails with a clear message
#: naming the extra, mapped to the extras that bring them: the previews are made by the core
#: (``flux_tools.make_preview``) for the ``preview`` extra and for the MCP server.
LAZY_IN_CORE: dict[str, tuple[str, ...]] = {"pillow": ("preview", "mcp"), "redis": ("server",)}
#: The package's own top-level modules.
FIRST_PARTY = {"flux_tools", "mcp_server"}


@dataclass(frozen=True)
class Import:
    module: str  # e.g. "PIL.Image"
    line: int
    lazy: bool  # inside a function body

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.AST, lazy: bool = False) -> Iterator[Import]:
    """The absolute imports a module runs (those under ``if TYPE_CHECKING:`` never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from imports_of(ast.Module(body=[child], type_ignores=[]), lazy)
            continue
        if isinstance(node, ast.Import):
            yield from (Import(alias.name, node.lineno, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield Import(node.module, node.lineno, lazy)
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from imports_of(node, inner)


def modules() -> list[Path]:
    return sorted(p for root in FIRST_PARTY for p in (ROOT / root).rglob("*.py"))


def extra_of(path: Path) -> str | None:
    relative = path.relative_to(ROOT).as_posix()
    prefixes = [prefix for prefix in MODULE_EXTRAS if relative.startswith(prefix)]
    assert prefixes, f"{relative} is in no group of MODULE_EXTRAS: add its prefix to the table"
    return MODULE_EXTRAS[max(prefixes, key=len)]


@cache
def project() -> dict[str, object]:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(table, dict)
    return table


def requirements(extra: str | None) -> set[str]:
    """The distributions the core (None) or the core plus an extra installs, by name."""
    optional = project()["optional-dependencies"]
    assert isinstance(optional, dict)
    texts = list(project()["dependencies"])  # type: ignore[call-overload]
    pending, seen = [extra] if extra else [], set()
    while pending:
        name = pending.pop()
        seen.add(name)
        for text in optional[name]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == DISTRIBUTION:  # flux-tools[a,b]
                pending += sorted(requirement.extras - seen)
            else:
                texts.append(text)
    return {canonicalize_name(Requirement(text).name) for text in texts}


@cache
def installed() -> dict[str, list[str]]:
    return dict(packages_distributions())


def distributions_of(top: str) -> set[str]:
    """The installed distributions providing a top-level module: ``PIL`` is ``pillow``."""
    found = installed().get(top)
    assert found, (
        f"no installed distribution provides {top!r}: install the dev extra (./scripts/setup)"
    )
    return {canonicalize_name(name) for name in found}


def third_party(path: Path) -> Iterator[tuple[Import, set[str]]]:
    for found in imports_of(ast.parse(path.read_text(), str(path))):
        if found.top in sys.stdlib_module_names or found.top in FIRST_PARTY:
            continue
        yield found, distributions_of(found.top)


def test_every_module_is_in_a_group() -> None:
    for path in modules():
        extra_of(path)  # raises, naming the module, when the table misses it


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_are_declared(path: Path) -> None:
    extra = extra_of(path)
    declared = requirements(extra)
    where = f"the {extra!r} extra" if extra else "[project].dependencies (the core)"
    problems = []
    for found, dists in third_party(path):
        if dists & declared:
            continue
        lazy_ok = [e for e in LAZY_IN_CORE.get(min(dists), ()) if dists & requirements(e)]
        if extra is None and found.lazy and lazy_ok:
            continue  # a core module's lazy import of an optional dependency, see LAZY_IN_CORE
        problems.append(
            f"{path.relative_to(ROOT)}:{found.line} imports {found.module} "
            f"(distribution {', '.join(sorted(dists))}), not declared in {where}"
        )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("extra", ["emulator", "preview", "langchain", "mcp"])
def test_extras_declare_no_more(extra: str) -> None:
    """An extra brings what its front end imports and no more: each distribution it names is
    imported by a module of that front end (or lazily by the core for it, LAZY_IN_CORE)."""
    used = {dist for dist, extras in LAZY_IN_CORE.items() if extra in extras}
    for path in modules():
        if extra_of(path) == extra:
            used |= {d for _, dists in third_party(path) for d in dists}
    unused = requirements(extra) - requirements(None) - used
    assert not unused, f"the {extra!r} extra names {sorted(unused)}, which nothing of it imports"


def test_the_check_catches_an_undeclared_import(tmp_path: Path) -> None:
    """What the check runs on: a core module importing sniffio (as _client.py once did) and a
    lazy one importing PIL at module level are both reported."""
    source = "import sniffio\nfrom PIL import Image\n\ndef f():\n    import trustme\n"
    found = {(i.module, i.lazy) for i in imports_of(ast.parse(source))}
    assert found == {("sniffio", False), ("PIL", False), ("trustme", True)}
    assert "sniffio" not in requirements(None)
    assert not {"pillow", "trustme"} & requirements(None)
