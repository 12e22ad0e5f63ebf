"""One Valkey and one SeaweedFS per test session (per xdist worker), started by the tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ..engines import Seaweed, Valkey, seaweed, valkey


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    with valkey(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    with seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """An account of its own in the shared Valkey: tests never see each other's keys."""
    return uuid.uuid4().hex[:12]
