"""Links a remote person can click: served by the server at /images/ on its public origin, with
plain HTTP and no token; signed for one image of one person; expiring; refused when changed.

The people sign in through the real authorization server; the links are then opened as a
browser would, with no Authorization header at all.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import anyio
import httpx2
import pytest

from flux_tools.emulator import Emulator

from ..mcp.mcp_helpers import DUMMY_TOKEN, text_of
from ..mcp.real_clients import LEGACY
from .oauth_helpers import AuthServer, oauth_env, serve_mcp
from .people import person_id, signed_in

pytestmark = pytest.mark.mcp

SECRET = "link-secret-for-tests-0123456789abcdef0123456789"
TTL = 4


def _changed(link: str, *, path: str | None = None, **query: str | None) -> str:
    parts = urlsplit(link)
    fields = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in query.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return urlunsplit(parts._replace(path=path or parts.path, query=urlencode(fields)))


async def test_signed_links_open_one_persons_image_until_they_expire(
    issuer: AuthServer, emulator: Emulator, tmp_path: Path, workdir: Path, public_url: str
) -> None:
    env = oauth_env(
        emulator,
        tmp_path,
        issuer.issuer,
        public_url,
        FLUX_MCP_LINK_SECRET=SECRET,
        FLUX_MCP_LINK_TTL=str(TTL),
    )
    origin = public_url.removesuffix("/mcp")
    with serve_mcp(env, workdir, public_url) as server:
        async with (
            signed_in(public_url, "alice", LEGACY, tmp_path / "alice") as alice,
            signed_in(public_url, "bob", LEGACY, tmp_path / "bob") as bob,
        ):
            hers = await alice.call("generate_image", {"prompt": "a paper lantern"})
            made = time.time()
            his = await bob.call("generate_image", {"prompt": "a red kite"})
        data = hers["structuredContent"]
        [link], [file] = data["links"], data["files"]
        [bob_link] = his["structuredContent"]["links"]
        name = Path(file).name
        # In the text and the structured content (which the viewer's "open full size" uses).
        assert link in text_of(hers) and "expires in 4 seconds" in text_of(hers)
        assert link.startswith(f"{origin}/images/{person_id(issuer.issuer, 'alice')}/{name}?")
        for secret in (alice.token, "Bearer", DUMMY_TOKEN, SECRET):
            assert secret not in link

        async with httpx2.AsyncClient(timeout=10) as http:  # a browser: no token
            opened = await http.get(link)
            assert opened.status_code == 200, opened.text
            assert opened.content == Path(file).read_bytes()
            kind = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
            assert opened.headers["content-type"] == kind[name.rsplit(".", 1)[1]]
            assert opened.headers["content-disposition"] == f'inline; filename="{name}"'
            cache = opened.headers["cache-control"]
            max_age = int(cache.removeprefix("private, max-age=").split(",")[0])
            assert cache.startswith("private, max-age=") and 0 < max_age <= TTL
            assert opened.headers["x-content-type-options"] == "nosniff"
            assert opened.headers["referrer-policy"] == "no-referrer"
            assert "location" not in opened.headers
            head = await http.head(link)
            assert head.status_code == 200 and head.content == b""
            assert (await http.post(link)).status_code == 405
            assert (await http.get(bob_link)).status_code == 200

            # Changed in any part, or made for another image or person: refused, as invalid.
            bob_path = urlsplit(bob_link).path
            bob_name = bob_path.rsplit("/", 1)[1]
            alice_folder = urlsplit(link).path.rsplit("/", 1)[0]
            exp = parse_qs(urlsplit(link).query)["exp"][0]
            sig = parse_qs(urlsplit(link).query)["sig"][0]
            alice_folder_url = f"{origin}/images/{person_id(issuer.issuer, 'alice')}"
            forged = [
                _changed(link, path=bob_path),  # her signature, his image
                _changed(link, path=f"{alice_folder}/{bob_name}"),  # another image, her folder
                _changed(bob_link, sig=sig, exp=exp),  # his image, her signature
                _changed(link, exp=str(int(exp) + 3600)),  # a longer life
                _changed(link, sig=("A" if sig[0] != "A" else "B") + sig[1:]),
                _changed(link, sig=None),
                _changed(link, extra="1"),
                _changed(link, path=urlsplit(link).path.replace("/images/", "/images/local/")),
                f"{alice_folder_url}/..%2F..%2Fetc%2Fpasswd?{urlsplit(link).query}",
            ]
            for url in forged:
                refused = await http.get(url)
                assert refused.status_code == 403, (url, refused.status_code)
                assert (
                    "not valid" in refused.text and refused.headers["cache-control"] == "no-store"
                )
                assert refused.content != opened.content
            # Nor does the MCP endpoint open without a token (the links are the only way in).
            assert (await http.get(public_url)).status_code == 401

            await anyio.sleep(max(0.0, made + TTL + 1.2 - time.time()))
            expired = await http.get(link)
            assert expired.status_code == 410 and "expired" in expired.text
            assert "get_prediction" in expired.text
    assert SECRET not in server.stderr and DUMMY_TOKEN not in server.stderr


def test_a_link_is_checked_in_every_part() -> None:
    from mcp_server.links import LinkRefused, LinkSigner

    now = [1_000_000.0]
    signer = LinkSigner("https://images.example.com/mcp", SECRET, 60, clock=lambda: now[0])
    alice = "0123456789abcdef0123456789abcdef"
    link = urlsplit(signer.url(alice, "abc.png"))
    assert f"{link.scheme}://{link.netloc}" == "https://images.example.com"
    assert signer.check(link.path, link.query) == (alice, "abc.png")
    local = urlsplit(signer.url(None, "abc.png"))
    assert local.path == "/images/local/abc.png"
    assert signer.check(local.path, local.query) == (None, "abc.png")
    # Another server's key, another shape, a duplicated field: not valid.
    other = LinkSigner("https://images.example.com/mcp", SECRET + "x", 60, clock=lambda: now[0])
    for path, query in (
        (link.path, urlsplit(other.url(alice, "abc.png")).query),
        (link.path.replace(".png", ".PNG"), link.query),
        (link.path + "/", link.query),
        (link.path, link.query + "&exp=1"),
        (link.path, link.query.replace("exp=", "exp=0")),
        ("/images/" + alice.upper() + "/abc.png", link.query),
        (link.path, ""),
    ):
        with pytest.raises(LinkRefused) as refused:
            signer.check(path, query)
        assert refused.value.status == 403, (path, query)
    now[0] += 61
    with pytest.raises(LinkRefused) as expired:
        signer.check(link.path, link.query)
    assert expired.value.status == 410
    # Without a key, one is made per process: its links are not another process's.
    first, second = (LinkSigner("https://i.example.com/mcp", None, 60) for _ in range(2))
    assert first.ephemeral and second.ephemeral
    made = urlsplit(first.url(alice, "abc.png"))
    with pytest.raises(LinkRefused):
        second.check(made.path, made.query)
