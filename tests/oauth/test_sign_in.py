"""A person signs in through a real MCP client, then generates an image.

The authorization server is oidc-provider (tests/oauth/provider.mjs); the clients are the MCP
Python SDK's OAuth client (the line installed: 2.x in both protocol eras, 1.x in the handshake
era) and the TypeScript SDK's (tests/js/oauth_client.mjs). Each discovers the server's
protected-resource metadata from its 401, then the authorization server's metadata, registers
(Dynamic Client Registration) or names its Client ID Metadata Document, sends the browser (here
:class:`~tests.oauth.oauth_helpers.Browser`) to sign in, exchanges the code with PKCE for a
token issued for this server, and calls the tools with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from flux_tools.emulator import Emulator

from ..mcp.mcp_helpers import SDK_LINE, free_port, text_of
from ..mcp.real_clients import LEGACY, MODERN, Target, connect
from ..mcp.test_real_clients_js import JS_DIR, only, run_js
from .conftest import Served
from .oauth_helpers import (
    SCOPE,
    AuthServer,
    DocumentServer,
    SignIn,
    oauth_env,
    sdk_auth,
    serve_mcp,
)

pytestmark = pytest.mark.mcp

TOOLS = {"generate_image", "edit_image", "get_prediction", "cancel_prediction", "list_models"}
PROMPT = "a paper lantern on a dark lake, long exposure"
ERAS = [LEGACY] if SDK_LINE == 1 else [LEGACY, MODERN]


def _target(served: Served, tmp_path: Path, auth: Any) -> Target:
    return Target("http", {}, tmp_path, tmp_path / "client.log", url=served.url, auth=auth)


def _granted(sign_in: SignIn, served: Served) -> dict[str, str]:
    """The authorization request the client sent the browser with."""
    [url] = sign_in.authorization_urls
    assert url.startswith(served.issuer.issuer + "/")
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.mark.parametrize("era", ERAS)
async def test_sign_in_with_dynamic_registration_then_generate(
    served: Served, emulator: Emulator, tmp_path: Path, era: str
) -> None:
    sign_in = SignIn(user="alice")
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    auth = sdk_auth(served.url, sign_in, redirect_uri=redirect_uri)
    async with connect("mcp", era, _target(served, tmp_path, auth)) as client:
        tools = await client.list_tools()
        result = await client.call("generate_image", {"prompt": PROMPT})
    assert set(tools) == TOOLS
    assert not result.get("isError"), text_of(result)
    assert result["structuredContent"]["status"] == "succeeded"
    assert emulator.stats.creates == 1
    # What the client asked for: this server as the resource (RFC 8707), the scope the
    # metadata advertises, PKCE with S256, a client id from dynamic registration.
    asked = _granted(sign_in, served)
    assert asked["resource"] == served.url
    assert SCOPE in asked["scope"].split()  # (the SDK adds offline_access, for a refresh)
    assert asked["code_challenge_method"] == "S256"
    assert not asked["client_id"].startswith("https://")
    assert sign_in.redirects[0].url.startswith(redirect_uri)
    # The server knew who called, in the handler of the call itself.
    assert f"generate_image called by alice ({served.issuer.issuer})" in served.stderr
    assert "Bearer ey" not in served.stderr


async def test_a_stateless_server_one_sign_in_for_both_eras(
    issuer: AuthServer, emulator: Emulator, tmp_path: Path, workdir: Path, public_url: str
) -> None:
    env = oauth_env(emulator, tmp_path, issuer.issuer, public_url)
    sign_in = SignIn(user="erin")
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    with serve_mcp(env, workdir, public_url, "--stateless") as process:
        served = Served(process, public_url, issuer)
        # One client, one sign-in: the token it keeps serves every later connection.
        auth = sdk_auth(served.url, sign_in, redirect_uri=redirect_uri)
        results = []
        for era in ERAS:
            async with connect("mcp", era, _target(served, tmp_path, auth)) as client:
                results.append(await client.call("generate_image", {"prompt": PROMPT}))
    assert len(sign_in.authorization_urls) == 1
    for result in results:
        assert not result.get("isError"), text_of(result)
    assert emulator.stats.creates == len(ERAS)
    assert served.stderr.count(f"generate_image called by erin ({issuer.issuer})") == len(ERAS)


async def test_sign_in_with_a_client_id_metadata_document(
    served: Served, emulator: Emulator, tmp_path: Path, test_ca: tuple[Any, Path]
) -> None:
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    with DocumentServer(test_ca[0]) as documents:
        client_id = documents.client_document(
            "/oauth/flux-tests.json", redirect_uri=redirect_uri, name="flux-tools CIMD test"
        )
        sign_in = SignIn(user="bob")
        auth = sdk_auth(
            served.url, sign_in, redirect_uri=redirect_uri, client_metadata_url=client_id
        )
        async with connect("mcp", LEGACY, _target(served, tmp_path, auth)) as client:
            result = await client.call("generate_image", {"prompt": PROMPT})
        fetched = list(documents.fetched)
    assert not result.get("isError"), text_of(result)
    asked = _granted(sign_in, served)
    # No registration: the client id is the document's URL, which the server fetched.
    assert asked["client_id"] == client_id
    assert "/oauth/flux-tests.json" in fetched
    assert f"generate_image called by bob ({served.issuer.issuer})" in served.stderr


@pytest.mark.parametrize("registration", ["dcr", "cimd"])
async def test_the_typescript_sdk_signs_in_then_generates(
    node: str,
    served: Served,
    emulator: Emulator,
    tmp_path: Path,
    test_ca: tuple[Any, Path],
    registration: str,
) -> None:
    # Claude's own callback: the browser is sent there, and never opens it here.
    redirect_uri = "https://claude.ai/api/mcp/auth_callback"
    plan: dict[str, Any] = {
        "url": served.url,
        "user": "dana",
        "redirectUrl": redirect_uri,
        "arguments": {"prompt": PROMPT},
    }
    with DocumentServer(test_ca[0]) as documents:
        if registration == "cimd":
            plan["clientMetadataUrl"] = documents.client_document(
                "/clients/ts.json", redirect_uri=redirect_uri, name="flux-tools TS CIMD test"
            )
        events = await run_js(node, plan, tmp_path / "js.log", script=JS_DIR / "oauth_client.mjs")
    log = (tmp_path / "js.log").read_text()
    authorize = only(events, "authorize")["url"]
    asked = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert asked["resource"] == served.url and SCOPE in asked["scope"].split()
    assert asked["code_challenge_method"] == "S256"
    assert only(events, "redirected")["url"].startswith(redirect_uri + "?code=")
    if registration == "cimd":
        assert asked["client_id"] == plan["clientMetadataUrl"]
        assert "/clients/ts.json" in documents.fetched
    else:
        assert only(events, "signed-in")["client_id"] == asked["client_id"]
    assert set(only(events, "tools")["names"]) == TOOLS, log
    result = only(events, "result")
    assert result["isError"] is False, result["text"]
    assert result["structuredContent"]["status"] == "succeeded"
    assert f"generate_image called by dana ({served.issuer.issuer})" in served.stderr


def test_the_issued_token_is_for_this_server(served: Served) -> None:
    # What the tests above rely on, checked on a token the provider minted: a JWT (RFC 9068)
    # signed with the provider's EC key, whose audience is the public URL.
    import anyio

    from .oauth_helpers import obtain_token

    token = anyio.run(obtain_token, served.issuer.issuer, served.url)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt"
    assert claims["aud"] == served.url and claims["iss"] == served.issuer.issuer
    assert claims["scope"] == SCOPE and claims["sub"] == "alice"
    assert json.dumps(claims)  # plain JSON claims
