"""What a caller without a valid token gets: a 401 (or 403) and the metadata, nothing else.

One server, configured with the team's authorization server and a static token for scripts,
meets every kind of token: minted by the real authorization server (for this server, for
another one, without the scope, by another authorization server) or crafted with its keys
(expired, not yet valid, ``alg: none``, tampered, HS256 keyed with its public key).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from flux_tools.emulator import Emulator

from ..conftest import FAST
from ..mcp.mcp_helpers import free_port
from .oauth_helpers import (
    SCOPE,
    AuthServer,
    auth_server,
    claims_for,
    craft,
    hs256_with_public_key,
    oauth_env,
    obtain_token,
    public_jwk,
    serve_mcp,
    unsigned,
)

pytestmark = pytest.mark.mcp

STATIC = "static-token-for-scripts-0123456789abcdef"
OTHER_RESOURCE = "https://other-team.example.com/mcp"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass
class Guarded:
    """The server under test, the tokens the tests present, and what it logged."""

    url: str
    issuer: AuthServer
    tokens: dict[str, str]
    process: Any

    @property
    def metadata_url(self) -> str:
        return self.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")

    def post(self, token: str | None, body: dict[str, Any] = INITIALIZE, **headers: str) -> Any:
        sent = {**MCP_HEADERS, **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return httpx2.post(self.url, json=body, headers=sent, timeout=30)


def _tamper(token: str, **changes: Any) -> str:
    """The token with its claims changed and its signature kept."""
    header, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.fixture(scope="module")
def guarded(
    node: str, issuer: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guarded]:
    tmp = tmp_path_factory.mktemp("guarded")
    public_url = f"http://127.0.0.1:{free_port()}/mcp"
    emulator = Emulator(latency=FAST["latency"], queue_time=FAST["queue_time"]).start()
    try:
        with auth_server(node, tmp / "other-issuer") as other:
            tokens = anyio.run(_tokens, issuer, other, public_url)
        env = oauth_env(emulator, tmp, issuer.issuer, public_url, FLUX_MCP_AUTH_TOKEN=STATIC)
        cwd = tmp / "cwd"
        cwd.mkdir()
        with serve_mcp(env, cwd, public_url) as process:
            yield Guarded(public_url, issuer, tokens, process)
    finally:
        emulator.stop()


async def _tokens(issuer: AuthServer, other: AuthServer, resource: str) -> dict[str, str]:
    real = await obtain_token(issuer.issuer, resource, user="alice")
    ec, rsa = issuer.private_key("EC"), issuer.private_key("RSA")
    now = int(time.time())
    mine = issuer.issuer
    return {
        "valid": real,
        "valid, bob": await obtain_token(issuer.issuer, resource, user="bob"),
        "valid, RS256": craft(rsa, claims_for(mine, resource)),
        "valid, typ JWT": craft(ec, claims_for(mine, resource), typ="JWT"),
        "valid, scp list": craft(
            ec,
            {
                **{k: v for k, v in claims_for(mine, resource).items() if k != "scope"},
                "scp": [SCOPE],
            },
        ),
        "valid, aud a list": craft(ec, claims_for(mine, resource, aud=[OTHER_RESOURCE, resource])),
        "expired 30 s ago (skew)": craft(ec, claims_for(mine, resource, exp=now - 30)),
        "issued 30 s ahead (skew)": craft(ec, claims_for(mine, resource, iat=now + 30)),
        "expired": craft(ec, claims_for(mine, resource, iat=now - 900, exp=now - 120)),
        "not yet valid": craft(ec, claims_for(mine, resource, nbf=now + 600)),
        "wrong audience": await obtain_token(issuer.issuer, OTHER_RESOURCE),
        "no audience": craft(
            ec, {k: v for k, v in claims_for(mine, resource).items() if k != "aud"}
        ),
        "wrong issuer": await obtain_token(other.issuer, resource),
        "wrong issuer, forged iss": craft(other.private_key("EC"), claims_for(mine, resource)),
        "missing scope": await obtain_token(issuer.issuer, resource, scope="openid"),
        "other scope only": craft(ec, claims_for(mine, resource, scope="openid profile")),
        "alg none": unsigned(claims_for(mine, resource), kid=ec["kid"]),
        "tampered": _tamper(real, sub="admin"),
        "HS256 keyed with the public key": hs256_with_public_key(
            public_jwk(ec), claims_for(mine, resource)
        ),
        "unknown key id": craft(ec, claims_for(mine, resource), kid="made-up"),
        "an ID token's type": craft(ec, claims_for(mine, resource), typ="logout+jwt"),
        "no sub": craft(ec, {k: v for k, v in claims_for(mine, resource).items() if k != "sub"}),
        "not a JWT": "definitely-not-a-jwt",
        "static": STATIC,
        "static, one character off": STATIC[:-1] + "x",
    }


ACCEPTED = [
    "valid",
    "valid, bob",
    "valid, RS256",
    "valid, typ JWT",
    "valid, scp list",
    "valid, aud a list",
    "expired 30 s ago (skew)",
    "issued 30 s ahead (skew)",
    "static",
]
#: token -> (status, OAuth error, words of the description)
REFUSED = {
    "expired": (401, "invalid_token", "expired"),
    "not yet valid": (401, "invalid_token", "not valid yet"),
    "wrong audience": (401, "invalid_token", OTHER_RESOURCE),
    "no audience": (401, "invalid_token", "resource="),
    "wrong issuer": (401, "invalid_token", "accepts tokens from"),
    "wrong issuer, forged iss": (401, "invalid_token", "does not publish"),
    "missing scope": (403, "insufficient_scope", SCOPE),
    "other scope only": (403, "insufficient_scope", SCOPE),
    "alg none": (401, "invalid_token", "asymmetric"),
    "tampered": (401, "invalid_token", "signature"),
    "HS256 keyed with the public key": (401, "invalid_token", "asymmetric"),
    "unknown key id": (401, "invalid_token", "does not publish"),
    "an ID token's type": (401, "invalid_token", "not an access token"),
    "no sub": (401, "invalid_token", "'sub'"),
    "not a JWT": (401, "invalid_token", "not a JWT"),
    "static, one character off": (401, "invalid_token", "not a JWT"),
}


def _challenge(response: Any) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate: Bearer k="v", ...`` header."""
    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer ")
    params = {}
    for part in header[len("Bearer ") :].split('", '):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip('"')
    return params


