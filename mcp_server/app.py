"""Wiring: the state (in-process, or shared by replicas), one client for the process, the image
store, the server, the transport, and the predictions left unsaved (the journal): taken up at
start, and, with shared state, from any replica that dies or hands over while this one serves."""

from __future__ import annotations

import logging

import anyio

from flux_tools import AsyncFluxClient, ConfigError, RateLimits, RetryPolicy
from flux_tools.kit import State, account_namespace, open_state

from .audit import AuditLog
from .config import Config
from .http import http_options, listen, serve_http
from .links import LinkSigner
from .objects import ObjectImages
from .ops import Metrics
from .server import FluxTools, build_server

logger = logging.getLogger("mcp_server")

#: Longest ``Retry-After`` slept through outside a wait's polls. A create throttled for longer
#: is answered at once (nothing was created; when to retry) instead of holding the tool call past
#: its budget; the polls of a wait wait out any Retry-After up to their deadline.
MAX_RETRY_AFTER = 10.0
#: How long the state server may take to answer at start.
START_SECONDS = 15.0


def make_client(config: Config, state: State | None = None) -> AsyncFluxClient:
    settings = config.settings
    shared: dict[str, object] = {}
    if state is not None:  # the budget, with its per-person scopes (in-process, or shared)
        shared["budget"] = state.budget(settings.budget_usd, settings.max_call_usd)
    if state is not None and state.shared:  # the account's limits and durations
        shared["limiter"] = state.limiter(settings.rate_limits or RateLimits())
        shared["durations"] = state.durations(settings.base_url, settings.cache_dir)
    return AsyncFluxClient(
        settings=settings,
        timeout=config.cancel_after,
        # None by default: the folders local images may be read from depend on the caller, and
        # are given per call (the local user: the output folder, FLUX_IMAGE_DIRS and the client's
        # roots; a signed-in person: their own folder only).
        image_dirs=(),
        retry=RetryPolicy(max_retry_after=min(MAX_RETRY_AFTER, config.wait_seconds / 2)),
        **shared,  # type: ignore[arg-type]
    )


def _links(config: Config) -> LinkSigner | None:
    """Signed links to images, on the origin of the public URL (none without one)."""
    if config.transport == "stdio" or config.public_url is None:
        return None
    signer = LinkSigner(config.public_url, config.link_secret, config.link_ttl)
    if signer.ephemeral:
        logger.warning(
            "FLUX_MCP_LINK_SECRET is not set: links to images are signed with a key made at "
            "start, so they stop working when this process restarts, and replicas cannot open "
            "each other's. Set FLUX_MCP_LINK_SECRET (32+ random characters, the same on every "
            "replica)."
        )
    logger.info(
        "links to images served at %s/images/..., valid %g s", signer.origin, config.link_ttl
    )
    return signer


async def _start(state: State) -> None:
    try:
        with anyio.fail_after(START_SECONDS):
            await state.start()
    except Exception as exc:
        raise ConfigError(
            f"Cannot reach the state server {state.description} (FLUX_STATE_URL): "
            f"{type(exc).__name__}: {exc}. Check that it runs and that the URL is right."
        ) from None


async def serve(config: Config) -> None:
    namespace = account_namespace(config.base_url, config.api_token)
    state = open_state(config.state_url, namespace=namespace)
    await _start(state)
    images = ObjectImages(config.store_url) if config.store_url else None
    client = make_client(config, state)
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
        images.description if images else config.output_dir,
        config.wait_seconds,
    )
    logger.info(
        "local input images read from %s and the client's roots, up to %d bytes each%s",
        ", ".join(str(d) for d in (config.output_dir, *config.image_dirs)),
        config.max_image_bytes,
        "; a signed-in person's only from their own folder" if config.oauth else "",
    )
    if state.shared:
        logger.info("state shared with the other replicas in %s", state.description)
    metrics = Metrics(client.limiter) if config.transport != "stdio" else None
    if not config.oauth and config.user_budget_usd is not None:
        logger.warning(
            "FLUX_MCP_USER_BUDGET_USD is set, but nobody signs in (FLUX_MCP_OAUTH_ISSUER is not "
            "set): it applies to signed-in people only; FLUX_BUDGET_USD caps this server"
        )
    links = _links(config)
    audit = AuditLog(config.audit_log)
    audit.check()
    # People who sign in share the account's create rate fairly; alone, nothing changes.
    shares = state.fair_share(config.settings.rate_limits or RateLimits()) if config.oauth else None
    tools = FluxTools(
        config,
        client,
        state=state,
        images=images,
        metrics=metrics,
        links=links,
        audit=audit,
        shares=shares,
    )
    http = None if config.transport == "stdio" else http_options(config)
    server = build_server(config, client, http, tools=tools)

    async def ready() -> None:
        await state.ping()
        if images is not None:
            await images.ping()

    # The port first: one taken is said in one line, before any background work starts.
    sock = None if config.transport == "stdio" else listen(config)
    try:
        async with anyio.create_task_group() as background:
            # Predictions a killed server (or replica) left unsaved: watched again, saved.
            background.start_soon(tools.resume, background)
            if state.shared:
                background.start_soon(tools.keep_leases)
            if config.transport == "stdio":
                await server.run_stdio()
            else:
                # SIGTERM: calls waiting on a prediction answer at once with its id (it goes
                # on running), creates still queued for a rate-limit slot are not sent.
                assert sock is not None
                await serve_http(
                    config,
                    server,
                    sock,
                    ready=ready,
                    metrics=metrics,
                    on_stop=client.stop_waiting,
                    links=(links, tools.open_image) if links is not None else None,
                )
            background.cancel_scope.cancel()  # the client is gone: stop watching (never cancel)
    finally:
        with anyio.CancelScope(shield=True):
            await tools.hand_over()
            await client.aclose()
            await state.aclose()


def run(config: Config) -> None:
    anyio.run(serve, config)
