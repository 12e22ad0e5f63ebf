"""The documentation site builds with ``--strict``, and the README is its landing page.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the nav and any
other warning. The README stays a landing page (under 12 KB) whose first block is the two
quick-start commands CI checks, and every link of it into ``docs/`` reaches a page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .blocks import DOCS, README, ROOT, blocks_of

README_MAX_BYTES = 12 * 1024


def test_the_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice of its successor
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    site = tmp_path / "site"
    # Every page was built, and the search index holds them all.
    pages = sorted(DOCS.rglob("*.md"))
    assert pages and len(pages) >= 20
    for page in pages:
        relative = page.relative_to(DOCS).with_suffix("")
        built = (
            site / relative / "index.html"
            if relative.name != "index"
            else (site / relative.parent / "index.html")
        )
        assert built.exists(), built
    index = json.loads((site / "search" / "search_index.json").read_text())
    assert len({doc["location"].split("#")[0] for doc in index["docs"]}) >= len(pages)
    assert (site / "viewer.png").exists()


def test_the_readme_is_a_landing_page() -> None:
    size = README.stat().st_size
    assert size < README_MAX_BYTES, f"README.md is {size} bytes: move the details to docs/"


def test_the_readme_starts_with_the_two_commands() -> None:
    """The first fenced block is exactly the quick start (a CI hook checks it too)."""
    first = blocks_of(README)[0]
    assert first.code == "./scripts/demo\n./scripts/test\n"


def test_the_readme_links_reach_docs_pages() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 15
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing
    # The landing page names the three uses and the uvx one-liner with our distribution.
    assert "uvx --from 'flux-tools[mcp]' flux-tools-mcp" in text
    assert "from flux_tools import FluxClient" in text
    assert "from flux_tools.langchain import" in text