@pytest.mark.parametrize("name", ACCEPTED)
def test_a_valid_token_is_served(guarded: Guarded, name: str) -> None:
    response = guarded.post(guarded.tokens[name])
    assert response.status_code == 200, response.text
    assert "flux" in response.text  # the initialize result: the server's name


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_refused_token_gets_the_challenge_and_nothing_else(guarded: Guarded, name: str) -> None:
    status, error, words = REFUSED[name]
    token = guarded.tokens[name]
    response = guarded.post(token)
    listing = guarded.post(token, TOOLS_LIST, **{"MCP-Protocol-Version": "2026-07-28"})
    assert response.status_code == status, response.text
    assert listing.status_code == status
    challenge = _challenge(response)
    assert challenge["error"] == error
    assert challenge["resource_metadata"] == guarded.metadata_url
    assert challenge["scope"] == SCOPE
    body = response.json()
    assert body["error"] == error and words in body["error_description"], body
    assert words in challenge["error_description"]
    assert "generate_image" not in response.text + listing.text
    assert token not in response.text and token not in guarded.process.stderr


def test_no_token_gets_the_challenge_to_sign_in(guarded: Guarded) -> None:
    refused = {
        "none": guarded.post(None),
        "basic": guarded.post(None, Authorization=f"Basic {STATIC}"),
        "empty bearer": guarded.post(None, Authorization="Bearer"),
        "tools/list, 2026-07-28": guarded.post(
            None, TOOLS_LIST, **{"MCP-Protocol-Version": "2026-07-28"}
        ),
        "GET stream": httpx2.get(guarded.url, headers={"Accept": "text/event-stream"}, timeout=30),
        "DELETE": httpx2.delete(guarded.url, timeout=30),
    }
    for name, response in refused.items():
        assert response.status_code == 401, name
        # The challenge of the MCP authorization spec: where the metadata is, which scope.
        assert _challenge(response) == {
            "resource_metadata": guarded.metadata_url,
            "scope": SCOPE,
        }, name
        assert "error=" not in response.headers["www-authenticate"]
        assert guarded.issuer.issuer in response.json()["error_description"]
        assert "generate_image" not in response.text
    assert "refused an unauthenticated request" in guarded.process.stderr


def test_the_protected_resource_metadata(guarded: Guarded) -> None:
    base = guarded.url.removesuffix("/mcp")
    documents = {
        path: httpx2.get(base + path, timeout=30)
        for path in (
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-protected-resource",
        )
    }
    for path, response in documents.items():
        assert response.status_code == 200, path
        assert response.json() == {
            "resource": guarded.url,
            "authorization_servers": [guarded.issuer.issuer],
            "scopes_supported": [SCOPE],
            "bearer_methods_supported": ["header"],
            "resource_name": "FLUX image generation (flux-tools)",
        }
        # Browser-based clients read it too.
        assert response.headers["access-control-allow-origin"] == "*"
    preflight = httpx2.options(
        guarded.metadata_url,
        headers={"Origin": "https://inspector.example", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert preflight.status_code == 204
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert httpx2.post(guarded.metadata_url, timeout=30).status_code == 405
    # Nothing else is public.
    assert (
        httpx2.get(base + "/.well-known/oauth-protected-resource/x", timeout=30).status_code == 401
    )


def test_a_session_answers_only_the_person_who_opened_it(guarded: Guarded) -> None:
    opened = guarded.post(guarded.tokens["valid"])
    session = opened.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (
        guarded.post(
            guarded.tokens["valid"], initialized, **{"Mcp-Session-Id": session}
        ).status_code
        == 202
    )
    mine = guarded.post(guarded.tokens["valid"], TOOLS_LIST, **{"Mcp-Session-Id": session})
    theirs = guarded.post(guarded.tokens["valid, bob"], TOOLS_LIST, **{"Mcp-Session-Id": session})
    static = guarded.post(STATIC, TOOLS_LIST, **{"Mcp-Session-Id": session})
    assert mine.status_code == 200 and "generate_image" in mine.text
    # Another person holding the id is told what a made-up id gets: no such session.
    assert theirs.status_code == static.status_code == 404
    assert "generate_image" not in theirs.text + static.text
    ended = httpx2.delete(
        guarded.url,
        headers={
            "Authorization": f"Bearer {guarded.tokens['valid, bob']}",
            "Mcp-Session-Id": session,
        },
        timeout=30,
    )
    assert ended.status_code == 404  # nor end it
    assert (
        guarded.post(guarded.tokens["valid"], TOOLS_LIST, **{"Mcp-Session-Id": session}).status_code
        == 200
    )


def test_tokens_never_reach_the_log(guarded: Guarded, tmp_path: Path) -> None:
    for name in ("valid", "tampered", "expired"):
        guarded.post(guarded.tokens[name])
    log = guarded.process.stderr
    for token in guarded.tokens.values():
        signature = token.split(".")[-1]
        assert token not in log and (len(signature) < 16 or signature[:16] not in log)
    assert "(token sha256:" in log
