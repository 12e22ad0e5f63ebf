"""Fixtures of the conformance suite: emulators as the official clients meet them.

Most tests run in HTTPS mode, as production does: both official clients wrap only ``https:``
(and ``data:``) outputs in ``FileOutput``. The Python client is given the emulator's origin
(it adds ``/v1`` itself), the npm client its ``/v1`` base.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_tools.emulator import Emulator

from ..nodejs import npm_ci

JS_DIR = Path(__file__).parent / "js"
#: Short runs keep the suite quick; a test that needs a longer one asks for it in its prompt.
FAST: dict[str, Any] = {"latency": 0.2, "queue_time": 0.05, "image_scale": 0.125}

Factory = Callable[..., Emulator]


@pytest.fixture
def make_emulator() -> Iterator[Factory]:
    started: list[Emulator] = []

    def make(**options: Any) -> Emulator:
        emulator = Emulator(**{**FAST, **options}).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture(scope="module")
def https_emulator() -> Iterator[Emulator]:
    """One HTTPS emulator for a module's tests that need nothing special of it."""
    with Emulator(**FAST, https=True) as emulator:
        yield emulator


def _js_skip_reason() -> str | None:
    if not shutil.which("node") or not shutil.which("npm"):
        return "node and npm are needed for the npm replicate client (tests/conformance/js)"
    return None


@pytest.fixture(scope="session")
def js_client() -> Path:
    """tests/conformance/js with the npm client installed from its lock file (npm ci, once)."""
    reason = _js_skip_reason()
    if reason:
        pytest.skip(reason)
    npm_ci(JS_DIR)
    return JS_DIR


RunJS = Callable[..., dict[str, Any]]


@pytest.fixture
def run_js(js_client: Path) -> RunJS:
    """Run one scenario of conformance.mjs against an emulator; its JSON outcome."""

    def run(
        scenario: str, emulator: Emulator, *, token: bool = True, **extra_env: str
    ) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
        env.update(emulator.client_env())
        env["FLUX_EMULATOR_BASE"] = emulator.base_url
        env.update(extra_env)
        if not token:
            env.pop("REPLICATE_API_TOKEN")
        done = subprocess.run(
            ["node", "conformance.mjs", scenario],
            cwd=js_client,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    return run
