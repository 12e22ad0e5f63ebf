"""A real authorization server and real OAuth clients for the OAuth tests.

:class:`AuthServer` runs ``tests/oauth/provider.mjs`` (oidc-provider) in node on a free loopback
port, signing with keys the test generated (so a test can also craft tokens with them). The
browser step of a sign-in is :class:`Browser`: it follows the authorization server's redirects
with plain HTTP, keeping cookies, and names the user on the scripted login page. The clients are
the SDK's own OAuth client (:func:`sdk_auth`, under either line), a minimal hand-driven one for
tokens the SDK would not ask for (:func:`obtain_token`: another resource, no scope), and crafted
tokens (:func:`craft`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from flux_tools.emulator import Emulator

from ..mcp.mcp_helpers import SDK_LINE, ServerProcess, http_server, listening_url, server_env
from ..nodejs import npm_ci

OAUTH_DIR = Path(__file__).resolve().parent
PROVIDER = OAUTH_DIR / "provider.mjs"
SCOPE = "flux:generate"
#: How long the authorization server may take to start.
START_TIMEOUT = 30


def install_node_packages(*folders: Path) -> str | None:
    """``npm ci`` in each folder (tests/nodejs.py); the reason it failed, or None."""
    for folder in folders:
        try:
            npm_ci(folder)
        except RuntimeError as exc:
            return str(exc)[-2000:]
    return None


def find_node() -> str | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    return node if node and npm else None


def oauth_env(
    emulator: Emulator, tmp_path: Path, issuer: str, public_url: str, **extra: str | None
) -> dict[str, str]:
    """The server's environment: the emulator's API, and OAuth tokens from ``issuer``."""
    return server_env(
        emulator.base_url,
        tmp_path / "images",
        FLUX_MCP_OAUTH_ISSUER=issuer,
        FLUX_MCP_PUBLIC_URL=public_url,
        **extra,
    )


@contextlib.contextmanager
def serve_mcp(
    env: dict[str, str], cwd: Path, public_url: str, *args: str
) -> Iterator[ServerProcess]:
    """The MCP server over HTTP on the port of ``public_url`` (which it is reached at)."""
    port = str(urlsplit(public_url).port)
    with http_server(env, cwd, "--port", port, *args) as process:
        assert listening_url(process) == public_url
        yield process


# -- keys and tokens ------------------------------------------------------------------------------


def signing_keys(tag: str = "") -> dict[str, Any]:
    """A private JWKS: an EC P-256 key (access tokens, ES256) and an RSA key (ID tokens)."""
    suffix = tag or secrets.token_hex(4)
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    ec_jwk.update(kid=f"ec-{suffix}", use="sig", alg="ES256")
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048)))
    rsa_jwk.update(kid=f"rsa-{suffix}", use="sig", alg="RS256")
    return {"keys": [ec_jwk, rsa_jwk]}


def public_jwk(private: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in private.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


def craft(
    private: dict[str, Any], claims: dict[str, Any], *, alg: str | None = None, **header: Any
) -> str:
    """A JWT signed with ``private`` (a JWK), with ``kid`` from it unless ``header`` says."""
    alg = alg or private["alg"]
    key = jwt.PyJWK(private, algorithm=alg).key
    headers = {"kid": private["kid"], "typ": "at+jwt", **header}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def unsigned(claims: dict[str, Any], **header: Any) -> str:
    """A JWT with ``alg: none`` (no signature)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'at+jwt', **header})}.{part(claims)}."


