"""The server as an OAuth 2.1 resource server (the MCP authorization specification).

It publishes its protected-resource metadata (RFC 9728) and accepts JWT access tokens (RFC 9068)
that the configured authorization server issued *for this server*: signed with a key from the
issuer's JWKS (found through its metadata, RFC 8414 / OpenID Connect discovery), ``iss`` exactly
the configured issuer, ``aud`` naming this server's public URL (RFC 8707 resource indicators),
unexpired (60 s of clock skew tolerated), with the required scopes. Only asymmetric signatures
(RS*, PS*, ES*, EdDSA) are accepted: a token cannot pick ``none`` nor a symmetric algorithm whose
"secret" would be the public key. Tokens are never logged; a short hash identifies one.

Keys are fetched with the package's own HTTP stack (``httpx2``, asynchronous, every request
bounded by :data:`FETCH_TIMEOUT`) and parsed by PyJWT, which the ``mcp`` SDK already requires
(``pyjwt[crypto]``, both lines): PyJWT checks signatures and claims; this module decides which
keys to trust and when to fetch them. They are cached, refetched after :data:`KEYS_MAX_AGE`, and
at once when a token names an unknown key id (key rotation), at most once per
:data:`MIN_REFRESH_INTERVAL`. When the authorization server cannot be reached, requests with a
token are answered 503 (retry later) and the process keeps serving; nothing blocks startup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2

from .config import is_loopback
from .identity import Identity

logger = logging.getLogger("mcp_server.oauth")

#: The signature algorithms accepted: asymmetric only (never ``none``, never ``HS*``).
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: The key type each algorithm family needs (JWK ``kty``).
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds.
LEEWAY = 60
#: Bound on each request to the authorization server (metadata, JWKS), in seconds.
FETCH_TIMEOUT = 5.0
#: Largest metadata or JWKS document read, in bytes.
MAX_DOCUMENT_BYTES = 1024 * 1024
#: Keys are refetched when older than this (seconds), and on an unknown key id.
KEYS_MAX_AGE = 3600.0
#: An unknown key id refetches the JWKS at most this often (seconds): tokens naming made-up
#: key ids cannot make the server hammer the authorization server.
MIN_REFRESH_INTERVAL = 30.0
#: After the authorization server could not be reached, requests wait this long (seconds)
#: before the next attempt; meanwhile they are answered 503 at once.
RETRY_AFTER_FAILURE = 10.0
#: ``typ`` header values of access tokens (RFC 9068 ``at+jwt``; most IdPs say ``JWT``).
ACCESS_TOKEN_TYPES = ("jwt", "at+jwt", "application/at+jwt")
DEFAULT_RESOURCE_NAME = "FLUX image generation (flux-tools)"


def token_hash(token: str | bytes) -> str:
    """A short, non-reversible label of a token for logs: never the token itself."""
    raw = token.encode() if isinstance(token, str) else token
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:12]


class TokenRefused(Exception):
    """A request's token is refused: the HTTP status, the OAuth error code and what to fix."""

    def __init__(self, status: int, error: str, description: str, retry_after: int = 0) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        #: Seconds to wait before retrying (503 only).
        self.retry_after = retry_after


def _invalid(description: str) -> TokenRefused:
    return TokenRefused(401, "invalid_token", description)


def _unavailable(issuer: str, retry_after: float, reason: str) -> TokenRefused:
    wait = max(1, round(retry_after))
    return TokenRefused(
        503,
        "temporarily_unavailable",
        f"The authorization server {issuer} cannot be reached to check the token ({reason}); "
        f"retry in {wait} s.",
        retry_after=wait,
    )


@dataclass(frozen=True)
class OAuthSettings:
    """What the resource server needs: whose tokens, for which resource, with which scopes."""

    #: The authorization server's issuer identifier, exactly as its tokens' ``iss``.
    issuer: str
    #: This server's canonical URL as clients reach it (the MCP endpoint): tokens' audience.
    resource: str
    #: Scopes every token must grant (all of them); advertised in the metadata.
    scopes: tuple[str, ...] = ()
    resource_name: str = DEFAULT_RESOURCE_NAME

    @property
    def resource_path(self) -> str:
        return urlsplit(self.resource).path.rstrip("/")

    @property
    def metadata_url(self) -> str:
        """Where clients find the protected-resource metadata (RFC 9728 §3.1: the well-known
        path inserted between the host and the resource's path)."""
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource" + (
            self.resource_path
        )

    def metadata_paths(self, local_path: str) -> frozenset[str]:
        """The paths the metadata is served at: the root form, the one for the public URL's
        path, and the one for the endpoint's path on this server (behind a proxy that maps
        another path to it)."""
        base = "/.well-known/oauth-protected-resource"
        return frozenset({base, base + self.resource_path, base + local_path.rstrip("/")})

    def metadata(self) -> dict[str, Any]:
        """The protected-resource metadata document (RFC 9728 §2)."""
        document: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": self.resource_name,
        }
        if self.scopes:
            document["scopes_supported"] = list(self.scopes)
        return document

    @property
    def audiences(self) -> list[str]:
        """The ``aud`` values naming this server: its URL, with or without a trailing slash."""
        bare = self.resource.rstrip("/")
        return [bare, bare + "/"]


