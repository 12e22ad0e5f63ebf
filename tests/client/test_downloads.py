"""Saving outputs from a gateway that lies: names, caps, addresses, redirects, deadlines, previews.

Each case runs the real download code over real HTTP on loopback against the hostile gateway
(tests/hostile.py), through both drivers (blocking and async).
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import re
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

from flux_tools import DownloadError, FluxError
from flux_tools._base.media import safe_stem
from flux_tools._base.urls import is_local_host
from flux_tools._drivers.downloads import MAX_OUTPUTS, DownloadPolicy, asave_outputs, save_outputs
from flux_tools._drivers.preview import MAX_PIXELS, PreviewError, make_preview
from flux_tools.kit import safe_text

from ..hostile import Answer, HostileGateway

HOSTILE_IDS = [
    "/../../../../ANY/FOLDER/x",
    "../x",
    "..",
    ".",
    "",
    "a/b",
    "a\\b",
    "C:\\Windows\\x",
    "x\x00y",
    "\x1b[31mred\x1b[0m\r\nline",
    "x" * 300,
    "CON",
    "nul",
    "ABC",
    "a b",
    "日本語",
    "\u202egnp.exe",
    ".hidden",
    "-rf",
]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


async def save(kind: str, urls: list[str], directory: Path, **kwargs: Any) -> list[Path]:
    """save_outputs in a worker thread, or asave_outputs on this loop."""
    kwargs.setdefault("stem", "abc123")
    if kind == "sync":
        return await asyncio.to_thread(functools.partial(save_outputs, urls, directory, **kwargs))
    return await asave_outputs(urls, directory, **kwargs)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def local(gw: HostileGateway, **overrides: Any) -> DownloadPolicy:
    """The policy a client of this (loopback) gateway uses."""
    return DownloadPolicy.for_api(gw.base_url, **overrides)


# -- names ---------------------------------------------------------------------------------------


def test_safe_stems_are_plain_distinct_and_bounded() -> None:
    stems = [safe_stem(raw) for raw in HOSTILE_IDS]
    for raw, stem in zip(HOSTILE_IDS, stems, strict=True):
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*(\.[0-9a-f]{12})?", stem), (raw, stem)
        assert len(stem) <= 64 and ".." not in stem
        assert stem.split(".")[0] not in {"con", "nul", "prn", "aux"}
    assert len(set(stems)) == len(stems)  # distinct ids, distinct names
    # Replicate's own ids are kept as they are.
    assert safe_stem("rrr4z55ocxrgm0ckvb7a9mlrkc") == "rrr4z55ocxrgm0ckvb7a9mlrkc"
    # An id that looks like a sanitised one cannot take its name: kept ids never hold a dot.
    assert safe_stem(safe_stem("a/b")) != safe_stem("a/b")


def test_safe_text_escapes_terminal_controls() -> None:
    text = safe_text("ok\x1b[2J\x07\u202eevil\nnext", 100)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b" in text and "\n" not in text
    assert "\n" in safe_text("a\nb", newlines=True)
    assert safe_text("y" * 1000, 50).startswith("y" * 50 + "…")


@pytest.mark.parametrize("raw", HOSTILE_IDS)
def test_hostile_ids_never_leave_the_folder(
    hostile: HostileGateway, tmp_path: Path, raw: str
) -> None:
    out = tmp_path / "a" / "b" / "out"
    (path,) = save_outputs([f"{hostile.origin}/files/x.png"], out, stem=raw, policy=local(hostile))
    assert path.parent == out.resolve() and path.suffix == ".png"
    assert all_files(tmp_path) == [path]


async def test_several_outputs_get_distinct_names(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    urls = [f"{hostile.origin}/files/{i}.png" for i in range(3)]
    paths = await save(kind, urls, tmp_path, stem="abc", policy=local(hostile))
    assert [p.name for p in paths] == ["abc_0.png", "abc_1.png", "abc_2.png"]


async def test_a_planted_symlink_is_replaced_not_followed(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "abc123.png").symlink_to(outside)
    (path,) = await save(kind, [f"{hostile.origin}/files/x.png"], out, policy=local(hostile))
    assert outside.read_text() == "precious"
    assert not path.is_symlink() and path.read_bytes().startswith(b"\x89PNG")


# -- how many, how big, what ---------------------------------------------------------------------


async def test_at_most_the_cap_of_outputs_is_downloaded(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    urls = [f"{hostile.origin}/files/{i}.png" for i in range(300)]
    with pytest.raises(DownloadError) as info:
        await save(kind, urls, tmp_path, policy=local(hostile), prediction_id="p300")
    assert "300 outputs" in str(info.value) and f"first {MAX_OUTPUTS}" in str(info.value)
    assert str(tmp_path.resolve()) in str(info.value)
    assert hostile.count("file") == MAX_OUTPUTS == len(all_files(tmp_path))
    assert len(info.value.files) == MAX_OUTPUTS
    assert info.value.prediction_id == "p300"


async def test_a_declared_huge_body_is_refused_before_reading(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    hostile.on("GET", "/files/huge.png", Answer.huge(10 * 1024**3))  # 10 GiB declared
    with pytest.raises(DownloadError, match="more than the 1000000 allowed"):
        await save(
            kind,
            [f"{hostile.origin}/files/huge.png"],
            tmp_path,
            policy=local(hostile, max_bytes=1_000_000),
        )
    assert all_files(tmp_path) == []
    assert hostile.sent_bytes() < 64 * 1024**2  # what the socket buffers took, at most


async def test_an_endless_body_is_cut_at_the_cap(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    hostile.on("GET", "/files/endless.png", Answer.endless())
    with pytest.raises(DownloadError, match="larger than the 2000000 bytes"):
        await save(
            kind,
            [f"{hostile.origin}/files/endless.png"],
            tmp_path,
            policy=local(hostile, max_bytes=2_000_000),
        )
    assert all_files(tmp_path) == []  # no .part left behind
    assert hostile.sent_bytes() < 2_000_000 + 32 * 1024**2


@pytest.mark.parametrize(
    "answer",
    [
        Answer.raw(b"<html><body>Gateway error</body></html>", "image/png"),
        Answer.raw(b"", "image/png"),
        Answer.raw(b"MZ\x90\x00 not an image", "image/webp"),
        Answer(
            200,
            {"Content-Type": "image/png", "Content-Encoding": "gzip"},
            zlib.compress(b"\x89PNG\r\n\x1a\n"),
        ),
    ],
    ids=["html", "empty", "exe", "gzip"],
)
async def test_a_body_that_is_no_image_is_not_saved(
    hostile: HostileGateway, tmp_path: Path, kind: str, answer: Answer
) -> None:
    hostile.on("GET", "/files/x.png", answer)
    with pytest.raises(DownloadError, match=r"not an image|encoded"):
        await save(kind, [f"{hostile.origin}/files/x.png"], tmp_path, policy=local(hostile))
    assert all_files(tmp_path) == []


async def test_data_uris_are_checked_and_capped(tmp_path: Path, kind: str) -> None:
    big = "data:image/png;base64," + "A" * 4_000_000
    with pytest.raises(DownloadError, match="more than the 1000000 allowed"):
        await save(kind, [big], tmp_path, max_bytes=1_000_000)
    with pytest.raises(DownloadError, match="not an image"):
        await save(kind, ["data:text/plain;base64,aGVsbG8="], tmp_path)
    assert all_files(tmp_path) == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x.png", "javascript:alert(1)", "http://"]
)
async def test_only_http_urls_are_fetched(tmp_path: Path, kind: str, url: str) -> None:
    with pytest.raises(DownloadError, match=r"not an http\(s\) URL|not a valid URL"):
        await save(kind, [url], tmp_path)
    assert all_files(tmp_path) == []


# -- where ---------------------------------------------------------------------------------------


def test_the_api_decides_which_local_addresses_are_fine() -> None:
    def kinds(base_url: str) -> frozenset[str]:
        return DownloadPolicy.for_api(base_url).local_kinds

    assert kinds("http://127.0.0.1:8000/v1") == {"loopback"}
    assert kinds("http://localhost:8000/v1") == {"loopback"}
    assert kinds("http://[::1]:9/v1") == {"loopback"}
    assert kinds("http://10.1.2.3/v1") == {"private"}
    assert kinds("https://api.replicate.com/v1") == frozenset()
    assert DownloadPolicy().local_kinds == frozenset() and not DownloadPolicy().allow_private
    for host in ["169.254.169.254", "100.64.0.1", "224.0.0.1", "0.0.0.0", "::ffff:127.0.0.1"]:
        assert is_local_host(host), host
    assert not is_local_host("8.8.8.8") and not is_local_host("example.com")


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png", "https://[fe80::1]/x"],
)
async def test_a_loopback_api_does_not_open_other_local_addresses(
    hostile: HostileGateway, tmp_path: Path, kind: str, url: str
) -> None:
    # The emulator's case: loopback outputs are fine, the cloud's metadata address is not.
    with pytest.raises(DownloadError, match="local or private address"):
        await save(kind, [url], tmp_path, policy=local(hostile))
    hostile.on("GET", "/files/r.png", Answer.redirect(url))
    with pytest.raises(DownloadError, match=r"local or private address|only to https"):
        await save(kind, [f"{hostile.origin}/files/r.png"], tmp_path, policy=local(hostile))
    assert hostile.count("file") == 1 and all_files(tmp_path) == []


async def test_private_outputs_are_refused_when_the_api_is_public(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    # The policy of a client whose API is public: the loopback gateway plays "the Internet".
    policy = DownloadPolicy.for_api("https://api.example.com/v1")
    for url in [
        f"{hostile.other_origin}/files/x.png",
        f"http://localhost:{hostile.other_origin.rsplit(':', 1)[1]}/files/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/x.png",
        "http://0x7f000001:9/x.png",
    ]:
        with pytest.raises(DownloadError, match="local or private address"):
            await save(kind, [url], tmp_path, policy=policy)
    assert hostile.requests == [] and all_files(tmp_path) == []


async def test_a_name_resolving_to_a_private_address_is_refused(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["8.8.8.8", "10.0.0.7"]  # one public, one private: refused (no connection)

    policy = DownloadPolicy(resolver=resolver)
    with pytest.raises(DownloadError, match=r"10\.0\.0\.7, private"):
        await save(kind, ["https://cdn.gateway.test/x.png"], tmp_path, policy=policy)
    assert resolved == ["cdn.gateway.test"] and hostile.requests == []


async def test_the_api_origin_is_always_allowed(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    policy = DownloadPolicy.for_api(hostile.base_url, local_kinds=frozenset())
    (path,) = await save(kind, [f"{hostile.origin}/files/x.png"], tmp_path, policy=policy)
    assert path.exists()
    with pytest.raises(DownloadError, match="local or private"):
        await save(kind, [f"{hostile.other_origin}/files/x.png"], tmp_path, policy=policy)
    assert [r.origin for r in hostile.requests] == ["api"]


# -- redirects and credentials -------------------------------------------------------------------


async def test_a_redirect_loop_ends(hostile: HostileGateway, tmp_path: Path, kind: str) -> None:
    hostile.on("GET", "/files/loop.png", Answer.redirect("/files/loop.png"))
    with pytest.raises(DownloadError, match="redirects more than 3 times"):
        await save(kind, [f"{hostile.origin}/files/loop.png"], tmp_path, policy=local(hostile))
    assert hostile.count("file") == 4  # the request and three hops


async def test_same_origin_redirects_are_followed_without_credentials(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    hostile.on("GET", "/files/moved.png", Answer.redirect("/files/here.png", 307))
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}) as ahttp:
        with httpx2.Client(headers={"Authorization": "Bearer s3cret"}) as http:
            (path,) = await save(
                kind,
                [f"{hostile.origin}/files/moved.png"],
                tmp_path,
                policy=local(hostile),
                http=http if kind == "sync" else ahttp,
            )
    assert path.read_bytes().startswith(b"\x89PNG")
    assert hostile.authorizations("api") == ["Bearer s3cret", None]  # the hop carries none


async def test_plain_http_redirects_to_another_origin_are_refused(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    hostile.on("GET", "/files/away.png", Answer.redirect("{other}/files/x.png"))
    with pytest.raises(DownloadError, match="only to https or within the same origin"):
        await save(kind, [f"{hostile.origin}/files/away.png"], tmp_path, policy=local(hostile))
    assert hostile.authorizations("other") == []


async def test_redirects_are_checked_against_the_address_policy(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    hostile.on("GET", "/files/x.png", Answer.redirect("https://169.254.169.254/x.png"), origin="*")
    # The gateway plays a public API: its own files are fine, a hop to a private address is not.
    policy = DownloadPolicy.for_api(hostile.base_url, local_kinds=frozenset())
    with pytest.raises(DownloadError, match="local or private"):
        await save(kind, [f"{hostile.origin}/files/x.png"], tmp_path, policy=policy)
    assert hostile.count("file") == 1 and all_files(tmp_path) == []


async def test_a_header_on_the_callers_client_does_not_follow_outputs_elsewhere(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    urls = [f"{hostile.origin}/files/a.png", f"{hostile.other_origin}/files/b.png"]
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}) as ahttp:
        with httpx2.Client(headers={"Authorization": "Bearer s3cret"}) as http:
            await save(
                kind, urls, tmp_path, policy=local(hostile), http=http if kind == "sync" else ahttp
            )
    assert hostile.authorizations("api") == ["Bearer s3cret"]
    assert hostile.authorizations("other") == [None]


# -- time ----------------------------------------------------------------------------------------


async def run_bounded(kind: str, urls: list[str], directory: Path, **kwargs: Any) -> Exception:
    """Run a save that must fail; a watchdog (far above its deadline) fails the test if it hangs."""
    done: list[BaseException] = []
    if kind == "sync":

        def target() -> None:
            try:
                save_outputs(urls, directory, stem="slow", **kwargs)
            except BaseException as exc:
                done.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive(), "the save outlived its deadline"
    else:
        try:
            async with asyncio.timeout(30):
                await asave_outputs(urls, directory, stem="slow", **kwargs)
        except TimeoutError:
            pytest.fail("the save outlived its deadline")
        except Exception as exc:
            done.append(exc)
    assert done and isinstance(done[0], Exception)
    return done[0]


async def test_a_trickling_body_is_bounded_by_the_deadline(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    hostile.on("GET", "/files/slow.png", Answer.trickle(every=0.05))  # a byte every 50 ms, forever
    error = await run_bounded(
        kind, [f"{hostile.origin}/files/slow.png"], tmp_path, policy=local(hostile, deadline=1.5)
    )
    assert isinstance(error, DownloadError) and "1.5 s" in str(error), repr(error)
    assert all_files(tmp_path) == []


async def test_a_stalled_body_is_bounded_by_the_deadline(
    hostile: HostileGateway, tmp_path: Path, kind: str
) -> None:
    hostile.on("GET", "/files/stall.png", Answer.trickle(b"", every=60))  # headers, then silence
    error = await run_bounded(
        kind,
        [f"{hostile.origin}/files/stall.png"],
        tmp_path,
        policy=local(hostile, deadline=1.0, read_timeout=30),
    )
    assert isinstance(error, DownloadError), repr(error)
    assert all_files(tmp_path) == []


# -- the event loop ------------------------------------------------------------------------------


async def test_async_saving_does_its_file_work_off_the_loop(
    hostile: HostileGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, set[int]] = {"write": set(), "fsync": set(), "open": set()}
    real_write, real_fsync, real_open = os.write, os.fsync, os.open

    def spy(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads[name].add(threading.get_ident())
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(os, "write", spy("write", real_write))
    monkeypatch.setattr(os, "fsync", spy("fsync", real_fsync))
    monkeypatch.setattr(os, "open", spy("open", real_open))
    hostile.on("GET", "/files/x.png", Answer.image("png", (300, 200)))
    (path,) = await asave_outputs(
        [f"{hostile.origin}/files/x.png"], tmp_path, stem="loop", policy=local(hostile)
    )
    assert path.exists()
    assert all(threads.values()) and not any(loop_thread in t for t in threads.values())


# -- previews: decoding is bounded ---------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels, with almost no data (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8000, 100_000])
def test_a_decompression_bomb_makes_no_preview(tmp_path: Path, side: int) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(side, side))
    with pytest.raises(PreviewError) as info:
        make_preview(bomb)
    assert isinstance(info.value, FluxError) and "bomb.png" in str(info.value)
    if side * side <= 2 * (Image.MAX_IMAGE_PIXELS or 0):
        assert f"{side}x{side} pixels" in str(info.value)
    assert bomb.read_bytes() == png_header_only(side, side)  # the saved file is untouched


def test_only_common_image_formats_are_decoded(tmp_path: Path) -> None:
    tiff = tmp_path / "x.tif"
    Image.new("RGB", (10, 10)).save(tiff, format="TIFF")
    with pytest.raises(PreviewError, match=r"x\.tif"):
        make_preview(tiff)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_large_jpeg_is_previewed_in_bounded_memory(tmp_path: Path) -> None:
    side = 7000  # 49 MP, under the cap: 147 MB once decoded at full size
    assert side * side <= MAX_PIXELS
    big = tmp_path / "big.jpg"
    Image.new("RGB", (side, side), (20, 120, 200)).save(big, format="JPEG", quality=50)
    # Peak memory of a fresh process (VmHWM: ru_maxrss would count this one's, kept on exec).
    script = (
        "import re, sys\n"
        "from flux_tools._drivers.preview import make_preview\n"
        "p = make_preview(sys.argv[1])\n"
        "status = open('/proc/self/status').read()\n"
        "peak = re.search(r'VmHWM:\\s+(\\d+)', status).group(1)\n"
        "print(p.width, p.height, p.source_width, peak)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(big)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    width, height, source_width, max_rss_kib = map(int, done.stdout.split())
    assert (width, height, source_width) == (768, 768, side)
    assert max_rss_kib < 140 * 1024, f"peak memory {max_rss_kib // 1024} MiB"


def test_a_preview_of_a_normal_image_still_works(tmp_path: Path) -> None:
    source = tmp_path / "p.png"
    Image.new("P", (1200, 600), 3).save(source)
    preview = make_preview(source, max_side=300)
    with Image.open(io.BytesIO(preview.data)) as image:
        assert image.format == "JPEG" and image.size == (300, 150)
    assert (preview.source_width, preview.source_height) == (1200, 600)


def test_a_host_only_the_proxy_can_resolve_is_left_to_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flux_tools._drivers.downloads import _behind_proxy

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert not _behind_proxy("cdn.gateway.test")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert _behind_proxy("cdn.gateway.test")
    monkeypatch.setenv("NO_PROXY", "cdn.gateway.test")
    assert not _behind_proxy("cdn.gateway.test")
