"""Images in object storage (``FLUX_STORE_URL=s3://bucket/prefix``), readable by every replica.

The output folder stays the working copy (downloads land there, previews are made from there);
each saved image and its sidecar are then put in the bucket, under the prefix (and, once people
sign in, under their own prefix). A replica asked for an image it does not have fetches it from
the bucket into its folder. Clickable links are presigned GET URLs.

Library: ``obstore`` (the Rust ``object_store`` crate behind a small Python API): native async
calls, presigned URLs, one wheel with no dependency tree, any S3-compatible service; the
endpoint and credentials come from the usual ``AWS_*`` variables, read by the library itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from flux_tools import ConfigError
from flux_tools.kit import safe_stem, safe_text

from .store import SERVED_FORMATS, is_safe_stem, media_type, sidecar_of

logger = logging.getLogger("mcp_server")

#: How long a presigned link opens the image (S3's longest is 7 days).
LINK_SECONDS = 7 * 86400
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_store_url(text: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix); a ConfigError naming FLUX_STORE_URL."""
    value = text.strip()
    if not value.startswith("s3://"):
        raise ConfigError(
            f"FLUX_STORE_URL must be s3://BUCKET/PREFIX (any S3-compatible service; the endpoint "
            f"and keys come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), got {text!r}."
        )
    bucket, _, prefix = value[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ConfigError(f"FLUX_STORE_URL: {bucket!r} is not a valid bucket name.")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(f"FLUX_STORE_URL: the prefix {prefix!r} has an empty or dot segment.")
    return bucket, prefix


def owner_segment(owner: str | None) -> str:
    """Where one person's images go, under the prefix: ``people/<safe id>`` (none until sign-in
    exists: the owner is None)."""
    if not owner:
        return ""
    return f"people/{safe_stem(owner)}"


class ObjectImages:
    """Saved images and sidecars in a bucket (see the module)."""

    def __init__(self, url: str) -> None:
        self.bucket, self.prefix = parse_store_url(url)
        try:
            from obstore.store import S3Store
        except ImportError as exc:
            raise ConfigError(
                f"FLUX_STORE_URL needs obstore ({exc.name or exc}): "
                "pip install 'flux-tools[server]'."
            ) from None
        # The endpoint, region and keys come from the AWS_* variables (read by obstore); plain
        # http is allowed for an endpoint the operator configured so (a service on a private
        # network, SeaweedFS in the tests).
        self._store: Any = S3Store(
            self.bucket, prefix=self.prefix or None, client_options={"allow_http": True}
        )
        self.description = f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, name: str, owner: str | None = None) -> str:
        folder = owner_segment(owner)
        return f"{folder}/{name}" if folder else name

    def uri(self, name: str, owner: str | None = None) -> str:
        return f"{self.description}/{self.key(name, owner)}"

    async def put(self, files: Sequence[Path], owner: str | None = None) -> None:
        """Put each image and its sidecar (``<image>.json``) in the bucket."""
        import obstore

        for path in files:
            for item, media in ((path, media_type(path)), (sidecar_of(path), "application/json")):
                data = await anyio.Path(item).read_bytes()
                await obstore.put_async(
                    self._store,
                    self.key(item.name, owner),
                    data,
                    attributes={"Content-Type": media},
                )

    async def fetch(self, prediction_id: str, folder: Path, owner: str | None = None) -> list[Path]:
        """The images of ``prediction_id`` in the bucket, copied into ``folder`` (with their
        sidecars); [] when there are none."""
        import obstore

        stem = safe_stem(prediction_id)
        prefix = self.key(stem, owner)
        pattern = re.compile(rf"^{re.escape(stem)}(?:[-_]\d+)?\.(?:png|jpg|webp|gif)$")
        found: list[Path] = []
        listing = await obstore.list(self._store, prefix=prefix).collect_async()
        for meta in listing:
            name = str(meta["path"]).rsplit("/", 1)[-1]
            if pattern.match(name):
                found.append(await self._copy(name, folder, owner))
                await self._copy(name + ".json", folder, owner, missing_ok=True)
        return sorted(found)

    async def fetch_one(self, name: str, folder: Path, owner: str | None = None) -> Path | None:
        """One image by its file name, copied into ``folder``; None when the bucket has none."""
        try:
            path = await self._copy(name, folder, owner)
        except FileNotFoundError:
            return None
        await self._copy(name + ".json", folder, owner, missing_ok=True)
        return path

    async def _copy(
        self, name: str, folder: Path, owner: str | None, *, missing_ok: bool = False
    ) -> Path:
        import obstore

        try:
            answer = await obstore.get_async(self._store, self.key(name, owner))
        except FileNotFoundError:
            if missing_ok:
                return folder / name
            raise
        data = bytes(await answer.bytes_async())
        target = folder / name
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{name}.part"
        await anyio.Path(temporary).write_bytes(data)
        await anyio.Path(temporary).replace(target)
        return target

    async def read(self, name: str, owner: str | None = None) -> bytes | None:
        """One image's bytes by file name (for a link), None when the bucket has none."""
        import obstore

        try:
            answer = await obstore.get_async(self._store, self.key(name, owner))
        except FileNotFoundError:
            return None
        return bytes(await answer.bytes_async())

    async def list_images(self, owner: str | None, most: int) -> list[tuple[str, int]]:
        """The images of ``owner`` in the bucket: (file name, size), newest first."""
        import obstore

        folder = owner_segment(owner)
        listing = await obstore.list(self._store, prefix=folder or None).collect_async()
        found = []
        for meta in listing:
            path = str(meta["path"])
            parent, _, name = path.rpartition("/")
            stem, _, extension = name.rpartition(".")
            mine = parent == folder or parent.endswith(f"/{folder}")
            if not mine or extension not in SERVED_FORMATS or not is_safe_stem(stem):
                continue
            found.append((meta["last_modified"], name, int(meta["size"])))
        found.sort(reverse=True)
        return [(name, size) for _, name, size in found[:most]]

    async def links(self, names: Sequence[str], owner: str | None = None) -> list[str]:
        """Presigned GET URLs of the images, valid :data:`LINK_SECONDS`."""
        import obstore

        if not names:
            return []
        keys = [self.key(name, owner) for name in names]
        signed = await obstore.sign_async(self._store, "GET", keys, timedelta(seconds=LINK_SECONDS))
        return [str(url) for url in signed]

    async def ping(self) -> None:
        """Raise when the bucket cannot be listed (readiness)."""
        import obstore

        stream = obstore.list(self._store, prefix=self.key("-"), chunk_size=1)
        await stream.collect_async()

    def __repr__(self) -> str:
        return f"ObjectImages({safe_text(self.description, 300)!r})"
