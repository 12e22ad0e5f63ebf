"""Every example and the demo run, so none of them rots.

(``examples/langchain_agent.py`` and ``examples/mcp_client.py`` run in their own suites; the code
blocks of the README and the documentation run in ``tests/docs/test_code_blocks.py``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

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
