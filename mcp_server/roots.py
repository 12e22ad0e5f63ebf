"""The client's roots (``roots/list``) as folders local input images may be read from.

A client declares roots for the folders the user opened (a project in Claude Code or an IDE):
images there may be edited by path without further configuration. Only local ``file:`` roots
count; anything else is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname


def root_folders(uris: Iterable[str]) -> list[Path]:
    """The local folders named by ``file:`` root URIs (others are skipped)."""
    folders = []
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            continue
        path = Path(url2pathname(parts.path))  # percent-decoding; drive letters on Windows
        if path.is_absolute():
            folders.append(path)
    return folders
