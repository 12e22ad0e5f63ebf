"""What the tools return: text for the model, structured content, resource links, a preview.

The whole result must stay under 1 MiB (Claude Desktop replaces anything larger), image bytes go
only in image blocks (Claude Code counts base64 in text or ``structuredContent`` as text), and the
text alone must be enough: some clients show images only to the user, or accept only text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field

from flux_tools import PreviewError, Running, Timings
from flux_tools.kit import DEFAULT_PREVIEW_BYTES as DEFAULT_MAX_BYTES
from flux_tools.kit import Preview, make_preview, result_text, resume_step, running_text, safe_text

from . import _sdk
from .store import media_type, resource_uri
from .viewer import META_KEY

#: ``clientInfo.name`` of LangChain's MCP paths: ``langchain-mcp-adapters`` runs the Python SDK's
#: ``ClientSession``, which sends the SDK's default name ``mcp`` (so does any script on that SDK
#: that sets none); ``langchain.mcp`` runs fastmcp's ``Client`` (``fastmcp``). Both hand every
#: block to the chat model: an image block (OpenAI's chat API takes none in tool messages) and
#: a resource link, which becomes an image with a ``flux://`` URL no provider can fetch.
TEXT_ONLY_CLIENTS = frozenset({"mcp", "fastmcp"})
EVERYTHING = frozenset({"text", "links", "preview"})

logger = logging.getLogger("mcp_server")

#: Claude Desktop's limit for one tool result.
RESULT_LIMIT = 1_048_576
#: Room for the JSON-RPC envelope and for serializers that escape more than ours.
RESULT_MARGIN = 32 * 1024
#: Below this, a preview would be a smudge: send none.
MIN_PREVIEW_BYTES = 12_000


class ImageResult(BaseModel):
    """The structured content of every tool of this server (its declared output schema)."""

    model_config = ConfigDict(title="ImageResult")

    status: str = Field(
        description="succeeded: the images are saved. starting or processing: not finished yet, "
        "call get_prediction with prediction_id. canceled, failed, aborted: no image."
    )
    prediction_id: str = Field(
        description="The prediction's id, for get_prediction and cancel_prediction; once it "
        "has succeeded, also the image to pass to edit_image to edit this result further."
    )
    model: str = Field(description="The model that made (or is making) the image.")
    urls: list[str] = Field(
        default_factory=list,
        description="Provider URLs of the images. They expire (about an hour): prefer files.",
    )
    files: list[str] = Field(
        default_factory=list,
        description="Where the saved images are: absolute paths, or s3:// URIs when the server "
        "keeps them in object storage.",
    )
    links: list[str] = Field(
        default_factory=list,
        description="Links that open the saved images in a browser (expiring), when the server "
        "has them.",
    )
    resource_uris: list[str] = Field(
        default_factory=list,
        description="flux://images/... URIs: the saved images, readable as MCP resources.",
    )
    seed: int | None = Field(default=None, description="Seed used; reuse it to reproduce.")
    timings: Timings = Field(
        default_factory=Timings,
        description="Seconds spent queued, running the model, and in all (when known).",
    )
    next_step: str | None = Field(
        default=None, description="What to do next, when the image is not ready yet."
    )
    cost: float | None = Field(default=None, description="Estimated cost, USD.")


@dataclass
class Finished:
    """A succeeded prediction whose images are saved, however we learned about it."""

    prediction_id: str
    model: str
    urls: list[str]
    files: list[Path]
    seed: int | None = None
    timings: Timings = field(default_factory=Timings)
    prompt: str | None = None
    #: Made by editing an input image, rather than from the prompt alone.
    edited: bool = False
    #: A last line saying how to go on (e.g. how to edit this result).
    follow_up: str | None = None
    #: The estimated cost in USD (the model's price), when known.
    cost: float | None = None
    #: Where the images are kept when not (only) in ``files``: ``s3://bucket/key`` each.
    stored: list[str] = field(default_factory=list)
    #: Links a person can open (this server's signed links, or presigned ones), valid for
    #: ``link_seconds``.
    links: list[str] = field(default_factory=list)
    link_seconds: float = 0.0


@dataclass
class _Shown:
    """What the result's text says of a Finished: where the images are kept."""

    prediction_id: str
    model: str
    urls: list[str]
    files: list[Path]
    seed: int | None
    timings: Timings


def _shown(done: Finished) -> Finished | _Shown:
    if not done.stored:
        return done
    stored: list[Any] = list(done.stored)  # shown as they are: URIs, not paths
    return _Shown(done.prediction_id, done.model, done.urls, stored, done.seed, done.timings)


def _describe(seconds: float | None) -> str:
    return f" in {seconds:.1f} s" if seconds is not None else ""


