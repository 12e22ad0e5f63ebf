"""Downloading outputs to disk: streamed, size-capped, typed by their bytes, written atomically.

Provider URLs expire (Replicate deletes outputs after about an hour, BFL's links after ten
minutes), so front ends save at once. The extension comes from the file's magic bytes, then its
Content-Type, never from the request: a URL ending in ``.png`` may well hold WebP.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import unquote_to_bytes, urlsplit

import anyio
import httpx2

from ._exceptions import FluxError

#: Largest output accepted. FLUX images are a few MB; anything far larger is not an image.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
CHUNK = 64 * 1024

_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),  # RIFF....WEBP
]
_CONTENT_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}


class DownloadError(FluxError):
    """An output could not be downloaded or saved. ``transient`` failures were retried."""

    transient: bool = False


def sniff_extension(head: bytes, content_type: str | None = None, url: str | None = None) -> str:
    """The file extension of an image: from its first bytes, else its type, else its URL."""
    for magic, offset, ext in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (ext != "webp" or head[:4] == b"RIFF"):
            return ext
    if content_type:
        typed = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
        if typed:
            return typed
    if url and not url.startswith("data:"):
        suffix = Path(urlsplit(url).path).suffix.lower().lstrip(".")
        if suffix in ("png", "jpg", "jpeg", "webp", "gif"):
            return "jpg" if suffix == "jpeg" else suffix
    return "bin"


def decode_data_uri(uri: str) -> tuple[bytes, str | None]:
    """The bytes and media type of a ``data:`` URI (decoded locally: no request is made)."""
    header, sep, payload = uri.partition(",")
    if not header.startswith("data:") or not sep:
        raise DownloadError("malformed data: URI (expected data:<type>;base64,<data>)")
    media_type = header[5:].split(";")[0] or None
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=False), media_type
        return unquote_to_bytes(payload), media_type
    except (binascii.Error, ValueError) as exc:
        raise DownloadError(f"undecodable data: URI ({exc})") from None


class _AtomicFile:
    """Collects one output in a hidden temporary file beside its target, then renames it.

    A reader never sees half a file, and a failed download leaves nothing behind.
    """

    def __init__(self, directory: Path, stem: str, max_bytes: int, source: str) -> None:
        self._directory, self._stem, self.max_bytes, self._source = (
            directory,
            stem,
            max_bytes,
            source,
        )
        self._size = 0
        self._head = b""
        self._file: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finish/abort
            dir=directory, prefix=f".{stem}.", suffix=".part", delete=False
        )

    def write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.max_bytes:
            raise DownloadError(
                f"{self._source} is larger than the {self.max_bytes} bytes allowed."
            )
        if len(self._head) < 16:
            self._head += chunk[: 16 - len(self._head)]
        self._file.write(chunk)

    def finish(self, content_type: str | None, url: str) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target = self._directory / f"{self._stem}.{sniff_extension(self._head, content_type, url)}"
        os.replace(self._file.name, target)
        return target

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        Path(self._file.name).unlink(missing_ok=True)


def _stems(urls: list[str], stem: str) -> list[str]:
    return [stem] if len(urls) == 1 else [f"{stem}-{i}" for i in range(len(urls))]


def _describe(url: str) -> str:
    return "a data: URI output" if url.startswith("data:") else f"output {urlsplit(url).path}"


def _check_response(url: str, response: httpx2.Response, limit: int) -> None:
    if response.status_code >= 400:
        raise _http_failure(url, response)
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        # Refuse before reading a byte of it.
        raise DownloadError(
            f"{_describe(url)} is {int(declared)} bytes, more than the {limit} allowed; not saved."
        )


def _http_failure(url: str, response: httpx2.Response) -> DownloadError:
    if response.status_code in (404, 410):
        return DownloadError(
            f"{_describe(url)} is gone (HTTP {response.status_code}): provider URLs expire "
            "(Replicate deletes outputs after about an hour). Generate the image again."
        )
    error = DownloadError(f"downloading {_describe(url)} failed: HTTP {response.status_code}")
    error.transient = response.status_code in (429, 500, 502, 503, 504)
    return error


#: Attempts per output; only transient failures (connection, 429, 5xx) are tried again.
DOWNLOAD_ATTEMPTS = 3


def _retry_delay(attempt: int, error: DownloadError) -> float | None:
    if not error.transient or attempt + 1 >= DOWNLOAD_ATTEMPTS:
        return None
    return 0.5 * 2.0**attempt


def _prepare(directory: Path, urls: list[str], max_bytes: int | None) -> int:
    if not urls:
        raise DownloadError("there is nothing to save: the result has no output URL")
    directory.mkdir(parents=True, exist_ok=True)
    return max_bytes or DEFAULT_MAX_BYTES


def _save_data_uri(url: str, sink: _AtomicFile) -> Path:
    data, media_type = decode_data_uri(url)
    sink.write(data)
    return sink.finish(media_type, url)


def _transport_failure(url: str, exc: httpx2.HTTPError) -> DownloadError:
    error = DownloadError(f"downloading {_describe(url)} failed: {type(exc).__name__} {exc}")
    error.transient = isinstance(exc, httpx2.TransportError)
    return error


def _fetch(client: httpx2.Client, url: str, sink: _AtomicFile, auth: httpx2.Auth | None) -> Path:
    if url.startswith("data:"):
        return _save_data_uri(url, sink)
    try:
        with client.stream("GET", url, auth=auth, follow_redirects=True) as response:
            _check_response(url, response, sink.max_bytes)
            for chunk in response.iter_bytes(CHUNK):
                sink.write(chunk)
            return sink.finish(response.headers.get("content-type"), url)
    except httpx2.HTTPError as exc:
        raise _transport_failure(url, exc) from None


async def _afetch(
    client: httpx2.AsyncClient, url: str, sink: _AtomicFile, auth: httpx2.Auth | None
) -> Path:
    if url.startswith("data:"):
        return _save_data_uri(url, sink)
    try:
        async with client.stream("GET", url, auth=auth, follow_redirects=True) as response:
            _check_response(url, response, sink.max_bytes)
            async for chunk in response.aiter_bytes(CHUNK):
                sink.write(chunk)
            return sink.finish(response.headers.get("content-type"), url)
    except httpx2.HTTPError as exc:
        raise _transport_failure(url, exc) from None


def save_outputs(
    urls: list[str],
    directory: Path,
    *,
    stem: str,
    http: httpx2.Client | None = None,
    auth: httpx2.Auth | None = None,
    max_bytes: int | None = None,
) -> list[Path]:
    """Download each URL (or decode each data: URI) into ``directory``; return the paths."""
    limit = _prepare(directory, urls, max_bytes)
    client = http or httpx2.Client(timeout=60)
    try:
        paths = []
        for url, name in zip(urls, _stems(urls, stem), strict=True):
            for attempt in range(DOWNLOAD_ATTEMPTS):
                sink = _AtomicFile(directory, name, limit, _describe(url))
                try:
                    paths.append(_fetch(client, url, sink, auth))
                    break
                except DownloadError as error:
                    sink.abort()
                    delay = _retry_delay(attempt, error)
                    if delay is None:
                        raise
                    time.sleep(delay)
                except BaseException:
                    sink.abort()
                    raise
        return paths
    finally:
        if http is None:
            client.close()


async def asave_outputs(
    urls: list[str],
    directory: Path,
    *,
    stem: str,
    http: httpx2.AsyncClient | None = None,
    auth: httpx2.Auth | None = None,
    max_bytes: int | None = None,
) -> list[Path]:
    """Async twin of :func:`save_outputs`: the same steps, with awaited reads."""
    limit = _prepare(directory, urls, max_bytes)
    client = http or httpx2.AsyncClient(timeout=60)
    try:
        paths = []
        for url, name in zip(urls, _stems(urls, stem), strict=True):
            for attempt in range(DOWNLOAD_ATTEMPTS):
                sink = _AtomicFile(directory, name, limit, _describe(url))
                try:
                    paths.append(await _afetch(client, url, sink, auth))
                    break
                except DownloadError as error:
                    sink.abort()
                    delay = _retry_delay(attempt, error)
                    if delay is None:
                        raise
                    await anyio.sleep(delay)
                except BaseException:
                    sink.abort()
                    raise
        return paths
    finally:
        if http is None:
            await client.aclose()
