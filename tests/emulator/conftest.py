"""Fixtures of the emulator's own tests: emulators with small, fast images, and a raw client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from flux_tools.emulator import Emulator

#: Any bearer token is accepted unless the emulator pins one; none at all is a 401.
AUTH = {"Authorization": "Bearer test-token"}
CREATE = "/models/black-forest-labs/flux-pro/predictions"
#: A test module may set its own ``EMULATOR_DEFAULTS``.
DEFAULTS = {"latency": 0.1, "queue_time": 0.05, "image_scale": 0.25}

Factory = Callable[..., Emulator]


@pytest.fixture
def make(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Start emulators (the module's defaults, then the options given); all stop at the end."""
    started: list[Emulator] = []
    defaults = getattr(request.module, "EMULATOR_DEFAULTS", DEFAULTS)

    def factory(**options: Any) -> Emulator:
        emulator = Emulator(**{**defaults, **options}).start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(make: Factory) -> Emulator:
    return make()


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emu.base_url, headers=AUTH, timeout=20) as c:
        yield c