def _lifetime(seconds: float) -> str:
    """``7 days``, ``12 hours``, ``30 minutes``, ``20 seconds``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size, 1)
            return f"{count:g} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} seconds"


def finished_text(done: Finished, *, previews: int) -> str:
    """The core's result text, with what only this server has: resource URIs, the preview,
    how to go on editing."""
    extra = []
    if previews:
        extra.append("A downscaled preview is attached; the full-size image is the saved file.")
    for index, link in enumerate(done.links, 1):
        label = "Link" if len(done.links) == 1 else f"Link {index}"
        extra.append(f"{label} to open it (expires in {_lifetime(done.link_seconds)}): {link}")
    if done.follow_up:
        extra.append(done.follow_up)
    return result_text(
        _shown(done),
        verb="Edited" if done.edited else "Generated",
        resources=[resource_uri(p) for p in done.files],
        extra=extra,
    )


def finished_structured(done: Finished) -> dict[str, object]:
    return ImageResult(
        status="succeeded",
        prediction_id=done.prediction_id,
        model=done.model,
        urls=[u for u in done.urls if not u.startswith("data:")],
        files=list(done.stored) or [str(p) for p in done.files],
        links=list(done.links),
        resource_uris=[resource_uri(p) for p in done.files],
        seed=done.seed,
        timings=done.timings,
        cost=done.cost,
    ).model_dump(mode="json")


def _links(done: Finished) -> list[_sdk.ResourceLink]:
    about = f"Full-size image of prediction {done.prediction_id}"
    if done.prompt:
        prompt = done.prompt if len(done.prompt) <= 200 else done.prompt[:199] + "…"
        about += f": {prompt}"
    return [
        _sdk.resource_link(
            resource_uri(path),
            name=path.name,
            mime_type=media_type(path),
            size=path.stat().st_size,
            description=about,
        )
        for path in done.files
    ]


def content_parts(setting: str, client: _sdk.ClientInfo | None = None) -> frozenset[str]:
    """What a result carries (FLUX_MCP_CONTENT): ``text`` always, ``links``, ``preview``.

    ``auto``: text only for LangChain's MCP clients (:data:`TEXT_ONLY_CLIENTS`), so that nothing
    reaches an OpenAI or Anthropic chat model that it rejects; everything for the others
    (Claude, IDEs, MCP App hosts), which show the preview and open the links.
    """
    if setting != "auto":
        return frozenset(setting.split("+")) | {"text"}
    client = client if client is not None else _sdk.calling_client()
    return frozenset({"text"}) if client.name in TEXT_ONLY_CLIENTS else EVERYTHING


def viewer_meta(done: Finished) -> dict[str, object]:
    """What the MCP App viewer needs and the result does not say (``_meta``: no model sees it)."""
    return {META_KEY: {"prompt": done.prompt, "edited": done.edited}}


async def finished_result(
    done: Finished, *, preview_side: int, content: str = "auto"
) -> _sdk.CallToolResult:
    """Text, structured content and resource links; then previews in what is left of 1 MiB.

    ``content`` (FLUX_MCP_CONTENT) leaves out the links or the previews: see content_parts.
    """
    parts = content_parts(content)
    structured = finished_structured(done)
    links = _links(done) if "links" in parts else []
    meta = viewer_meta(done)
    want_previews = preview_side > 0 and "preview" in parts
    text = _sdk.text_content(finished_text(done, previews=len(done.files) if want_previews else 0))
    bare = _sdk.tool_result([text, *links], structured, meta)
    if not want_previews:
        return bare

    # base64 turns 3 bytes into 4; each image block adds a few dozen bytes of JSON.
    room = (RESULT_LIMIT - RESULT_MARGIN - _sdk.wire_size(bare)) * 3 // 4
    per_image = min(DEFAULT_MAX_BYTES, room // max(1, len(done.files)) - 200)
    if per_image < MIN_PREVIEW_BYTES:
        logger.warning("no room left for a preview in the tool result; sending none")
        return _without_preview_note(done, structured, links, meta)
    previews = await _previews(done.files, preview_side, per_image)
    if not previews:
        return _without_preview_note(done, structured, links, meta)
    images = [_sdk.image_content(p.data, p.mime_type) for p in previews]
    text = _sdk.text_content(finished_text(done, previews=len(previews)))
    result = _sdk.tool_result([text, *links, *images], structured, meta)
    if _sdk.wire_size(result) > RESULT_LIMIT - RESULT_MARGIN:  # cannot happen; never risk it
        logger.warning("the result with previews would exceed 1 MiB; sending none")
        return _without_preview_note(done, structured, links, meta)
    return result


def _without_preview_note(
    done: Finished,
    structured: dict[str, object],
    links: Sequence[_sdk.ResourceLink],
    meta: dict[str, object],
) -> _sdk.CallToolResult:
    return _sdk.tool_result(
        [_sdk.text_content(finished_text(done, previews=0)), *links], structured, meta
    )


async def _previews(files: Sequence[Path], side: int, max_bytes: int) -> list[Preview]:
    previews = []
    for path in files:
        try:
            preview = await anyio.to_thread.run_sync(
                lambda p=path: make_preview(p, max_side=side, max_bytes=max_bytes)  # type: ignore[misc]
            )
        except PreviewError as exc:
            logger.warning("no preview: %s", exc)
            continue
        previews.append(preview)
    return previews


def pending_result(
    running: Running, *, model: str, budget: float, cancel_after: float
) -> _sdk.CallToolResult:
    """The wait budget ran out: a normal result that says how to resume (the core's words, and
    this server's wait budget and ``Cancel-After``)."""
    step = resume_step(running.prediction_id, resume="get_prediction", cancel="cancel_prediction")
    text = (
        running_text(running, resume="get_prediction", cancel="cancel_prediction")
        + f" This server waits at most {budget:g} s per call, to stay within the client's time "
        f"limit. Unless it finishes, it is canceled {cancel_after / 60:.0f} minutes after it "
        "was created."
    )
    structured = ImageResult(
        status=safe_text(running.status, 40),
        prediction_id=safe_text(running.prediction_id, 100),
        model=safe_text(model, 100),
        next_step=step,
    ).model_dump(mode="json")
    return _sdk.tool_result([_sdk.text_content(text)], structured)


def state_result(*, prediction_id: str, model: str, status: str, text: str) -> _sdk.CallToolResult:
    structured = ImageResult(status=status, prediction_id=prediction_id, model=model).model_dump(
        mode="json"
    )
    return _sdk.tool_result([_sdk.text_content(text)], structured)
