"""The issuer's keys: discovered, rotated, rate limited, and an issuer that is down.

The verifier runs in-process against the real authorization server, with a clock the test moves
(the rate limits are tens of seconds) and its requests counted; the last tests run the server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from flux_tools.emulator import Emulator
from mcp_server.oauth import (
    MIN_REFRESH_INTERVAL,
    RETRY_AFTER_FAILURE,
    IssuerKeys,
    OAuthSettings,
    TokenRefused,
    TokenVerifier,
    discovery_urls,
)

from ..mcp.mcp_helpers import free_port
from .oauth_helpers import (
    SCOPE,
    AuthServer,
    auth_server,
    claims_for,
    craft,
    oauth_env,
    obtain_token,
    serve_mcp,
    signing_keys,
)

RESOURCE = "http://127.0.0.1:9/mcp"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """The verifier's HTTP requests, by path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def client(self, timeout: float = 5.0) -> httpx2.AsyncClient:
        async def note(request: Any) -> None:
            self.paths.append(request.url.path)

        return httpx2.AsyncClient(timeout=timeout, event_hooks={"request": [note]})

    @property
    def jwks(self) -> int:
        return sum(1 for path in self.paths if "well-known" not in path)


def _verifier(issuer: str, clock: Clock, counted: Counted, timeout: float = 5.0) -> TokenVerifier:
    settings = OAuthSettings(issuer=issuer, resource=RESOURCE, scopes=(SCOPE,))
    keys = IssuerKeys(issuer, timeout=timeout, client=lambda: counted.client(timeout), clock=clock)
    return TokenVerifier(settings, keys)


@pytest.fixture
def rotating(node: str, tmp_path: Path) -> Iterator[AuthServer]:
    """An authorization server of this test only: it is restarted with other keys."""
    with auth_server(node, tmp_path / "issuer") as server:
        yield server


def test_discovery_tries_the_well_known_places_in_the_specifications_order() -> None:
    assert discovery_urls("https://sso.example.com/realms/team") == [
        "https://sso.example.com/.well-known/oauth-authorization-server/realms/team",
        "https://sso.example.com/.well-known/openid-configuration/realms/team",
        "https://sso.example.com/realms/team/.well-known/openid-configuration",
    ]
    # Auth0's issuer ends with a slash: no path.
    assert discovery_urls("https://team.eu.auth0.com/") == [
        "https://team.eu.auth0.com/.well-known/oauth-authorization-server",
        "https://team.eu.auth0.com/.well-known/openid-configuration",
    ]


async def test_a_rotated_key_is_fetched_once_the_rate_limit_allows(rotating: AuthServer) -> None:
    clock, counted = Clock(), Counted()
    verifier = _verifier(rotating.issuer, clock, counted)
    try:
        old = await obtain_token(rotating.issuer, RESOURCE, user="alice")
        assert (await verifier.verify(old)).subject == "alice"
        assert counted.jwks == 1
        # The authorization server rotates: a new key signs, the old one is withdrawn.
        rotating.restart(keys=signing_keys("rotated"))
        new = await obtain_token(rotating.issuer, RESOURCE, user="alice")
        # Within the rate limit the unknown key id is not looked up again...
        with pytest.raises(TokenRefused, match="does not publish"):
            await verifier.verify(new)
        assert counted.jwks == 1
        # ...past it, it is, once; the old token's key is gone.
        clock.now += MIN_REFRESH_INTERVAL
        assert (await verifier.verify(new)).subject == "alice"
        assert counted.jwks == 2
        with pytest.raises(TokenRefused, match="does not publish"):
            await verifier.verify(old)
        # Made-up key ids, many at once: at most one fetch per interval.
        clock.now += MIN_REFRESH_INTERVAL
        forged = [
            craft(rotating.private_key(), claims_for(rotating.issuer, RESOURCE), kid=f"k{i}")
            for i in range(20)
        ]
        async with anyio.create_task_group() as tg:
            for token in forged:
                tg.start_soon(_refused, verifier, token)
        assert counted.jwks == 3
    finally:
        await verifier.aclose()


async def _refused(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(TokenRefused):
        await verifier.verify(token)


async def test_an_issuer_that_is_down_gets_503_then_is_asked_again(rotating: AuthServer) -> None:
    clock, counted = Clock(), Counted()
    verifier = _verifier(rotating.issuer, clock, counted)
    token = await obtain_token(rotating.issuer, RESOURCE, user="carol")
    rotating.stop()
    try:
        with pytest.raises(TokenRefused) as down:
            await verifier.verify(token)
        assert down.value.status == 503 and down.value.retry_after == RETRY_AFTER_FAILURE
        assert rotating.issuer in down.value.description
        asked = len(counted.paths)
        # Meanwhile requests are answered at once, without asking.
        with pytest.raises(TokenRefused) as again:
            await verifier.verify(token)
        assert again.value.status == 503 and len(counted.paths) == asked
        rotating.start(rotating.port)
        clock.now += RETRY_AFTER_FAILURE
        assert (await verifier.verify(token)).subject == "carol"
    finally:
        await verifier.aclose()


async def test_an_issuer_that_never_answers_is_bounded() -> None:
    # Accepts connections, never answers: every request is bounded by the fetch timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        issuer = f"http://127.0.0.1:{silent.getsockname()[1]}"
        verifier = _verifier(issuer, Clock(), Counted(), timeout=0.3)
        started = time.monotonic()
        try:
            with pytest.raises(TokenRefused) as refused:
                await verifier.verify(
                    craft(signing_keys()["keys"][0], claims_for(issuer, RESOURCE))
                )
        finally:
            await verifier.aclose()
    assert refused.value.status == 503
    assert time.monotonic() - started < 4 * 0.3 + 1


async def test_an_issuer_configured_otherwise_than_it_names_itself(issuer: AuthServer) -> None:
    verifier = _verifier(issuer.issuer + "/", Clock(), Counted())
    try:
        with pytest.raises(TokenRefused) as refused:
            await verifier.keys.refresh(why="test")
    finally:
        await verifier.aclose()
    assert refused.value.status == 503
    assert f"names the issuer '{issuer.issuer}'" in refused.value.description
    assert "FLUX_MCP_OAUTH_ISSUER" in refused.value.description


@pytest.mark.mcp
def test_the_server_starts_and_serves_while_the_issuer_is_down(
    emulator: Emulator, tmp_path: Path, workdir: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    public_url = f"http://127.0.0.1:{free_port()}/mcp"
    env = oauth_env(emulator, tmp_path, down, public_url)
    token = craft(signing_keys()["keys"][0], claims_for(down, public_url))
    with serve_mcp(env, workdir, public_url) as process:
        metadata = httpx2.get(
            public_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"), timeout=30
        )
        anonymous = httpx2.post(public_url, json={}, timeout=30)
        with_token = httpx2.post(
            public_url, json={}, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        process.wait_for_stderr("cannot fetch the signing keys")
    assert metadata.status_code == 200 and metadata.json()["authorization_servers"] == [down]
    assert anonymous.status_code == 401
    assert with_token.status_code == 503
    assert int(with_token.headers["retry-after"]) >= 1
    assert down in with_token.json()["error_description"]
    assert process.proc.returncode is None or process.proc.returncode <= 0
