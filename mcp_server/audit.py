"""The audit log: one JSON line per create (and cancel), for a team to keep.

Each line says when, who (the person id, and the issuer, subject and OAuth client their token
named; ``local`` for the server's own user), what (the tool, the prediction id, the model, the
estimated cost in USD) and where (the replica). Nothing secret: no token (neither the person's
nor the server's API token), no prompt. The line goes to the logger ``mcp_server.audit`` (INFO)
and, with ``FLUX_MCP_AUDIT_LOG``, is appended to that file: opened with ``O_APPEND`` (each line
is one ``write``, so lines from several processes never interleave on a local disk), created
``0600``, and flushed to disk (``fsync``) before the call goes on. Replicas each write their own
file (or share one on a local disk); each line names its replica.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import anyio.to_thread

from .people import Person

logger = logging.getLogger("mcp_server.audit")
#: What tells one replica's lines from another's: host and process.
REPLICA = f"{socket.gethostname()}:{os.getpid()}"


class AuditLog:
    """Writes audit lines (see the module). ``path`` None: the logger only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def check(self) -> None:
        """Open the file once, at start: a path that cannot be written stops the server."""
        if self.path is not None:
            os.close(self._open())

    def _open(self) -> int:
        assert self.path is not None
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        return os.open(self.path, flags, 0o600)

    def _append(self, line: bytes) -> None:
        fd = self._open()
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def record(self, event: str, person: Person, **facts: Any) -> None:
        """One line: ``event`` (``create``, ``cancel``) by ``person``, with ``facts``."""
        identity = person.identity if person.signed_in else None
        now = time.time()
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now * 1000) % 1000:03d}Z",
            "event": event,
            "person": person.name,
            "issuer": identity.issuer if identity else None,
            "subject": identity.subject if identity else None,
            "client_id": identity.client_id if identity else None,
            **facts,
            "replica": REPLICA,
        }
        text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
        logger.info("%s", text)
        if self.path is None:
            return
        try:
            await anyio.to_thread.run_sync(self._append, (text + "\n").encode())
        except OSError as exc:  # the create happened: it is logged above, whatever the file
            logging.getLogger("mcp_server").error(
                "could not append to the audit log %s: %s", self.path, exc.strerror or exc
            )


__all__ = ["REPLICA", "AuditLog"]
