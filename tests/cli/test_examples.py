"""Every example, the demo and the README's Python snippets run, so none of them rots.

(``examples/langchain_agent.py`` and ``examples/mcp_client.py`` run in their own suites.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from flux_tools.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**clean, **(env or {})},
    )


def test_quickstart(tmp_path: Path) -> None:
    done = run(str(ROOT / "examples" / "quickstart.py"), "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.split("file: ")[1].strip())
    assert path.parent == tmp_path / "out"
    with Image.open(path) as image:
        assert image.size == (1376, 768)  # 16:9 at about a megapixel


def test_batch(tmp_path: Path) -> None:
    done = run(str(ROOT / "examples" / "batch.py"), "8", "batch", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8/8 images" in done.stdout
    assert len(list((tmp_path / "batch").glob("*.webp"))) == 8


def test_demo(tmp_path: Path) -> None:
    done = run("-m", "flux_tools", "demo", "--out", str(tmp_path / "images"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "tools: generate_image, edit_image" in out
    assert "Done: 3 predictions, 3 images saved" in out
    files = [p for p in (tmp_path / "images").rglob("*.*") if p.is_file()]  # not .flux-journal/
    saved = sorted(files, key=lambda p: (p.parent.name, p.suffix))
    images = [(p.parent.name, p.suffix) for p in saved if p.suffix != ".json"]
    assert images == [("langchain", ".webp"), ("mcp", ".png"), ("mcp", ".webp")]
    assert "claude mcp add" in out and '"mcpServers"' in out


def readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_snippets() -> None:
    assert len(readme_snippets()) >= 4


@pytest.mark.parametrize("index", range(len(readme_snippets())))
def test_readme_snippet_runs(index: int, tmp_path: Path) -> None:
    code = readme_snippets()[index]
    if "await " in code:  # top-level await, as in a notebook: wrap it
        code = "import asyncio\n\nasync def main():\n" + textwrap.indent(code, "    ")
        code += "\nasyncio.run(main())\n"
    script = tmp_path / "snippet.py"
    script.write_text(code)
    # The snippets are written for the real API; here the emulator stands in for it.
    with Emulator(latency=0.2, token="r8_readme-token") as emulator:
        env = {
            "REPLICATE_API_TOKEN": "r8_readme-token",
            "FLUX_BASE_URL": emulator.base_url,
            "FLUX_IMAGE_DIRS": str(tmp_path),
        }
        Image.new("RGB", (300, 200), "red").save(tmp_path / "car.png")
        # The batch snippet's input: two rows, any model field as a column.
        (tmp_path / "products.csv").write_text("prompt,seed\na red mug,1\na blue vase,2\n")
        done = run(str(script), cwd=tmp_path, env=env)
    assert done.returncode == 0, f"snippet {index} failed:\n{code}\n{done.stderr}"
