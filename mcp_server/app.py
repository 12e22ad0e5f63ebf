"""Wiring: one client for the process, the server, the transport, and the resumption of the
predictions a previous run left unsaved (the journal)."""

from __future__ import annotations

import logging

import anyio

from flux_tools import AsyncFluxClient, RetryPolicy

from .config import Config
from .http import http_options, serve_http
from .server import FluxTools, build_server

logger = logging.getLogger("mcp_server")

#: Longest ``Retry-After`` slept through outside a wait's polls. A create throttled for longer
#: is answered at once (nothing was created; when to retry) instead of holding the tool call past
#: its budget; the polls of a wait wait out any Retry-After up to their deadline.
MAX_RETRY_AFTER = 10.0


def make_client(config: Config) -> AsyncFluxClient:
    return AsyncFluxClient(
        settings=config.settings,
        timeout=config.cancel_after,
        # The output folder is always allowed: "edit the image just generated" reads its file.
        # (The client's roots are added per call.)
        image_dirs=[config.output_dir, *config.image_dirs],
        retry=RetryPolicy(max_retry_after=min(MAX_RETRY_AFTER, config.wait_seconds / 2)),
    )


async def serve(config: Config) -> None:
    client = make_client(config)
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
    tools = FluxTools(config, client)
    http = None if config.transport == "stdio" else http_options(config)
    server = build_server(config, client, http, tools=tools)
    try:
        async with anyio.create_task_group() as background:
            # Predictions a killed server left unsaved: watched again, saved when done.
            await tools.resume(background)
            if config.transport == "stdio":
                await server.run_stdio()
            else:
                await serve_http(config, server)
            background.cancel_scope.cancel()  # the client is gone: stop watching (never cancel)
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


def run(config: Config) -> None:
    anyio.run(serve, config)