def hs256_with_public_key(public: dict[str, Any], claims: dict[str, Any]) -> str:
    """The algorithm-confusion attack: HS256, keyed with the issuer's public key (its PEM, which
    anyone can fetch), as a verifier that takes the key from the token's ``alg`` would check."""
    from cryptography.hazmat.primitives import serialization

    secret = jwt.PyJWK(public, algorithm=public["alg"]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = part(json.dumps({"alg": "HS256", "kid": public["kid"], "typ": "at+jwt"}).encode())
    body = part(json.dumps(claims).encode())
    signature = part(hmac.new(secret, header + b"." + body, hashlib.sha256).digest())
    return (header + b"." + body + b"." + signature).decode()


def claims_for(issuer: str, resource: str, **extra: Any) -> dict[str, Any]:
    """The claims of a valid access token for ``resource``, five minutes long."""
    now = int(time.time())
    return {
        "iss": issuer,
        "sub": "mallory",
        "aud": resource,
        "iat": now,
        "exp": now + 300,
        "scope": SCOPE,
        "client_id": "crafted",
        "jti": secrets.token_hex(8),
        **extra,
    }


# -- the authorization server ---------------------------------------------------------------------


@dataclass
class AuthServer:
    """oidc-provider in node: start(), stop(), restart() with other keys on the same port."""

    node: str
    folder: Path
    keys: dict[str, Any] = field(default_factory=signing_keys)
    scopes: tuple[str, ...] = (SCOPE,)
    ttl: int = 300
    #: A CA bundle node trusts when fetching client metadata documents (NODE_EXTRA_CA_CERTS).
    ca_file: Path | None = None
    issuer: str = ""
    process: subprocess.Popen[str] | None = None
    stderr_path: Path | None = None

    @property
    def port(self) -> int:
        return int(urlsplit(self.issuer).port or 0)

    def private_key(self, kty: str = "EC") -> dict[str, Any]:
        key: dict[str, Any] = next(k for k in self.keys["keys"] if k["kty"] == kty)
        return key

    def start(self, port: int = 0) -> AuthServer:
        keys_file = self.folder / f"keys-{secrets.token_hex(4)}.json"
        keys_file.write_text(json.dumps(self.keys))
        config = {
            "keys": str(keys_file),
            "scopes": list(self.scopes),
            "ttl": self.ttl,
            "port": port,
            "allowLoopbackFetch": True,
        }
        env = {**os.environ, "NODE_NO_WARNINGS": "1"}
        if self.ca_file is not None:
            env["NODE_EXTRA_CA_CERTS"] = str(self.ca_file)
        self.stderr_path = self.folder / "provider-stderr.log"
        with self.stderr_path.open("a") as log:
            self.process = subprocess.Popen(
                [self.node, str(PROVIDER), json.dumps(config)],
                cwd=OAUTH_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        line = self._first_line()
        self.issuer = json.loads(line)["issuer"]
        return self

    def _first_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        box: list[str] = []
        reader = threading.Thread(
            target=lambda: box.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(START_TIMEOUT)
        if not box or not box[0].strip():
            self.stop()
            log = self.stderr_path.read_text() if self.stderr_path else ""
            raise AssertionError(f"the authorization server did not start: {log[-3000:]}")
        return box[0]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def restart(self, keys: dict[str, Any] | None = None) -> None:
        """The same issuer (port) again, with ``keys`` (a key rotation) or the same ones."""
        port = self.port
        self.stop()
        if keys is not None:
            self.keys = keys
        self.start(port)

    @property
    def log(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path else ""


@contextlib.contextmanager
def auth_server(node: str, folder: Path, **options: Any) -> Iterator[AuthServer]:
    folder.mkdir(parents=True, exist_ok=True)
    server = AuthServer(node, folder, **options).start()
    try:
        yield server
    finally:
        server.stop()


# -- the browser step -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Redirected:
    """Where the authorization server sent the browser back: the client's redirect URI."""

    url: str

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.url).query).items()}


class Browser:
    """A person's browser: follows the authorization server's redirects, keeping its cookies,
    and signs in as ``user`` on the scripted login page, until it is sent to a URL outside the
    authorization server (the client's redirect URI), which it does not open."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.visited: list[str] = []

    async def sign_in(self, authorization_url: str, *, max_hops: int = 12) -> Redirected:
        origin = urlsplit(authorization_url)[:2]
        url = authorization_url
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            for _ in range(max_hops):
                if urlsplit(url).path.startswith("/interaction/"):
                    url += ("&" if "?" in url else "?") + f"user={self.user}"
                self.visited.append(url)
                response = await http.get(url)
                if response.status_code not in (302, 303, 307):
                    raise AssertionError(
                        f"the authorization server answered {response.status_code} at {url}: "
                        f"{response.text[:1000]}"
                    )
                url = urljoin(url, response.headers["location"])
                if urlsplit(url)[:2] != origin:
                    return Redirected(url)
        raise AssertionError(f"too many redirects: {self.visited}")


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


async def obtain_token(
    issuer: str, resource: str, *, user: str = "alice", scope: str = SCOPE
) -> str:
    """An access token from the real authorization server, the long way a client goes: dynamic
    registration, PKCE, the browser step, the code exchange. For tokens the SDK's client would
    not ask for (another resource, fewer scopes)."""
    redirect_uri = "https://claude.ai/api/mcp/auth_callback"
    async with httpx2.AsyncClient(timeout=30) as http:
        metadata = (await http.get(f"{issuer}/.well-known/oauth-authorization-server")).json()
        registered = await http.post(
            metadata["registration_endpoint"],
            json={
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"],
                "client_name": "flux-tools test client",
            },
        )
        assert registered.status_code == 201, registered.text
        client_id = registered.json()["client_id"]
        verifier, challenge = pkce()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": resource,
        }
        if scope:
            params["scope"] = scope
        url = f"{metadata['authorization_endpoint']}?{httpx2.QueryParams(params)}"
        back = await Browser(user).sign_in(url)
        assert back.params.get("state") == state and "code" in back.params, back.url
        exchanged = await http.post(
            metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": back.params["code"],
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": verifier,
                "resource": resource,
            },
        )
        assert exchanged.status_code == 200, exchanged.text
        token: str = exchanged.json()["access_token"]
        return token


# -- the SDK's OAuth client -----------------------------------------------------------------------


class MemoryStorage:
    """The SDK's ``TokenStorage``, in memory (one sign-in per test)."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


@dataclass
class SignIn:
    """What the person saw: the authorization URLs their browser was sent to, and where from."""

    user: str
    authorization_urls: list[str] = field(default_factory=list)
    redirects: list[Redirected] = field(default_factory=list)


def sdk_auth(
    server_url: str,
    sign_in: SignIn,
    *,
    redirect_uri: str,
    client_metadata_url: str | None = None,
    storage: MemoryStorage | None = None,
) -> Any:
    """The SDK's ``OAuthClientProvider`` (an ``httpx.Auth``), as an MCP host configures it:
    it discovers, registers (DCR) or names its metadata document (CIMD), sends the person's
    browser to the authorization server, and exchanges the code with PKCE."""
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    metadata = OAuthClientMetadata.model_validate(
        {
            "client_name": "flux-tools OAuth test (Python SDK)",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
    )

    async def redirect(authorization_url: str) -> None:
        sign_in.authorization_urls.append(authorization_url)
        sign_in.redirects.append(await Browser(sign_in.user).sign_in(authorization_url))

    async def callback() -> Any:
        params = sign_in.redirects[-1].params
        if SDK_LINE == 1:
            return params["code"], params.get("state")
        from mcp.client.auth import AuthorizationCodeResult  # type: ignore[attr-defined]

        return AuthorizationCodeResult(
            code=params["code"], state=params.get("state"), iss=params.get("iss")
        )

    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=metadata,
        storage=storage or MemoryStorage(),
        redirect_handler=redirect,
        callback_handler=callback,
        client_metadata_url=client_metadata_url,
    )


# -- a client's metadata document, served over https ----------------------------------------------


class DocumentServer:
    """Serves JSON documents over https on loopback (a client's metadata document, as CIMD
    wants it: https, with a path) and counts who fetched what."""

    def __init__(self, ca: Any) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.fetched: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetched.append(self.path)
                document = outer.documents.get(self.path)
                body = json.dumps(document).encode() if document is not None else b"{}"
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.origin = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> DocumentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def client_document(self, path: str, *, redirect_uri: str, name: str) -> str:
        """Publishes a client metadata document at ``path``; returns its URL (the client id)."""
        url = self.origin + path
        self.documents[path] = {
            "client_id": url,
            "client_name": name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        return url
