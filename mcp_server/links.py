"""Links a person can click to open their image: served by this server, signed, expiring.

A remote person cannot open the server's files, and the provider's URL dies within the hour. So,
when the server has a public URL (``FLUX_MCP_PUBLIC_URL``), each result also carries a link on
that URL's origin::

    https://images.example.com/images/<person id>/<file name>?exp=<unix time>&sig=<signature>

- **Signed**: ``sig`` is an HMAC-SHA256, under the server's key ``FLUX_MCP_LINK_SECRET``, of the
  person id, the file name and the expiry together. A link opens that one image of that one
  person until then, and nothing else: changing any part breaks the signature. It is compared in
  constant time. Without a configured key, a random one is made at start (links then break when
  the process restarts, and replicas cannot open each other's: they need the same key).
- **Expiring**: after ``FLUX_MCP_LINK_TTL`` (7 days by default) it answers 410 Gone.
- **No token in it**: a browser's click carries no OAuth token, so ``/images/`` is served before
  (outside) the OAuth check; the signature is the only credential, and it grants one image.
- **No redirect**: the image is read from the person's folder, or from the bucket with
  ``FLUX_STORE_URL``, and sent with its Content-Type, ``Content-Disposition: inline`` with its
  file name, ``nosniff``, a strict CSP, ``Referrer-Policy: no-referrer`` and a private cache
  lifetime no longer than the link's.

Refusals say what to do, and never whether the image exists (a bad signature is checked first).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from .ops import ASGIApp, Receive, Scope, Send, respond
from .people import LOCAL
from .store import SERVED_FORMATS

logger = logging.getLogger("mcp_server")


#: Where links are served, on the origin of FLUX_MCP_PUBLIC_URL.
LINK_PATH = "/images/"
#: What the signature covers, first: a key signs nothing else of this server with the same text.
_DOMAIN = b"flux-mcp image link v1"
_PATH = re.compile(
    r"^/images/(?P<person>local|[0-9a-f]{32})/"
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,199}\.(?P<ext>png|jpg|webp))$"
)
_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_EXPIRES = re.compile(r"^[1-9][0-9]{0,11}$")
#: Longest a browser may keep an image it opened (or the link's own lifetime, if shorter).
MAX_CACHE_SECONDS = 86400
CHUNK = 64 * 1024


@dataclass(frozen=True)
class ImageBody:
    """An image to send: its size (when known) and its bytes, chunk by chunk."""

    size: int | None
    chunks: AsyncIterator[bytes]


#: Reads one image of one person (None: the local user) by file name; None when there is none.
ImageReader = Callable[[str | None, str], Awaitable[ImageBody | None]]


class LinkRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class LinkSigner:
    """Makes and checks the links of one server (see the module)."""

    def __init__(
        self,
        public_url: str,
        secret: str | None,
        ttl: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(public_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.ttl = ttl
        self.ephemeral = secret is None
        self._key = secret.encode() if secret is not None else secrets.token_bytes(32)
        self._clock = clock

    def _sign(self, person: str, name: str, expires: int) -> str:
        message = b"\n".join((_DOMAIN, person.encode(), name.encode(), str(expires).encode()))
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, owner: str | None, name: str) -> str:
        """The link to ``name``, an image of ``owner`` (None: the local user)."""
        person = owner or LOCAL
        expires = int(self._clock() + self.ttl)
        signature = self._sign(person, name, expires)
        return f"{self.origin}{LINK_PATH}{person}/{name}?exp={expires}&sig={signature}"

    def check(self, path: str, query: str) -> tuple[str | None, str]:
        """The owner (None: the local user) and file name a link opens; raises LinkRefused."""
        invalid = LinkRefused(
            403,
            "This link is not valid (it was changed, or made by another server). Ask for the "
            "image again (get_prediction with its prediction id) for a new link.",
        )
        match = _PATH.match(path)
        try:
            fields = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise invalid from None
        expires_text, signature = fields.get("exp", []), fields.get("sig", [])
        if match is None or len(expires_text) != 1 or len(signature) != 1 or len(fields) != 2:
            raise invalid
        if not _EXPIRES.match(expires_text[0]):  # one spelling only: no sign, no leading 0
            raise invalid
        if not _SIGNATURE.match(signature[0]):
            raise invalid
        person, name, expires = match["person"], match["name"], int(expires_text[0])
        expected = self._sign(person, name, expires)
        if not hmac.compare_digest(expected.encode(), signature[0].encode()):
            raise invalid
        if expires < self._clock():
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
            raise LinkRefused(
                410,
                f"This link expired on {stamp}. Ask for the image again (get_prediction with its "
                "prediction id) for a new link.",
            )
        return (None if person == LOCAL else person), name

    def expires_in(self, query: str) -> float:
        """Seconds the (checked) link in ``query`` stays valid."""
        expires = int(parse_qs(query)["exp"][0])
        return max(0.0, expires - self._clock())


class ImageLinks:
    """ASGI middleware: ``GET``/``HEAD /images/...`` answered from a link (see the module),
    before any authentication; everything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, signer: LinkSigner, reader: ImageReader) -> None:
        self._app = app
        self._signer = signer
        self._reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(LINK_PATH):
            await self._app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            allow = [(b"allow", b"GET, HEAD")]
            await _plain(send, 405, "Links to images are opened with GET.", allow)
            return
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        try:
            owner, name = self._signer.check(path, query)
        except LinkRefused as refused:
            logger.info("refused a link to an image: %s", refused.status)
            await _plain(send, refused.status, refused.message)
            return
        try:
            body = await self._reader(owner, name)
        except Exception as exc:
            logger.warning("could not read %s for a link: %r", name, exc)
            await _plain(send, 503, "The image cannot be read right now; try again in a moment.")
            return
        if body is None:
            await _plain(
                send,
                404,
                "This image is no longer kept on this server. Ask for it again (get_prediction "
                "with its prediction id).",
            )
            return
        ext = name.rsplit(".", 1)[-1]
        cache = min(MAX_CACHE_SECONDS, int(self._signer.expires_in(query)))
        headers = [
            (b"content-type", SERVED_FORMATS[ext].encode()),
            (b"content-disposition", f'inline; filename="{name}"'.encode()),
            (b"cache-control", f"private, max-age={cache}, immutable".encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", b"default-src 'none'; img-src 'self'; sandbox"),
        ]
        if body.size is not None:
            headers.append((b"content-length", str(body.size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        async for chunk in body.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _plain(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    safe = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    data = (text + "\n").encode()
    await respond(send, status, data, "text/plain; charset=utf-8", [*safe, *(headers or [])])


__all__ = ["LINK_PATH", "ImageBody", "ImageLinks", "ImageReader", "LinkRefused", "LinkSigner"]
