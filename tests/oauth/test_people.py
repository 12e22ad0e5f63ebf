"""Two people on one server, each signed in through a real client, kept apart.

Alice and Bob sign in through the real authorization server (oidc-provider, its scripted login)
with the SDK's OAuth client, in both protocol eras over remote HTTP (the handshake era only
under the 1.x line), and with the TypeScript SDK's. Neither can see, read, cancel or edit the
other's predictions and images: the other's id is "not found", in the very words an id that does
not exist gets. Each one's images are kept in their own folder, and listed for them alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flux_tools.emulator import Emulator
from mcp_server._sdk import APP_MIME_TYPE
from mcp_server.viewer import META_KEY as VIEWER_META
from mcp_server.viewer import VIEWER_URI

from ..mcp.mcp_helpers import SDK_LINE, text_of
from ..mcp.real_clients import LEGACY, MODERN
from ..mcp.test_real_clients_js import JS_DIR, run_js
from .conftest import Served
from .oauth_helpers import AuthServer, oauth_env, serve_mcp
from .people import UNKNOWN_ID, person_id, refusal, same_words, signed_in

pytestmark = pytest.mark.mcp

ERAS = [LEGACY] if SDK_LINE == 1 else [LEGACY, MODERN]
PROMPT = "a paper lantern on a dark lake, long exposure"


def _requests_about(emulator: Emulator, prediction_id: str) -> int:
    return sum(1 for r in emulator.stats.requests if prediction_id in r.path)


@pytest.mark.parametrize("era", ERAS)
async def test_two_people_cannot_see_read_cancel_or_edit_each_others_work(
    served: Served, emulator: Emulator, tmp_path: Path, era: str
) -> None:
    issuer = served.issuer.issuer
    async with signed_in(served.url, "alice", era, tmp_path / "alice") as alice:
        made = await alice.call("generate_image", {"prompt": PROMPT})
        assert not made.get("isError"), text_of(made)
        mine = made["structuredContent"]
        pid, [uri], [file] = mine["prediction_id"], mine["resource_uris"], mine["files"]
        # Kept in Alice's own folder, under her opaque id (not her name).
        assert f"/people/{person_id(issuer, 'alice')}/" in file and "alice" not in file
        assert uri in await alice.listed()
        [content] = await alice.read(uri)
        assert content["mimeType"].startswith("image/") and content["blob"]
        # The MCP App viewer, as a host reads it for her (then her image, as above).
        [viewer] = await alice.read(VIEWER_URI)
        assert viewer["mimeType"] == APP_MIME_TYPE and "<html" in viewer["text"].lower()
        assert mine["links"] and VIEWER_META in made["_meta"]

        async with signed_in(served.url, "bob", era, tmp_path / "bob") as bob:
            asked = _requests_about(emulator, pid)
            creates = emulator.stats.creates
            # get, cancel, edit by prediction id: as for an id that does not exist.
            for tool, arguments in (
                ("get_prediction", {"prediction_id": "{id}"}),
                ("cancel_prediction", {"prediction_id": "{id}"}),
                ("edit_image", {"prompt": "make it gold", "input_image": "{id}"}),
            ):
                theirs = refusal(await bob.call(tool, _with(arguments, pid)))
                nobodys = refusal(await bob.call(tool, _with(arguments, UNKNOWN_ID)))
                assert same_words(theirs, nobodys, pid, UNKNOWN_ID), (theirs, nobodys)
                assert "forbidden" not in theirs.lower() and "alice" not in theirs
            # Nor by the path of her saved file.
            by_path = refusal(await bob.call("edit_image", {"prompt": "x", "input_image": file}))
            assert "outside the allowed folders" in by_path
            assert "cannot read files on your computer" in by_path
            # Her image as a resource: as for one that does not exist; his list is his own.
            stem, extension = uri.removeprefix("flux://images/").rsplit(".", 1)
            nowhere = f"flux://images/{UNKNOWN_ID}.{extension}"
            assert same_words(
                await bob.read_error(uri), await bob.read_error(nowhere), stem, UNKNOWN_ID
            )
            assert not [u for u in await bob.listed() if u.startswith("flux://images/")]
            # Nothing was created for Bob, and nothing about her prediction was asked of the API.
            assert emulator.stats.creates == creates
            assert _requests_about(emulator, pid) == asked

            # Bob's own work is his, and listed for him only.
            his = await bob.call("generate_image", {"prompt": "a red kite"})
            his_uri = his["structuredContent"]["resource_uris"][0]
            assert his_uri in await bob.listed()
            assert his_uri not in await alice.listed()
            await alice.read_error(his_uri)

        # Alice still has all of hers: her prediction, and edits of it by its id.
        again = await alice.call("get_prediction", {"prediction_id": pid})
        assert again["structuredContent"]["files"] == [file]
        edited = await alice.call("edit_image", {"prompt": "make it gold", "input_image": pid})
        assert not edited.get("isError"), text_of(edited)
    assert emulator.stats.creates == 3


def _with(arguments: dict[str, Any], prediction_id: str) -> dict[str, Any]:
    return {k: v.replace("{id}", prediction_id) for k, v in arguments.items()}


async def test_the_typescript_sdk_cannot_reach_another_persons_work(
    node: str, served: Served, emulator: Emulator, tmp_path: Path
) -> None:
    async with signed_in(served.url, "alice", LEGACY, tmp_path / "alice") as alice:
        made = (await alice.call("generate_image", {"prompt": PROMPT}))["structuredContent"]
    pid, [uri] = made["prediction_id"], made["resource_uris"]
    plan: dict[str, Any] = {
        "url": served.url,
        "user": "dana",
        "redirectUrl": "https://claude.ai/api/mcp/auth_callback",
        "steps": [
            {"tool": "get_prediction", "arguments": {"prediction_id": pid}},
            {"tool": "cancel_prediction", "arguments": {"prediction_id": pid}},
            {"tool": "get_prediction", "arguments": {"prediction_id": UNKNOWN_ID}},
            {"read": uri},
            {"list": True},
        ],
    }
    events = await run_js(node, plan, tmp_path / "js.log", script=JS_DIR / "oauth_client.mjs")
    got, cancel, unknown = [e for e in events if e["event"] == "result"]
    assert got["isError"] and cancel["isError"] and unknown["isError"]
    assert same_words(got["text"], unknown["text"], pid, UNKNOWN_ID)
    assert "not found" in cancel["text"]
    [read] = [e for e in events if e["event"] == "read"]
    assert read["ok"] is False and "No saved image" in read["error"]
    [listed] = [e for e in events if e["event"] == "resources"]
    assert uri not in listed["uris"]
    assert emulator.stats.cancels == 0 and emulator.stats.creates == 1


async def test_a_persons_prediction_outlives_a_killed_server_and_stays_theirs(
    issuer: AuthServer, emulator: Emulator, tmp_path: Path, workdir: Path, public_url: str
) -> None:
    # Ownership is kept in memory by one process: after a SIGKILL the journal entry says whose
    # the prediction is, the next start saves it in its owner's folder, and it is still hers.
    env = oauth_env(emulator, tmp_path, issuer.issuer, public_url, FLUX_MCP_WAIT_SECONDS="1")
    with serve_mcp(env, workdir, public_url) as server:
        async with signed_in(public_url, "alice", LEGACY, tmp_path / "alice") as alice:
            running = await alice.call(
                "generate_image", {"prompt": f"{PROMPT} [emulator:latency=2]"}
            )
        assert running["structuredContent"]["status"] in ("starting", "processing")
        pid = running["structuredContent"]["prediction_id"]
        server.kill()  # no save, no cleanup

    folder = tmp_path / "images" / "people" / person_id(issuer.issuer, "alice")
    with serve_mcp(env, workdir, public_url) as again:
        again.wait_for_stderr(rf"resumed prediction {pid}: its image is saved", timeout=40)
        async with signed_in(public_url, "bob", LEGACY, tmp_path / "bob") as bob:
            theirs = refusal(await bob.call("get_prediction", {"prediction_id": pid}))
        async with signed_in(public_url, "alice", LEGACY, tmp_path / "alice2") as alice:
            hers = await alice.call("get_prediction", {"prediction_id": pid})
    assert "was not found" in theirs
    assert [Path(f).parent for f in hers["structuredContent"]["files"]] == [folder]
    assert emulator.stats.creates == 1 and emulator.stats.cancels == 0
