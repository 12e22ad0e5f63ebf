"""The layers hold: what import-linter cannot see (function-level imports, reading the
environment) is checked here; the import contracts themselves run as ``lint-imports`` (see
``[tool.importlinter]`` in pyproject.toml), and once more below so that pytest alone catches them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flux_tools", "mcp_server")

#: Function-level imports of a project module, each for a reason: an optional dependency
#: (an extra) that must not be imported with the module that names it.
ALLOWED_LATE_IMPORTS = {
    # `flux-tools emulator` needs the emulator extra (pillow, trustme).
    ("flux_tools/cli/__init__.py", "flux_tools.emulator.__main__"),
    # `flux-tools demo` needs the mcp and langchain extras.
    ("flux_tools/cli/__init__.py", "flux_tools.demo"),
    # The demo drives the LangChain tools after the MCP server: langchain-core is optional.
    ("flux_tools/demo.py", ".langchain"),
    # The server's app imports the mcp SDK: `flux-mcp --help` works without it.
    ("mcp_server/__init__.py", ".app"),
}


def sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def late_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Imports of project modules inside a function body: ``(line, module)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                if node.level or module.startswith(PACKAGES):
                    yield node.lineno, module
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PACKAGES):
                        yield node.lineno, alias.name


def test_no_function_level_import_of_a_project_module_outside_the_allowlist() -> None:
    found = {
        (str(path.relative_to(ROOT)), module, line)
        for path in sources()
        for line, module in late_imports(path)
    }
    unexpected = sorted(f for f in found if (f[0], f[1]) not in ALLOWED_LATE_IMPORTS)
    assert unexpected == [], "a late import hides a cycle: import at the top, or fix the layers"
    stale = ALLOWED_LATE_IMPORTS - {(f[0], f[1]) for f in found}
    assert stale == set(), "the allowlist names imports that are gone"


def test_the_environment_is_read_in_one_place() -> None:
    """``os.environ`` and ``os.getenv`` appear only in ``_settings/environment.py``."""
    readers = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                for alias in node.names:
                    if alias.name in ("environ", "getenv", "environb"):
                        readers.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name}")
    assert all(r.startswith("flux_tools/_settings/environment.py:") for r in readers), readers
    assert readers, "the one reader is found (this test can see it)"


def absolute(path: Path, node: ast.ImportFrom) -> str:
    """The module an import names, relative imports resolved from the file's package."""
    if not node.level:
        return node.module or ""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[:-1]  # a module's package; an __init__'s package is its own folder
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def test_front_ends_import_no_private_module() -> None:
    """The CLI, the LangChain tools, the demo and the MCP server use ``flux_tools`` and
    ``flux_tools.kit`` only."""
    front = [
        *sorted((ROOT / "flux_tools" / "cli").rglob("*.py")),
        ROOT / "flux_tools" / "langchain.py",
        ROOT / "flux_tools" / "demo.py",
        *sorted((ROOT / "mcp_server").rglob("*.py")),
    ]
    private = []
    for path in front:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom):
                modules = [absolute(path, node)]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            private += [
                f"{path.relative_to(ROOT)}: {m}" for m in modules if m.startswith("flux_tools._")
            ]
    assert private == []


LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")
def test_the_import_contracts_hold() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:]
