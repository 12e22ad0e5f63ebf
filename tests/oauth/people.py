"""People signing in to one server, each through a real MCP client: what they call and read.

:func:`signed_in` signs a person in with the SDK's OAuth client (Dynamic Client Registration and
the provider's scripted login, as in test_sign_in.py) and yields a :class:`PersonClient`: tool
calls, ``resources/read`` and ``resources/list`` as wire-format dicts, under either SDK line and
either protocol era. :func:`person_id` is the server's name for a person, recomputed here from
its definition (not imported), so a change to it shows in the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..mcp.mcp_helpers import CALL_TIMEOUT, SDK_LINE, dump, free_port, text_of
from ..mcp.real_clients import Caller, Target, connect
from .oauth_helpers import MemoryStorage, SignIn, sdk_auth

#: An id of the form Replicate makes, which no prediction has.
UNKNOWN_ID = "zz0unknown0prediction0id00"


def person_id(issuer: str, subject: str) -> str:
    return hashlib.sha256(f"flux-mcp person\n{issuer}\n{subject}".encode()).hexdigest()[:32]


@dataclass
class PersonClient:
    """One person's connected client."""

    user: str
    caller: Caller
    sign_in: SignIn
    storage: MemoryStorage
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def token(self) -> str:
        """The access token the client holds for this person."""
        return str(self.storage.tokens.access_token)

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self.caller.call(name, arguments)
        self.results.append(result)
        return result

    async def read(self, uri: str) -> list[dict[str, Any]]:
        """The contents of ``uri``; raises the SDK's error when the server refuses."""
        client: Any = self.caller
        with anyio.fail_after(CALL_TIMEOUT):
            if SDK_LINE == 1:
                contents: list[dict[str, Any]] = await client.session.read_resource(uri)
                return contents
            result = await client.client.read_resource(uri)
        return [dump(c) for c in result.contents]

    async def read_error(self, uri: str) -> str:
        """The error message reading ``uri`` gets (fails the test if it is read)."""
        try:
            await self.read(uri)
        except Exception as exc:
            return str(exc)
        raise AssertionError(f"{self.user} could read {uri}")

    async def listed(self) -> list[str]:
        """The URIs resources/list names."""
        client: Any = self.caller
        with anyio.fail_after(CALL_TIMEOUT):
            if SDK_LINE == 1:
                result = await client.session.raw.list_resources()
            else:
                result = await client.client.list_resources()
        return [str(r.uri) for r in result.resources]


@contextlib.asynccontextmanager
async def signed_in(url: str, user: str, era: str, folder: Path) -> AsyncIterator[PersonClient]:
    """``user`` signed in (DCR, PKCE, the browser step) and connected in protocol ``era``."""
    sign_in = SignIn(user=user)
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    storage = MemoryStorage()
    auth = sdk_auth(url, sign_in, redirect_uri=redirect_uri, storage=storage)
    folder.mkdir(parents=True, exist_ok=True)
    target = Target("http", {}, folder, folder / f"{user}-client.log", url=url, auth=auth)
    async with connect("mcp", era, target) as caller:
        yield PersonClient(user, caller, sign_in, storage)


def same_words(a: str, b: str, *ids: str) -> bool:
    """Whether two refusals say the same, once the ids they name are set aside."""

    def plain(text: str) -> str:
        for ident in ids:
            text = text.replace(ident, "<id>")
        return re.sub(r"\s+", " ", text).strip()

    return plain(a) == plain(b)


def refusal(result: dict[str, Any]) -> str:
    assert result.get("isError"), text_of(result)
    return text_of(result)


__all__ = [
    "UNKNOWN_ID",
    "PersonClient",
    "person_id",
    "refusal",
    "same_words",
    "signed_in",
]
