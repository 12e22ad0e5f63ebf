"""The client (blocking and async) against a gateway that lies: nothing written outside the
output folder, no credentials off-origin, time and memory bounded, a clear FluxError.

The gateway is tests/hostile.py; each scenario runs through both clients (``make_flux``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flux_tools import DownloadError, FluxError, PollSchedule, RetryPolicy
from flux_tools._drivers.downloads import MAX_OUTPUTS

from ..conftest import Flux
from ..hostile import MISSING, Answer, HostileGateway

MakeFlux = Callable[..., Flux]
PREDICTIONS = re.compile(r"/v1/predictions/.*")
CREATE = re.compile(r"/v1/(models/.+/)?predictions")
#: Far above every deadline used here: a call still running then is a bug (and fails the test).
WATCHDOG = 45.0


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


async def bounded(flux: Flux, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call the client, failing the test if the call outlives the watchdog."""
    started = time.monotonic()
    try:
        return await asyncio.wait_for(flux(method, *args, **kwargs), WATCHDOG)
    except TimeoutError:
        pytest.fail(f"{method} was still running after {time.monotonic() - started:.0f} s")


@pytest.fixture
def gw_flux(make_flux: MakeFlux, hostile: HostileGateway) -> Callable[..., Flux]:
    def make(**options: Any) -> Flux:
        options.setdefault("base_url", hostile.base_url)
        options.setdefault("api_token", "hostile-test-token")
        return make_flux(**options)

    return make


# -- names on disk -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pid",
    [
        "/../../../../ANY/FOLDER/x",
        "..",
        "a/b\\c",
        "x\x00y",
        "\x1b]0;owned\x07\x1b[2J",
        "p" * 300,
    ],
    ids=["traversal", "dotdot", "slashes", "nul", "escapes", "300-chars"],
)
async def test_a_hostile_id_is_saved_inside_the_folder(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, tmp_path: Path, pid: str
) -> None:
    hostile.prediction.update(id=pid)
    flux = gw_flux()
    result = await bounded(flux, "generate", prompt="a cat")
    assert result.prediction_id == pid
    out = tmp_path / "deep" / "out"
    (path,) = await bounded(flux, "save", result, out)
    assert path.parent == out.resolve() and path.suffix == ".png"
    assert re.fullmatch(r"[a-z0-9.-]+\.png", path.name) and len(path.name) < 80
    assert files_under(tmp_path) == [path]


# -- credentials ---------------------------------------------------------------------------------


