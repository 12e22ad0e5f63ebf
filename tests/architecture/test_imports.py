"""``import flux_tools`` stays light: extras are imported only by the front ends that need them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("PIL", "mcp", "langchain_core", "langchain", "uvicorn", "starlette")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize("statement", ["import flux_tools", "import flux_tools.emulator"])
def test_core_imports_no_extra(statement: str) -> None:
    loaded = loaded_after(statement)
    assert "flux_tools" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_public_names_are_exported() -> None:
    import flux_tools

    assert set(flux_tools.__all__) <= set(dir(flux_tools))
    for name in ("FluxClient", "AsyncFluxClient", "FluxProInput", "GenerationResult", "Prediction",
                 "FluxError", "FluxAPIError", "PredictionFailed", "ContentModerated",
                 "PredictionTimeout"):  # fmt: skip
        assert name in flux_tools.__all__
    assert issubclass(flux_tools.ContentModerated, flux_tools.PredictionFailed)
    assert all(
        issubclass(getattr(flux_tools, name), flux_tools.FluxError)
        for name in flux_tools.__all__
        if name.endswith(("Error", "Failed", "Moderated", "Timeout"))
    )


def test_importing_compiles_no_input_model() -> None:
    """The input classes are compiled from their snapshots on first use, not at import."""
    code = (
        "import flux_tools, flux_tools._domain.registry as r; n = len(r._COMPILED); "
        "flux_tools.FluxProInput; print(n, len(r._COMPILED))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "1"]


def test_front_ends_import_only_the_public_api() -> None:
    """``mcp_server`` and ``flux_tools.langchain`` are thin adapters over ``flux_tools``'s
    public names: no ``flux_tools._private`` module is imported by them."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [root / "flux_tools" / "langchain.py", *sorted((root / "mcp_server").rglob("*.py"))]
    private = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                if path.name == "langchain.py" and node.level == 1:
                    base = "flux_tools." + (node.module or "")
                names = [base]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            private += [f"{path.name}: {n}" for n in names if n.startswith("flux_tools._")]
    assert private == []
