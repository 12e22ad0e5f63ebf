"""Shared fixtures: an emulator on a free loopback port, and clients of both kinds."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_tools import AsyncFluxClient, FluxClient
from flux_tools.emulator import Emulator

from .hostile import HostileGateway

FAST = {"latency": 0.3, "queue_time": 0.05}

#: Tests that take seconds by design, whatever the machine (a browser, a process killed and
#: restarted, a burst against the account's rate limits, a Retry-After waited out, node clients):
#: marked ``slow``, so the inner loop (``pytest -m "not slow"``) skips them. Listed here, in one
#: place, from ``pytest --durations``; a test id prefix marks every test it starts.
SLOW = (
    "tests/cli/test_batch_cli.py::test_ctrl_c_cancels_what_runs_and_the_rerun_finishes",
    "tests/cli/test_batch_cli.py::test_killed_halfway_then_rerun_pays_each_row_once",
    "tests/cli/test_batch_money.py::test_reads_throttled_during_a_rerun_create_nothing_twice",
    "tests/cli/test_cli_recovery.py::test_a_generate_killed_mid_generation_is_saved_by_resume",
    "tests/cli/test_examples.py::test_demo",
    "tests/client/test_client.py::test_gateway_mode_polls_less_than_a_fixed_half_second",
    "tests/client/test_hostile_gateway.py::test_throttled_polls_do_not_abandon_the_prediction",
    "tests/client/test_rate_limits.py::test_a_burst_stays_within_the_enforced_limits",
    "tests/mcp/test_app_viewer.py::test_a_generation_outlasting_the_wait",
    "tests/mcp/test_app_viewer.py::test_a_prediction_opened_by_id",
    "tests/mcp/test_app_viewer.py::test_the_viewer_in_a_real_browser",
    "tests/mcp/test_app_viewer.py::test_without_previews_the_viewer_reads",
    "tests/mcp/test_mcp_config.py::test_the_offline_example_runs",
    "tests/mcp/test_mcp_hostile.py::test_a_create_throttled_for_long",
    "tests/mcp/test_mcp_recovery.py::test_a_server_killed_mid_generation",
    "tests/mcp/test_real_clients_js.py::",
    "tests/oauth/test_links.py::test_signed_links_open_one_persons_image_until_they_expire",
    "tests/oauth/test_people.py::test_a_persons_prediction_outlives_a_killed_server",
    "tests/oauth/test_people_replicas.py::",
    "tests/oauth/test_spending.py::test_one_persons_loop_does_not_starve_anothers_call",
    "tests/packaging/",
    "tests/replicas/test_replicas.py::",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
    # The long ones first: pytest-xdist hands tests out in this order, so none of them starts
    # last and keeps one worker busy while the others are done (the same order on every worker).
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW))


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test learns durations in a cache of its own (``FLUX_CACHE_DIR``, passed on to the
    servers the tests start): nothing leaks between tests, nor into the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("flux-cache")
    monkeypatch.setenv("FLUX_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with any options; all are stopped at the end of the test."""
    started: list[Emulator] = []

    def make(**options: Any) -> Emulator:
        emulator = Emulator(**{**FAST, **options}).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()


@pytest.fixture
def hostile() -> Iterator[HostileGateway]:
    """A hostile fake gateway (tests/hostile.py), behaving until the test scripts it."""
    gateway = HostileGateway().start()
    yield gateway
    gateway.stop()


class Flux:
    """Calls the same method on a FluxClient (in a worker thread) or an AsyncFluxClient.

    Every scenario written against it runs through both clients: that is the parity test of
    behaviour (``test_parity.py`` checks the signatures).
    """

    def __init__(self, kind: str, client: FluxClient | AsyncFluxClient) -> None:
        self.kind = kind
        self.client = client

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.client, method)
        if self.kind == "sync":
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        return await fn(*args, **kwargs)

    async def save(self, result: Any, directory: Any, **kwargs: Any) -> Any:
        """Saving goes through the client (a result holds no connection)."""
        return await self("save", result, directory, **kwargs)


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_flux(client_kind: str) -> AsyncIterator[Callable[..., Flux]]:
    """Build a client of the parametrized kind against an emulator (or any base URL)."""
    clients: list[FluxClient | AsyncFluxClient] = []

    def make(emulator: Emulator | None = None, **options: Any) -> Flux:
        if emulator is not None:
            options.setdefault("base_url", emulator.base_url)
        options.setdefault("api_token", "test-token")
        cls = FluxClient if client_kind == "sync" else AsyncFluxClient
        client = cls(**options)
        clients.append(client)
        return Flux(client_kind, client)

    yield make
    for client in clients:
        if isinstance(client, AsyncFluxClient):
            await client.aclose()
        else:
            client.close()


@pytest.fixture
def flux(make_flux: Callable[..., Flux], emulator: Emulator) -> Flux:
    return make_flux(emulator)


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Runs a LangChain tool through ``invoke`` (its ``_run``) or ``ainvoke`` (its ``_arun``)."""

    async def run(tool: Any, value: Any, **kwargs: Any) -> Any:
        if request.param == "sync":
            return await asyncio.to_thread(tool.invoke, value, **kwargs)
        return await tool.ainvoke(value, **kwargs)

    return run


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The working folder of a server subprocess: clients start servers from arbitrary
    folders, never the project's."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


@pytest.fixture
def errlog(tmp_path: Path) -> Path:
    """Where a server subprocess's stderr goes (stdout is the MCP protocol)."""
    return tmp_path / "server-stderr.log"


def requests_to(emulator: Emulator, kind: str) -> list[Any]:
    """The recorded requests of one kind: create, get (of a prediction: a poll), cancel, file,
    or the rest of the API: list (of predictions), model (models and versions), account,
    stream (server-sent events), web (a prediction's page)."""

    def kind_of(r: Any) -> str:
        if r.path.startswith("/files/"):
            return "file"
        if r.method == "POST" and r.path.endswith("/cancel"):
            return "cancel"
        if r.method == "POST":
            return "create"
        if "/files/stream/" in r.path:
            return "stream"
        if r.path.startswith("/p/"):
            return "web"
        if r.path.endswith("/predictions"):
            return "list"
        if "/models" in r.path:
            return "model"
        if r.path.endswith("/account"):
            return "account"
        return "get"

    return [r for r in emulator.stats.requests if kind_of(r) == kind]