async def test_no_credentials_go_to_another_origin(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.prediction.update(
        output=["{other}/files/a.png", "{api}/files/b.png"],
        urls={"get": "{other}/v1/predictions/x", "cancel": "{other}/v1/predictions/x/cancel"},
    )
    hostile.states = [{"status": "starting"}, {"status": "processing"}, {}]
    flux = gw_flux(sync_wait=0)
    result = await bounded(flux, "generate", prompt="a cat")
    await bounded(flux, "save", result, tmp_path)
    assert len(files_under(tmp_path)) == 2
    others = hostile.authorizations("other")
    assert others and all(auth is None for auth in others)  # the download went there, bare
    assert not any(r.path.startswith("/v1/") for r in hostile.requests if r.origin == "other")
    assert set(hostile.authorizations("api")) == {"Bearer hostile-test-token"}


async def test_a_redirect_off_origin_is_refused_and_says_where_the_image_is(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.on("GET", "/files/r.png", Answer.redirect("{other}/files/x.png"))
    hostile.prediction.update(output=["{api}/files/r.png"])
    flux = gw_flux()
    result = await bounded(flux, "generate", prompt="a cat")
    with pytest.raises(DownloadError) as info:
        await bounded(flux, "save", result, tmp_path)
    assert "same origin" in str(info.value) and info.value.prediction_id == "hostile1"
    assert info.value.urls == (f"{hostile.origin}/files/r.png",)
    assert hostile.authorizations("other") == [] and files_under(tmp_path) == []


# -- how many, how big, what ---------------------------------------------------------------------


async def test_three_hundred_outputs_make_at_most_the_cap_of_downloads(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.prediction.update(output=[f"{{api}}/files/{i}.png" for i in range(300)])
    flux = gw_flux()
    result = await bounded(flux, "generate", prompt="a cat")
    with pytest.raises(DownloadError) as info:
        await bounded(flux, "save", result, tmp_path)
    assert "300 outputs" in str(info.value) and info.value.prediction_id == "hostile1"
    assert hostile.count("file") == MAX_OUTPUTS == len(files_under(tmp_path))


async def test_an_output_that_is_no_image_is_not_saved(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.on("GET", "/files/x.png", Answer.raw(b"<html>402 Payment Required</html>", "image/png"))
    hostile.prediction.update(output=["{api}/files/x.png"])
    flux = gw_flux()
    result = await bounded(flux, "generate", prompt="a cat")
    with pytest.raises(DownloadError, match="not an image") as info:
        await bounded(flux, "save", result, tmp_path)
    assert info.value.prediction_id == "hostile1" and files_under(tmp_path) == []


async def test_an_endless_download_is_cut_at_the_cap(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.on("GET", "/files/x.png", Answer.endless())
    hostile.prediction.update(output=["{api}/files/x.png"])
    flux = gw_flux()
    result = await bounded(flux, "generate", prompt="a cat")
    with pytest.raises(DownloadError, match="larger than the 3000000 bytes"):
        await bounded(flux, "save", result, tmp_path, max_bytes=3_000_000)
    (download,) = hostile.seen("file")
    assert not download.cut and download.sent < 3_000_000 + 32 * 1024**2
    assert files_under(tmp_path) == []


# -- answers that make no sense ------------------------------------------------------------------


async def test_an_unknown_status_ends_in_a_flux_error(
    gw_flux: Callable[..., Flux], hostile: HostileGateway
) -> None:
    hostile.states = [{"status": "starting"}, {"status": "exploded"}]
    flux = gw_flux(sync_wait=0, timeout=2)
    with pytest.raises(FluxError) as info:
        await bounded(flux, "generate", prompt="a cat")
    assert info.value.prediction_id == "hostile1"


async def test_a_success_without_output_is_a_flux_error(
    gw_flux: Callable[..., Flux], hostile: HostileGateway
) -> None:
    hostile.prediction.update(output=None)
    flux = gw_flux()
    with pytest.raises(FluxError) as info:
        await bounded(flux, "generate", prompt="a cat")
    assert info.value.prediction_id == "hostile1"


async def test_non_urls_in_the_output_are_not_followed(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, tmp_path: Path
) -> None:
    hostile.prediction.update(output=["file:///etc/passwd", "{api}/files/x.png"])
    flux = gw_flux()
    result = await bounded(flux, "generate", prompt="a cat")
    try:
        paths = await bounded(flux, "save", result, tmp_path)
    except DownloadError as exc:
        assert "http(s)" in str(exc)
    else:
        assert len(paths) == 1
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in files_under(tmp_path))


@pytest.mark.parametrize("field", ["status", "id"])
async def test_a_reply_missing_a_field_is_a_flux_error(
    gw_flux: Callable[..., Flux], hostile: HostileGateway, field: str
) -> None:
    hostile.prediction[field] = MISSING
    flux = gw_flux()
    with pytest.raises(FluxError):
        await bounded(flux, "generate", prompt="a cat")


# -- the waiting logic against the same gateway (the core's fixes of issue 10) -----------------


async def test_a_cancel_that_reports_success_returns_the_image(
    gw_flux: Callable[..., Flux], hostile: HostileGateway
) -> None:
    hostile.states = [{"status": "starting"}, {"status": "processing"}]
    hostile.cancel_state = {"status": "succeeded"}
    flux = gw_flux(sync_wait=0, timeout=1.5)
    result = await bounded(flux, "generate", prompt="a cat")
    assert result.status == "succeeded" and result.urls and hostile.count("cancel") == 1


async def test_an_endless_api_reply_is_cut(
    gw_flux: Callable[..., Flux], hostile: HostileGateway
) -> None:
    hostile.on("POST", CREATE, Answer.endless_json())
    flux = gw_flux()
    with pytest.raises(FluxError):
        await bounded(flux, "generate", prompt="a cat")
    (create,) = hostile.seen("create")
    assert not create.cut and create.sent < 64 * 1024**2


async def test_a_trickling_api_reply_is_bounded_by_the_deadline(
    gw_flux: Callable[..., Flux], hostile: HostileGateway
) -> None:
    hostile.on("GET", PREDICTIONS, Answer.trickle(b'{"id": "hostile1", "status": "', every=0.1))
    hostile.states = [{"status": "starting"}]
    flux = gw_flux(sync_wait=0, timeout=2)
    started = time.monotonic()
    with pytest.raises(FluxError):
        await bounded(flux, "generate", prompt="a cat")
    # Loose on purpose: the gateway's own valve would end the reply at 30 s.
    assert time.monotonic() - started < hostile.max_stream_seconds / 2
    assert not any(r.cut for r in hostile.requests)


async def test_throttled_polls_do_not_abandon_the_prediction(
    gw_flux: Callable[..., Flux], hostile: HostileGateway
) -> None:
    hostile.states = [{"status": "starting"}]
    done = Answer.json(hostile.prediction_json())
    hostile.on("GET", PREDICTIONS, [Answer.status(429)] * 6 + [Answer.status(503)] * 2 + [done])
    # Short pauses (the backoff is not under test), more failures than max_retries (5).
    fast = {
        "retry": RetryPolicy(base_delay=0.02, max_delay=0.1),
        "poll": PollSchedule(initial=0.05, cap=0.1, max_quiet=0.2),
    }
    flux = gw_flux(sync_wait=0, timeout=60, **fast)
    result = await bounded(flux, "generate", prompt="a cat")
    assert result.status == "succeeded" and hostile.count("cancel") == 0
    assert hostile.count("get") == 9
