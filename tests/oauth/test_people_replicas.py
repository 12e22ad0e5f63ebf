"""People on two replicas that share a Valkey and a SeaweedFS bucket: a person's daily budget,
ownership and images hold across replicas, and a link made by one replica opens on the other.

Both replicas accept the real authorization server's tokens for one public URL (the first
replica's address, as a load balancer's would be); each person's token is minted by it through
the whole sign-in (DCR, PKCE, the scripted login) and sent as a bearer token to either replica.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest

from flux_tools.emulator import Emulator

from ..engines import Seaweed, Valkey, free_ports
from ..mcp.mcp_helpers import ServerProcess, http_session, text_of
from ..replicas.conftest import seaweed_server, valkey_server  # noqa: F401  (fixtures)
from .oauth_helpers import AuthServer, oauth_env, obtain_token
from .people import UNKNOWN_ID, refusal, same_words

pytestmark = pytest.mark.mcp

SECRET = "the-same-link-secret-on-every-replica-0123456789"


@contextlib.contextmanager
def replicas(env: dict[str, str], folder: Path, ports: list[int]) -> Iterator[list[str]]:
    """The replicas, each on its port with its own output folder; their MCP URLs."""
    started: list[ServerProcess] = []
    try:
        for index, port in enumerate(ports):
            out = folder / f"replica{index}"
            out.mkdir(parents=True)
            args = ["--transport", "streamable-http", "--port", str(port)]
            own = {**env, "FLUX_OUTPUT_DIR": str(out / "images")}
            started.append(ServerProcess(args, own, out, stdio=False))
        for process in started:
            process.wait_for_stderr(r"listening on http://", timeout=60)
        yield [f"http://127.0.0.1:{port}/mcp" for port in ports]
    finally:
        for process in started:
            process.stop()


async def test_a_persons_budget_ownership_images_and_links_hold_across_replicas(
    issuer: AuthServer,
    emulator: Emulator,
    tmp_path: Path,
    valkey_server: Valkey,  # noqa: F811
    seaweed_server: Seaweed,  # noqa: F811
) -> None:
    bucket = f"flux-{uuid.uuid4().hex[:10]}"
    seaweed_server.make_bucket(bucket)
    ports = free_ports(2)
    public_url = f"http://127.0.0.1:{ports[0]}/mcp"
    env = oauth_env(
        emulator,
        tmp_path,
        issuer.issuer,
        public_url,
        FLUX_STATE_URL=valkey_server.url,
        FLUX_MCP_USER_BUDGET_USD="0.10",  # one image a day each
        FLUX_MCP_LINK_SECRET=SECRET,
        FLUX_MCP_LOG_LEVEL="INFO",
        **seaweed_server.env(bucket),
    )
    alice = await obtain_token(issuer.issuer, public_url, user="alice")
    bob = await obtain_token(issuer.issuer, public_url, user="bob")
    with replicas(env, tmp_path, ports) as (first, second):
        async with http_session(first, token=alice) as session:
            made = await session.call("generate_image", {"prompt": "a paper lantern"})
        assert not made.get("isError"), text_of(made)
        pid = made["structuredContent"]["prediction_id"]
        [uri], [link] = (
            made["structuredContent"]["resource_uris"],
            made["structuredContent"]["links"],
        )

        # The other replica: Alice's day is spent there too; refused before any create.
        async with http_session(second, token=alice) as session:
            over = refusal(await session.call("generate_image", {"prompt": "another"}))
        assert "Your daily budget on this server would be exceeded" in over
        assert emulator.stats.creates == 1

        # A link the first replica made opens on the second (same key), from the bucket.
        on_second = urlsplit(link)._replace(netloc=f"127.0.0.1:{ports[1]}").geturl()
        opened = httpx2.get(on_second, timeout=10)
        assert opened.status_code == 200 and opened.headers["content-type"].startswith("image/")
        copies = [p for p in (tmp_path / "replica1").rglob("*") if pid in p.name]
        assert copies == []  # served from the bucket, not from a copy on the second replica

        # Bob, on the second replica: her prediction is "not found" there too; his own goes.
        async with http_session(second, token=bob) as session:
            theirs = refusal(await session.call("get_prediction", {"prediction_id": pid}))
            nobodys = refusal(await session.call("get_prediction", {"prediction_id": UNKNOWN_ID}))
            his = await session.call("generate_image", {"prompt": "a red kite"})
            bobs_list = (await session.raw.list_resources()).resources
        assert same_words(theirs, nobodys, pid, UNKNOWN_ID)
        assert not his.get("isError"), text_of(his)
        assert uri not in [str(r.uri) for r in bobs_list]
        assert emulator.stats.creates == 2

        # Alice reads and lists her image on the second replica (kept in the bucket).
        async with http_session(second, token=alice) as session:
            [content] = await session.read_resource(uri)
            listed = [str(r.uri) for r in (await session.raw.list_resources()).resources]
        assert content["blob"] and uri in listed
