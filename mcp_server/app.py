"""Wiring: one client for the process, the server, the transport."""

from __future__ import annotations

import logging

import anyio

from flux_tools import AsyncFluxClient

from .config import Config
from .http import http_options, serve_http
from .server import build_server

logger = logging.getLogger("mcp_server")


async def serve(config: Config) -> None:
    client = AsyncFluxClient(
        config.api_token,
        base_url=config.base_url,
        model=config.model,
        edit_model=config.edit_model,
        timeout=config.cancel_after,
        # The output folder is always allowed: "edit the image just generated" reads its file.
        # (The client adds FLUX_IMAGE_DIRS itself; the client's roots are added per call.)
        image_dirs=[config.output_dir, *config.image_dirs],
        max_image_bytes=config.max_image_bytes,
    )
    if not config.has_token:
        logger.warning(
            "no API token (FLUX_API_TOKEN or REPLICATE_API_TOKEN): tools are listed, but "
            "every call will say how to set it"
        )
    logger.info(
        "FLUX MCP server: model %s, edit model %s, API %s, images saved to %s, wait budget %g s",
        config.model,
        config.edit_model,
        config.base_url,
        config.output_dir,
        config.wait_seconds,
    )
    logger.info(
        "local input images read from %s and the client's roots, up to %d bytes each",
        ", ".join(str(d) for d in client.images.dirs),
        config.max_image_bytes,
    )
    try:
        if config.transport == "stdio":
            await build_server(config, client).run_stdio()
        else:
            await serve_http(config, build_server(config, client, http_options(config)))
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


def run(config: Config) -> None:
    anyio.run(serve, config)
