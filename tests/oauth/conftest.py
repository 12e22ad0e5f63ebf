"""Fixtures of the OAuth tests: node with the authorization server's packages, a test CA, one
authorization server for the session, and the MCP server configured to accept its tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flux_tools.emulator import Emulator

from ..mcp.mcp_helpers import ServerProcess, free_port
from .oauth_helpers import (
    OAUTH_DIR,
    AuthServer,
    auth_server,
    find_node,
    install_node_packages,
    oauth_env,
    serve_mcp,
)


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with tests/oauth (oidc-provider) and tests/js (the TypeScript SDK)
    installed from their lock files."""
    found = find_node()
    if found is None:
        pytest.skip("node and npm are needed for the OAuth tests' authorization server")
    problem = install_node_packages(OAUTH_DIR, OAUTH_DIR.parent / "js")
    if problem is not None:
        pytest.skip(problem)
    return found


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A CA of the tests (trustme): it signs the https servers of client metadata documents,
    and the authorization server trusts it."""
    import trustme

    ca = trustme.CA(organization_name="flux-tools OAuth test CA")
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture(scope="session")
def issuer(
    node: str, test_ca: tuple[object, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthServer]:
    """The team's authorization server, for the whole session (its keys never change)."""
    with auth_server(node, tmp_path_factory.mktemp("issuer"), ca_file=test_ca[1]) as server:
        yield server


@pytest.fixture
def public_url() -> str:
    """The MCP endpoint's URL as clients reach it (here the server itself, on loopback)."""
    return f"http://127.0.0.1:{free_port()}/mcp"


@dataclass
class Served:
    """An MCP server accepting the issuer's tokens, and where it is."""

    process: ServerProcess
    url: str
    issuer: AuthServer

    @property
    def stderr(self) -> str:
        return self.process.stderr


@pytest.fixture
def served(
    issuer: AuthServer, emulator: Emulator, tmp_path: Path, workdir: Path, public_url: str
) -> Iterator[Served]:
    env = oauth_env(emulator, tmp_path, issuer.issuer, public_url)
    with serve_mcp(env, workdir, public_url) as process:
        yield Served(process, public_url, issuer)