def discovery_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be, in the order the MCP specification gives: OAuth
    metadata (RFC 8414) and OpenID Connect discovery, with the issuer's path inserted after the
    well-known segment, then OpenID Connect's appended form."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
    ]
    if path:
        urls.append(f"{origin}{path}/.well-known/openid-configuration")
    return urls


def _allowed_url(url: str) -> bool:
    """https, or http on a loopback host (an authorization server run for local tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and is_loopback(parts.hostname or "")


class _Unreachable(Exception):
    """The authorization server could not be asked (network, status, or a bad document)."""


class IssuerKeys:
    """The issuer's signing keys: discovered, cached, refetched on rotation, rate limited."""

    def __init__(
        self,
        issuer: str,
        *,
        timeout: float = FETCH_TIMEOUT,
        client: Callable[[], httpx2.AsyncClient] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.timeout = timeout
        self._make_client = client or (
            lambda: httpx2.AsyncClient(timeout=timeout, follow_redirects=False)
        )
        self._client: httpx2.AsyncClient | None = None
        self._clock = clock
        self._lock = anyio.Lock()
        self._jwks_uri: str | None = None
        #: kid (None for a key without one) -> its JWK, usable keys only.
        self._keys: dict[str | None, dict[str, Any]] | None = None
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._failure = ""

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _get_json(self, url: str) -> tuple[int, Any]:
        if self._client is None:
            self._client = self._make_client()
        try:
            async with self._client.stream(
                "GET", url, headers={"Accept": "application/json"}
            ) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise _Unreachable(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
                status = response.status_code
        except httpx2.HTTPError as exc:
            raise _Unreachable(f"{url}: {type(exc).__name__}") from None
        if status != 200:
            return status, None
        try:
            return status, json.loads(body)
        except ValueError:
            raise _Unreachable(f"{url} did not answer JSON") from None

    async def _discover(self) -> str:
        """The issuer's ``jwks_uri``, from the first metadata document that names it."""
        problems = []
        for url in discovery_urls(self.issuer):
            status, document = await self._get_json(url)
            if status != 200 or not isinstance(document, dict):
                problems.append(f"{url}: HTTP {status}")
                continue
            named = document.get("issuer")
            if named != self.issuer:
                # RFC 8414 §3.3: the metadata must name exactly the issuer it was asked for.
                raise _Unreachable(
                    f"its metadata at {url} names the issuer {str(named)[:200]!r}, not "
                    f"{self.issuer!r}: set FLUX_MCP_OAUTH_ISSUER to exactly the issuer its tokens "
                    "carry"
                )
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not _allowed_url(jwks_uri):
                raise _Unreachable(f"its metadata at {url} names no https jwks_uri")
            return jwks_uri
        raise _Unreachable("no metadata found (" + "; ".join(problems) + ")")

    async def _fetch(self) -> dict[str | None, dict[str, Any]]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        try:
            status, document = await self._get_json(self._jwks_uri)
            if status != 200 or not isinstance(document, dict):
                raise _Unreachable(f"{self._jwks_uri}: HTTP {status}")
        except _Unreachable:
            self._jwks_uri = None  # discover again next time: the issuer may have moved it
            raise
        keys: dict[str | None, dict[str, Any]] = {}
        for jwk in document.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if jwk.get("kty") not in ("RSA", "EC", "OKP"):  # never a symmetric ("oct") key
                continue
            kid = jwk.get("kid")
            keys[kid if isinstance(kid, str) else None] = jwk
        if not keys:
            raise _Unreachable(f"{self._jwks_uri} holds no signing keys")
        return keys

    async def refresh(self, *, why: str) -> None:
        """Fetch the keys (once, whoever else asked meanwhile). Raises TokenRefused (503)."""
        asked_at = self._clock()
        async with self._lock:
            now = self._clock()
            if self._fetched_at is not None and self._fetched_at >= asked_at:
                return  # another request refreshed them while this one waited
            if self._failed_at is not None and now - self._failed_at < RETRY_AFTER_FAILURE:
                left = RETRY_AFTER_FAILURE - (now - self._failed_at)
                raise _unavailable(self.issuer, left, self._failure)
            try:
                with anyio.fail_after(4 * self.timeout):
                    keys = await self._fetch()
            except (_Unreachable, TimeoutError) as exc:
                self._failed_at = self._clock()
                self._failure = str(exc) or "timed out"
                logger.warning(
                    "OAuth: cannot fetch the signing keys of %s (%s): requests with a token are "
                    "answered 503 until it answers",
                    self.issuer,
                    self._failure,
                )
                raise _unavailable(self.issuer, RETRY_AFTER_FAILURE, self._failure) from None
            known = set(self._keys or ())
            self._keys, self._fetched_at, self._failed_at = keys, self._clock(), None
            logger.info(
                "OAuth: %d signing key(s) of %s from %s (%s)%s",
                len(keys),
                self.issuer,
                self._jwks_uri,
                why,
                f", new: {sorted(str(k) for k in set(keys) - known)}" if known else "",
            )

    async def key_for(self, kid: str | None, alg: str) -> dict[str, Any]:
        """The JWK that signs tokens naming ``kid`` with ``alg``. Raises TokenRefused."""
        now = self._clock()
        if self._keys is None:
            await self.refresh(why="first use")
        elif self._fetched_at is not None and now - self._fetched_at > KEYS_MAX_AGE:
            # On failure the keys held are still the best knowledge there is.
            with contextlib.suppress(TokenRefused):
                await self.refresh(why="periodic")
        key = self._find(kid, alg)
        fetched = self._fetched_at
        if key is None and fetched is not None and self._clock() - fetched >= MIN_REFRESH_INTERVAL:
            await self.refresh(why=f"unknown key id {str(kid)[:64]!r}")
            key = self._find(kid, alg)
        if key is None:
            raise _invalid(
                "The access token is signed with a key the authorization server does not publish."
            )
        return key

    def _find(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        keys = self._keys or {}
        kty = _KEY_TYPES.get(alg[:2])
        if kid is not None:
            candidates = [keys[kid]] if kid in keys else []
        else:  # no kid: only when exactly one published key fits the algorithm
            candidates = [k for k in keys.values() if k.get("kty") == kty]
            if len(candidates) != 1:
                return None
        usable = [k for k in candidates if k.get("kty") == kty and k.get("alg", alg) == alg]
        return usable[0] if usable else None


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes a token grants: ``scope`` (space-separated, RFC 9068) or ``scp``."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list):
            return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def _describe(value: object) -> str:
    """A claim value for an error message: short, one line, quoted."""
    return json.dumps(value)[:120] if not isinstance(value, str) else repr(value[:120])


class TokenVerifier:
    """Verifies a JWT access token for this resource; returns the :class:`Identity` it proves."""

    def __init__(self, settings: OAuthSettings, keys: IssuerKeys | None = None) -> None:
        self.settings = settings
        self.keys = keys or IssuerKeys(settings.issuer)

    async def warm_up(self) -> None:
        """Fetch the keys before the first request needs them (a failure is only logged)."""
        with contextlib.suppress(TokenRefused):
            await self.keys.refresh(why="startup")

    async def aclose(self) -> None:
        await self.keys.aclose()

    async def verify(self, token: str) -> Identity:
        """The identity ``token`` proves, or :class:`TokenRefused` saying why not."""
        import jwt

        issuer = self.settings.issuer
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid(f"The bearer token is not a JWT access token from {issuer}.") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise _invalid(
                f"The access token is signed with {_describe(alg)}; this server accepts only "
                "asymmetric signatures (RS*, PS*, ES*, EdDSA)."
            )
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
            raise _invalid(f"The token's type is {_describe(typ)}, not an access token.")
        if unverified.get("iss") != issuer:
            raise _invalid(
                f"The access token was issued by {_describe(unverified.get('iss'))}; this server "
                f"accepts tokens from {issuer} only."
            )
        kid = header.get("kid")
        jwk = await self.keys.key_for(kid if isinstance(kid, str) else None, alg)
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                issuer=issuer,
                audience=self.settings.audiences,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("The access token has expired: sign in again.") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("The access token is not valid yet (nbf or iat ahead).") from None
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim != "aud":
                raise _invalid(f"The access token has no {exc.claim!r} claim.") from None
            raise _invalid(
                f"The access token was issued for {_describe(unverified.get('aud'))}, not for "
                f"this server ({self.settings.resource}): the client must ask for it with "
                f"resource={self.settings.resource}."
            ) from None
        except jwt.InvalidSignatureError:
            raise _invalid("The access token's signature does not verify.") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _invalid(f"The access token is not valid ({type(exc).__name__}).") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _invalid("The access token's 'sub' claim is not a non-empty string.")
        granted = _scopes(claims)
        missing = [scope for scope in self.settings.scopes if scope not in granted]
        if missing:
            raise TokenRefused(
                403,
                "insufficient_scope",
                f"The access token lacks the scope {' '.join(missing)}: sign in again, granting "
                "it.",
            )
        client_id = claims.get("client_id", claims.get("azp"))
        exp = claims.get("exp")
        return Identity(
            issuer=issuer,
            subject=subject,
            kind="oauth",
            client_id=client_id if isinstance(client_id, str) else None,
            scopes=granted,
            expires_at=float(exp) if isinstance(exp, (int, float)) else None,
        )


__all__ = [
    "ALGORITHMS",
    "LEEWAY",
    "IssuerKeys",
    "OAuthSettings",
    "TokenRefused",
    "TokenVerifier",
    "discovery_urls",
    "token_hash",
]
