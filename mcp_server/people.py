"""Who a call is for: the server's local user, or one signed-in person, kept apart.

A signed-in person is ``(issuer, subject)`` (:class:`~mcp_server.identity.Identity`). What the
server keeps for them is named by an opaque **person id**: the first 128 bits of a SHA-256 of
both, in hex. It is stable (the same on every replica and after restarts: budgets, ownership and
the bucket's prefix depend on it), safe in a path or a key, and says nothing of the issuer or the
subject by itself. Every prediction, image, sidecar and journal entry records the id of the
person who made it, and is answered only to them.

Everyone else is the **local** user (person id None): stdio, HTTP on loopback without a token,
and the static bearer token (``FLUX_MCP_AUTH_TOKEN``, the server owner's scripts). The local
user works exactly as before people could sign in: the output folder itself, the folders of
``FLUX_IMAGE_DIRS`` and the client's roots, the server's budget.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from flux_tools.kit import safe_stem

from .identity import Identity

#: Under the output folder (and the bucket's prefix), each person's own folder.
PEOPLE_FOLDER = "people"
#: How the local user is named where a name is needed (links, audit lines, rate shares).
LOCAL = "local"
_PERSON_ID = re.compile(r"^[0-9a-f]{32}$")


def person_id(identity: Identity) -> str:
    """The opaque id of the person ``identity`` proves (see the module)."""
    material = f"flux-mcp person\n{identity.issuer}\n{identity.subject}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def is_person_id(text: str) -> bool:
    return bool(_PERSON_ID.match(text))


@dataclass(frozen=True)
class Person:
    """The caller of one request: a signed-in person, or the local user."""

    #: The person id; None for the local user.
    id: str | None = None
    identity: Identity | None = None

    @classmethod
    def of(cls, identity: Identity | None) -> Person:
        """Who ``identity`` is: a person when an OAuth access token proved it."""
        if identity is None or identity.kind != "oauth":
            return cls(None, identity)
        return cls(person_id(identity), identity)

    @property
    def signed_in(self) -> bool:
        return self.id is not None

    @property
    def name(self) -> str:
        """The person id, or ``local``."""
        return self.id or LOCAL

    def folder(self, output_dir: Path) -> Path:
        """Where this person's images are saved: the output folder for the local user,
        ``<output folder>/people/<person id>`` for a signed-in person (an id read back from the
        state is made a safe name, as the bucket's prefix is: never a path of its own)."""
        return output_dir / PEOPLE_FOLDER / safe_stem(self.id) if self.id else output_dir

    def may_see(self, owner: str | None) -> bool:
        """Whether a prediction recorded as ``owner``'s (None: the local user's, or nobody
        recorded) is this caller's. A signed-in person sees only their own; the local user
        sees everything that is not a signed-in person's."""
        return owner == self.id


LOCAL_USER = Person()

__all__ = ["LOCAL", "LOCAL_USER", "PEOPLE_FOLDER", "Person", "is_person_id", "person_id"]
