"""The package as a user gets it: the wheel and sdist built once per session, virtual environments
holding the installed wheel outside the clone, and the uv that installs them.

Everything lives in pytest's temporary folders (nothing is written into the clone, no fixed port):
the tests can run in parallel workers. The virtual environments are made by uv, from its cache,
in about a second each; pip would take ten times longer for the same wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Long enough for a first run that fills the caches (pip's for the build, uv's for installs).
INSTALL_TIMEOUT = 600


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would make the repo or its venv importable."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")
    }
    # uv never downloads an interpreter here: it uses the one running the tests.
    env.update(UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run(
    args: Sequence[str | Path],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert done.returncode == 0, (
            f"{' '.join(map(str, args))} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def uv_binary() -> Path:
    """uv from the dev extra (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = beside if beside.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is missing: ./scripts/setup installs it with the dev extra")
    return Path(found)


@dataclass(frozen=True)
class Dist:
    """The built distributions, and the clean copy of the sources they were built from."""

    wheel: Path
    sdist: Path
    source: Path

    @property
    def folder(self) -> Path:
        return self.wheel.parent


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """``python -m build`` (the sdist, then the wheel from the sdist), once per session.

    It builds a copy of the files git would commit, not the clone itself: nothing is written
    into the clone (setuptools leaves an egg-info beside the sources), parallel workers do not
    race, and a file left out of git is left out here as in CI's fresh clone.
    """
    source = tmp_path_factory.mktemp("source")
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    ).stdout
    for name in filter(None, listed.split("\0")):
        origin = ROOT / name
        if origin.is_file():  # a deleted file is still listed until its deletion is staged
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "build", "--installer", "uv", "--outdir", out, source],
        cwd=source,
        env=clean_env(PATH=f"{uv_binary().parent}{os.pathsep}{os.environ.get('PATH', '')}"),
        timeout=INSTALL_TIMEOUT,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel=wheel, sdist=sdist, source=source)


@dataclass(frozen=True)
class Venv:
    """A virtual environment outside the clone, holding the installed wheel."""

    path: Path
    #: Where its commands run: an empty folder, so that nothing but the venv is importable.
    home: Path

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def python(self) -> Path:
        return self.bin("python")

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, **options: object
    ) -> subprocess.CompletedProcess[str]:
        return run(args, cwd=self.home, env=clean_env(**(env or {})), **options)  # type: ignore[arg-type]

    def distributions(self) -> set[str]:
        code = (
            "import json, importlib.metadata as m; "
            "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))"
        )
        names = json.loads(self.run(self.python, "-c", code).stdout)
        return {str(name).replace("_", "-") for name in names}


def make_venv(where: Path, dist: Dist, extras: str = "") -> Venv:
    uv = uv_binary()
    path, home = where / "venv", where / "home"
    home.mkdir()
    run([uv, "venv", "--quiet", "--python", sys.executable, path], cwd=home)
    requirement = f"{dist.wheel}[{extras}]" if extras else str(dist.wheel)
    run(
        [uv, "pip", "install", "--quiet", "--python", path / "bin" / "python", requirement],
        cwd=home,
        timeout=INSTALL_TIMEOUT,
    )
    return Venv(path, home)


@pytest.fixture(scope="session")
def core_venv(tmp_path_factory: pytest.TempPathFactory, dist: Dist) -> Venv:
    """``pip install flux-tools``: the core alone."""
    return make_venv(tmp_path_factory.mktemp("core"), dist)


@pytest.fixture(scope="session")
def full_venv(tmp_path_factory: pytest.TempPathFactory, dist: Dist) -> Venv:
    """``pip install 'flux-tools[all]'``: every front end."""
    return make_venv(tmp_path_factory.mktemp("all"), dist, "all")
