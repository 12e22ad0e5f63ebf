"""The npm packages of the node-based tests, installed once from their lock files.

Each folder under ``tests/`` with a ``package-lock.json`` (the TypeScript SDK client, the browser
host, the official JS client, ...) is installed with ``npm ci`` by :func:`npm_ci`: at most once
per lock file's content, under a file lock so that pytest-xdist workers asking together wait for
one install instead of racing each other's (a half-installed ``node_modules`` with a stamp
claiming otherwise was seen), and checked afterwards: a package the lock names must be there.
``./scripts/setup`` calls the same installs ahead of the tests (``python -m tests.nodejs``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def node_missing() -> str | None:
    """Why node tests cannot run here, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are needed (not on PATH)"
    return None


def _installed(folder: Path, stamp: Path) -> bool:
    if not stamp.is_file():
        return False
    packages = json.loads((folder / "package-lock.json").read_text())["packages"]
    # Every top-level dependency the lock names is on disk (not just the stamp); optional ones
    # (another platform's binaries) may be absent.
    wanted = [
        name
        for name, info in packages.items()
        if name.count("node_modules/") == 1 and not info.get("optional")
    ]
    return all((folder / name / "package.json").is_file() for name in wanted)


def npm_ci(folder: Path, *, timeout: float = 600) -> None:
    """``npm ci`` in ``folder`` unless its lock file is already installed. Raises
    :class:`RuntimeError` with npm's output when the install fails."""
    lock = folder / "package-lock.json"
    digest = hashlib.sha1(lock.read_bytes()).hexdigest()[:12]
    stamp = folder / "node_modules" / f".installed-{digest}"
    if _installed(folder, stamp):
        return
    with open(folder / ".npm-install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released when the file closes
        if _installed(folder, stamp):  # another worker did it meanwhile
            return
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm ci in {folder} failed:\n{done.stdout}\n{done.stderr}")
        stamp.touch()
        if not _installed(folder, stamp):
            raise RuntimeError(f"npm ci in {folder} left packages of the lock file missing")


def lock_folders() -> list[Path]:
    """Every test folder with a lock file (node_modules excluded)."""
    return sorted(
        lock.parent for lock in TESTS.rglob("package-lock.json") if "node_modules" not in lock.parts
    )


if __name__ == "__main__":  # ./scripts/setup: install them all ahead of the tests
    if node_missing():
        print(f"skipping the npm installs: {node_missing()}", file=sys.stderr)
        raise SystemExit(0)
    for folder in lock_folders():
        npm_ci(folder)
