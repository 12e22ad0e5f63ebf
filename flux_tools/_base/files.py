"""Files written whole or not at all: a reader never sees half a file, a crash leaves the old one.

:func:`write_text_atomic` for small records (the journal, learned durations, sidecars) and
:class:`AtomicFile` for a downloaded image (created exclusively, never through a link).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from .errors import ConfigError, DownloadError
from .media import image_type
from .text import safe_text


class AtomicFile:
    """Collects one output in a hidden temporary file beside its target, then renames it.

    The temporary file is created exclusively and without following links; the target is
    checked to be inside the folder. A reader never sees half a file, and a failed download
    leaves nothing behind.
    """

    def __init__(self, directory: Path, stem: str, max_bytes: int, source: str) -> None:
        self._directory, self._stem, self.max_bytes, self._source = (
            directory,
            stem,
            max_bytes,
            source,
        )
        self.size = 0
        self._head = b""
        self._temp = directory / f".{stem}.{secrets.token_hex(4)}.part"
        # Opened on the first write (in the async path: in the worker thread, and an object
        # that exists before any file does, so a cancellation cannot leak a .part file).
        self._fd: int | None = None
        self._opened = False

    def _open(self) -> int:
        if self._fd is None:
            if self._opened:
                raise DownloadError(f"{self._source}: the file was already closed")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            self._fd = os.open(self._temp, flags | getattr(os, "O_BINARY", 0), 0o666)
            self._opened = True
        return self._fd

    def accept(self, chunk: bytes) -> None:
        """Count a chunk against the cap (raises when over) without writing it."""
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise DownloadError(
                f"{self._source} is larger than the {self.max_bytes} bytes allowed; not saved."
            )
        if len(self._head) < 16:
            self._head += chunk[: 16 - len(self._head)]

    def write(self, chunk: bytes) -> None:
        self.accept(chunk)
        self.write_accepted(chunk)

    def write_accepted(self, data: bytes) -> None:
        fd = self._open()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def finish(self, content_type: str | None) -> Path:
        ext = image_type(self._head)
        if ext is None:
            typed = f", Content-Type {safe_text(content_type, 60)!r}" if content_type else ""
            raise DownloadError(
                f"{self._source} is not an image ({self.size} bytes starting "
                f"{safe_text(repr(self._head[:8]), 40)}{typed}); not saved."
            )
        fd = self._open()
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        target = self._directory / f"{self._stem}.{ext}"
        # The folder is resolved and the name is ours: the target cannot be elsewhere. A link
        # planted at the name is replaced (rename does not follow it), never written through.
        if Path(os.path.abspath(target)).parent != self._directory:
            raise DownloadError(f"refusing to write {target.name} outside {self._directory}")
        os.replace(self._temp, target)
        return target

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._temp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``target`` whole or not at all: a temporary file beside it, then a
    rename (a reader never sees half a file; a crash leaves the old one). ``durable``: synced
    to disk before the rename. The folder must exist; raises :class:`OSError`."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


#: What :func:`check_writable` writes (and removes): enough that a full disk refuses it.
PROBE_BYTES = 4096


def check_writable(folder: Path, flag: str = "--out") -> None:
    """Make sure ``folder`` (made if missing) takes a file: write a small hidden one, sync it,
    remove it. Raises :class:`ConfigError` in one line (a read-only file system, no space left,
    no permission) before anything is paid for that could not be saved."""
    name: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, prefix=".flux-tools-probe-", suffix=".part")
        try:
            view = memoryview(b"\0" * PROBE_BYTES)
            while view:
                view = view[os.write(handle, view) :]
            os.fsync(handle)
        finally:
            os.close(handle)
    except OSError as exc:
        raise ConfigError(
            f"{flag} {folder} cannot be written: {exc.strerror or exc}. Nothing was sent: "
            "choose a folder that can be written and has free space."
        ) from None
    finally:
        if name is not None:
            Path(name).unlink(missing_ok=True)


__all__ = ["PROBE_BYTES", "AtomicFile", "check_writable", "write_text_atomic"]
