"""What signed-in people may spend of the server's one account: each their own daily budget
beside the server's total, a fair share of the create rate, and an audit line per create.

Real sign-ins (oidc-provider, the SDK's OAuth client), the server in its own process, the
emulator counting what reached the API: a refused create never reaches it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_tools.emulator import Emulator

from ..mcp.mcp_helpers import DUMMY_TOKEN, text_of
from ..mcp.real_clients import LEGACY
from .oauth_helpers import AuthServer, oauth_env, serve_mcp
from .people import person_id, refusal, signed_in

pytestmark = pytest.mark.mcp

PROMPT = "a paper lantern on a dark lake, long exposure"
#: The default model's price (black-forest-labs/flux-pro): $0.055 an image.
PRICE = 0.055


async def test_each_person_has_a_daily_budget_beside_the_servers_total(
    issuer: AuthServer, emulator: Emulator, tmp_path: Path, workdir: Path, public_url: str
) -> None:
    audit = tmp_path / "audit" / "flux-audit.jsonl"
    audit.parent.mkdir()
    env = oauth_env(
        emulator,
        tmp_path,
        issuer.issuer,
        public_url,
        FLUX_MCP_USER_BUDGET_USD="0.10",  # one image a day each
        FLUX_BUDGET_USD="0.15",  # two images in all
        FLUX_MCP_AUDIT_LOG=str(audit),
    )
    with serve_mcp(env, workdir, public_url) as server:
        async with signed_in(public_url, "alice", LEGACY, tmp_path / "alice") as alice:
            first = await alice.call("generate_image", {"prompt": PROMPT})
            assert not first.get("isError"), text_of(first)
            over = refusal(await alice.call("generate_image", {"prompt": PROMPT}))
            assert emulator.stats.creates == 1  # refused before it was sent
            async with signed_in(public_url, "bob", LEGACY, tmp_path / "bob") as bob:
                his = await bob.call("generate_image", {"prompt": "a red kite"})
                assert not his.get("isError"), text_of(his)  # Alice's day is not Bob's
                assert emulator.stats.creates == 2
                still = refusal(await alice.call("generate_image", {"prompt": PROMPT}))
                async with signed_in(public_url, "carol", LEGACY, tmp_path / "carol") as carol:
                    total = refusal(await carol.call("generate_image", {"prompt": PROMPT}))
        log = server.stderr
    assert emulator.stats.creates == 2

    # Alice hears about her own day: spent, left, when it starts again; nothing of Bob's.
    for text in (over, still):
        assert "Your daily budget on this server would be exceeded" in text
        assert f"you have spent ${PRICE:.4f} of $0.10 today (UTC), $0.0450 is left" in text
        assert "Nothing was sent" in text and "00:00 UTC, in " in text
        assert "FLUX_MCP_USER_BUDGET_USD" in text
        assert "0.11" not in text and "0.15" not in text  # the server's spending is not hers
    # Carol, with her own day untouched, meets the server's total: no amounts at all.
    assert "This server's total budget (FLUX_BUDGET_USD) does not allow this call" in total
    assert "$" not in total

    # One audit line per create: who, what, how much; nothing secret.
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(x["event"], x["subject"]) for x in lines] == [("create", "alice"), ("create", "bob")]
    made = {p.input["prompt"]: p.id for p in emulator.predictions.values()}
    for line, user, prompt in zip(lines, ("alice", "bob"), (PROMPT, "a red kite"), strict=True):
        assert line["person"] == person_id(issuer.issuer, user)
        assert line["issuer"] == issuer.issuer and line["client_id"]
        assert line["prediction_id"] == made[prompt]
        assert line["model"] == "black-forest-labs/flux-pro" and line["cost_usd"] == PRICE
        assert line["tool"] == "generate_image" and line["time"].endswith("Z")
        assert line["replica"]
    text = audit.read_text()
    for secret in (DUMMY_TOKEN, alice.token, bob.token, "Bearer", PROMPT):
        assert secret not in text
    assert stat.S_IMODE(os.stat(audit).st_mode) == 0o600
    # The same lines on the logger mcp_server.audit; the API token in no log.
    assert log.count('"event":"create"') == 2
    assert DUMMY_TOKEN not in log and alice.token not in log


async def test_one_persons_loop_does_not_starve_anothers_call(
    issuer: AuthServer, emulator: Emulator, tmp_path: Path, workdir: Path, public_url: str
) -> None:
    # 40 creates a minute (burst 1): a create every 1.6 s. Alice fires six at once; Bob, one.
    env = oauth_env(
        emulator,
        tmp_path,
        issuer.issuer,
        public_url,
        FLUX_CREATES_PER_MINUTE="40",
        FLUX_MCP_WAIT_SECONDS="8",
    )
    hers: list[dict[str, Any]] = []
    with serve_mcp(env, workdir, public_url):
        async with (
            signed_in(public_url, "alice", LEGACY, tmp_path / "alice") as alice,
            signed_in(public_url, "bob", LEGACY, tmp_path / "bob") as bob,
        ):

            async def one(index: int) -> None:
                hers.append(await alice.call("generate_image", {"prompt": f"loop {index}"}))

            async with anyio.create_task_group() as group:
                for index in range(6):
                    group.start_soon(one, index)
                with anyio.fail_after(10):
                    while emulator.stats.creates == 0:
                        await anyio.sleep(0.02)
                his = await bob.call("generate_image", {"prompt": "bob's one"})
    assert not his.get("isError"), text_of(his)
    order = [p.input["prompt"] for p in emulator.predictions.values()]
    # Without shares, Alice's creates fill the account's schedule ahead of Bob's (his came 5th
    # when this was checked without them). With them, he goes in among her first ones (2nd).
    assert order.index("bob's one") <= 2, order
    refused = [text_of(r) for r in hers if r.get("isError")]
    created = [r for r in hers if not r.get("isError")]
    assert refused, "Alice's loop went past her share"
    for text in refused:
        assert "faster than your share of this server" in text
        assert "nothing was created" in text and "Retry in " in text
    assert len(created) + 1 == emulator.stats.creates == len(order)
