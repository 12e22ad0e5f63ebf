"""Replicate's Files API: what the official clients upload when given a file as an input.

``POST /v1/files`` takes ``multipart/form-data`` with the bytes in ``content`` (and optional
``metadata`` JSON) and answers the file object, whose ``urls.get`` the client puts in the input.
The model fetches it from there; so does the emulator, from this store.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from ._state import Problem

_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RETENTION_SECONDS = 24 * 3600  # Replicate keeps uploads a day


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]
    created: float  # time.monotonic()


def parse_multipart(content_type: str, body: bytes) -> tuple[str, str, bytes, dict[str, Any]]:
    """(file name, content type, bytes, metadata) of an upload, or a 400/422 problem."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise Problem(
            400, f"Content-Type must be multipart/form-data, not {content_type or 'missing'}."
        )
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    content: tuple[str, str, bytes] | None = None
    metadata: dict[str, Any] = {}
    parts = message.iter_parts() if message.is_multipart() else iter(())
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "content":
            filename = str(part.get_filename() or "file")
            content = (filename, part.get_content_type(), data)
        elif name == "metadata" and data:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise _invalid("metadata", "Must be a JSON object")
            metadata = parsed
    if content is None:
        raise _invalid("content", "content is required")
    return content[0], content[1], content[2], metadata


def _invalid(field: str, description: str) -> Problem:
    fields = [{"type": "invalid", "field": field, "description": description}]
    return Problem(
        422, f"- {field}: {description}", "Input validation failed", invalid_fields=fields
    )


class Uploads:
    """The files uploaded to one emulator. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, Upload] = {}

    def add(
        self, name: str, content_type: str, data: bytes, metadata: dict[str, Any], now: float
    ) -> Upload:
        upload = Upload(
            id="".join(secrets.choice(_ID_ALPHABET) for _ in range(26)),
            name=name,
            content_type=content_type,
            data=data,
            metadata=metadata,
            created=now,
        )
        with self._lock:
            self._files[upload.id] = upload
        return upload

    def get(self, file_id: str) -> Upload | None:
        with self._lock:
            return self._files.get(file_id)

    def remove(self, file_id: str) -> bool:
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def newest_first(self) -> list[Upload]:
        with self._lock:
            return list(reversed(self._files.values()))


def file_doc(upload: Upload, *, api_base: str, stamp: Any) -> dict[str, Any]:
    """The file object as Replicate answers it (``stamp`` turns a monotonic time into ISO)."""
    return {
        "id": upload.id,
        "name": upload.name,
        "content_type": upload.content_type,
        "size": len(upload.data),
        "etag": hashlib.md5(upload.data).hexdigest(),  # an etag, not for security
        "checksums": {
            "sha256": hashlib.sha256(upload.data).hexdigest(),
            "md5": hashlib.md5(upload.data).hexdigest(),
        },
        "metadata": upload.metadata,
        "created_at": stamp(upload.created),
        "expires_at": stamp(upload.created + RETENTION_SECONDS),
        "urls": {"get": f"{api_base}/files/{upload.id}"},
    }
