"""Who is calling, over HTTP: the identity a verified request carries.

The HTTP front (:mod:`mcp_server.http`) verifies each request's bearer token, then stores an
:class:`Identity` in the request's ASGI scope under :data:`IDENTITY_KEY`. Tool handlers read it
through the SDK's request context (``_sdk`` puts it in :class:`~mcp_server._sdk.CallContext` and
in :func:`~mcp_server._sdk.calling_identity`, per call). It is never kept in a context variable
set by the middleware: in a session, the SDK runs handlers in the context of the request that
opened the session, so such a variable would carry the first caller's identity into every
later call of that session.

No identity (None) means the server checks no token: stdio, or HTTP on loopback without
``FLUX_MCP_AUTH_TOKEN`` or OAuth. A person is ``(issuer, subject)``: the ``sub`` of one issuer
says nothing about the same ``sub`` of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: The ASGI scope key under which the HTTP front stores the request's :class:`Identity`.
IDENTITY_KEY = "flux_mcp.identity"
#: The issuer of the identity a request with the static token (FLUX_MCP_AUTH_TOKEN) gets.
STATIC_TOKEN_ISSUER = "urn:flux-mcp:static-token"


@dataclass(frozen=True)
class Identity:
    """The caller a request's bearer token proves."""

    #: The token's ``iss`` (exactly the configured FLUX_MCP_OAUTH_ISSUER), or
    #: :data:`STATIC_TOKEN_ISSUER` for the static token.
    issuer: str
    #: The token's ``sub``: the person (or, for a client-credentials token, the client).
    subject: str
    #: ``oauth``: a verified JWT access token; ``static``: the server's static bearer token.
    kind: Literal["oauth", "static"] = "oauth"
    #: The OAuth client the token was issued to (``client_id``, or ``azp``), if it says.
    client_id: str | None = None
    #: The scopes the token grants (``scope`` or ``scp``).
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: When the token expires (``exp``, seconds since the epoch); None for the static token.
    expires_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What tells one person from another: ``(issuer, subject)``."""
        return (self.issuer, self.subject)

    def __str__(self) -> str:
        return f"{self.subject} ({self.issuer})"


#: The identity every request with the static token gets: one caller, the server's owner.
STATIC_IDENTITY = Identity(issuer=STATIC_TOKEN_ISSUER, subject="static-token", kind="static")

__all__ = ["IDENTITY_KEY", "STATIC_IDENTITY", "STATIC_TOKEN_ISSUER", "Identity"]
