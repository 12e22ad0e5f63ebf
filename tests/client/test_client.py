"""The clients over real HTTP on loopback against the emulator.

Every test runs twice, through ``FluxClient`` and ``AsyncFluxClient`` (the ``flux`` fixtures), so
the two cannot drift apart in behaviour.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from flux_tools import (
    AuthenticationError,
    ContentModerated,
    DownloadError,
    FluxAPIError,
    FluxConnectionError,
    FluxError,
    FluxInputError,
    FluxProInput,
    PredictionFailed,
    PredictionTimeout,
    RetryPolicy,
)
from flux_tools.emulator import Emulator, Fault

from ..conftest import Flux, requests_to
from ..core.test_inputs import seed_example

MakeEmulator = Callable[..., Emulator]
MakeFlux = Callable[..., Flux]


# -- the whole lifecycle -------------------------------------------------------------------------


async def test_sync_mode_needs_one_request_before_the_download(
    flux: Flux, emulator: Emulator, tmp_path: Path
) -> None:
    result = await flux("generate", prompt="a black forest cake", seed=7)
    assert [r.method for r in emulator.stats.requests] == ["POST"]
    (create,) = emulator.stats.requests
    assert create.headers["prefer"].startswith("wait=")
    assert create.headers["cancel-after"] == "310s"  # our deadline, plus a margin
    assert create.headers["authorization"] == "Bearer test-token"
    assert result.status == "succeeded"
    assert result.seed == 7 and result.model == "black-forest-labs/flux-pro"
    assert len(result.urls) == 1 and result.urls[0].startswith(emulator.origin)
    assert result.timings.total is not None and result.timings.total > 0
    assert result.timings.predicted is not None and result.input["prompt"] == "a black forest cake"
    (path,) = await flux.save(result, tmp_path)
    assert path.suffix == ".webp" and path.parent == tmp_path
    with Image.open(path) as image:
        assert image.format == "WEBP" and image.size == (1024, 1024)
    assert result.files == [path]


async def test_gateway_mode_polls_less_than_a_fixed_half_second(
    make_emulator: MakeEmulator, make_flux: MakeFlux
) -> None:
    latency = 1.5
    emulator = make_emulator(honor_prefer_wait=False, latency=latency)
    flux = make_flux(emulator)
    for n in range(3):
        result = await flux("generate", prompt=f"gateway {n}")
        assert result.status == "succeeded"
    polls = len(requests_to(emulator, "get"))
    fixed_interval_polls = 3 * math.ceil((latency + 0.05) / 0.5)
    assert polls < fixed_interval_polls, (polls, fixed_interval_polls)
    assert len(requests_to(emulator, "create")) == 3


async def test_the_seed_example_reaches_the_api_unchanged(flux: Flux, emulator: Emulator) -> None:
    example = seed_example()
    prediction = await flux("create", FluxProInput.model_validate(example))
    assert emulator.prediction_json(prediction.id)["input"] == example
    assert prediction.status in ("starting", "processing")
    assert prediction.input == example


async def test_seed_is_read_from_the_logs_when_not_given(flux: Flux) -> None:
    result = await flux("generate", prompt="no seed given")
    assert isinstance(result.seed, int)
    assert f"seed: {result.seed}" in (result.prediction.logs or "")


async def test_progress_reports_status_changes(
    make_emulator: MakeEmulator, make_flux: MakeFlux
) -> None:
    emulator = make_emulator(honor_prefer_wait=False, queue_time=0.3, latency=0.6)
    flux = make_flux(emulator)
    seen: list[str] = []
    await flux("generate", prompt="progress", on_progress=lambda p: seen.append(p.status))
    assert seen[0] == "starting" and seen[-1] == "succeeded"
    assert "processing" in seen


async def test_output_ready_while_processing_is_used_at_once(
    make_emulator: MakeEmulator, make_flux: MakeFlux
) -> None:
    emulator = make_emulator(early_output=True)
    flux = make_flux(emulator)
    result = await flux("generate", prompt="early output")
    assert result.urls and len(emulator.stats.requests) == 1
    # The image is done: the result says so; the prediction keeps what the API said.
    assert result.status == "succeeded" and result.prediction.status == "processing"


async def test_create_get_wait_cancel(flux: Flux, emulator: Emulator) -> None:
    created = await flux("create", prompt="step by step [emulator:hang]")
    got = await flux("get", created.id)
    assert got.id == created.id and got.status in ("starting", "processing")
    canceled = await flux("cancel", created.id)
    assert canceled.status == "canceled"
    final = await flux("wait", created.id, timeout=5)
    assert final.status == "canceled"
    with pytest.raises(PredictionFailed, match="canceled"):
        flux.client.result(final)


# -- bad input, before any money is spent ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named", "allowed"),
    [
        ({"prompt": "x", "stpes": 30}, "stpes", "steps"),
        ({"prompt": "x", "steps": 51}, "steps", "1 to 50"),
        ({"prompt": "x", "guidance": 1}, "guidance", "2 to 5"),
        ({"prompt": "x", "aspect_ratio": "7:5"}, "aspect_ratio", "'16:9'"),
        ({"prompt": "x", "output_format": "gif"}, "output_format", "'png'"),
        ({"steps": 20}, "prompt", "non-empty"),
        ({"prompt": "x", "image_prompt": "/etc/passwd"}, "image_prompt", "URL"),
    ],
)
async def test_bad_input_is_refused_before_sending(
    flux: Flux, emulator: Emulator, fields: dict[str, Any], named: str, allowed: str
) -> None:
    with pytest.raises(FluxInputError) as info:
        await flux("generate", **fields)
    assert named in info.value.fields
    assert named in str(info.value) and allowed in str(info.value)
    assert emulator.stats.creates == 0


async def test_the_api_validation_error_is_parsed(flux: Flux, emulator: Emulator) -> None:
    unchecked = FluxProInput.model_construct(prompt="x", steps=99)  # skips local validation
    with pytest.raises(FluxAPIError) as info:
        await flux("create", unchecked)
    assert info.value.status == 422
    assert info.value.invalid_fields[0]["field"] == "input.steps"
    assert "input.steps" in str(info.value)
    assert emulator.stats.predictions_created == 0


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "directive", ["get=503x2", "get=502x1", "get=504x1", "get=429x2:ra=0.1", "get=dropx2"]
)
async def test_polls_are_retried_through_transient_failures(
    make_emulator: MakeEmulator, make_flux: MakeFlux, directive: str
) -> None:
    emulator = make_emulator(honor_prefer_wait=False)
    flux = make_flux(emulator)
    result = await flux("generate", prompt=f"flaky [emulator:{directive}]")
    assert result.status == "succeeded"
    failed = [r for r in requests_to(emulator, "get") if r.status != 200]
    assert len(failed) == int(directive.split("x")[1][0])
    assert emulator.stats.predictions_created == 1


async def test_retry_after_is_honoured(make_emulator: MakeEmulator, make_flux: MakeFlux) -> None:
    emulator = make_emulator(honor_prefer_wait=False)
    flux = make_flux(emulator)
    await flux("generate", prompt="throttled [emulator:get=429x1:ra=0.6]")
    gets = requests_to(emulator, "get")
    throttled = next(i for i, r in enumerate(gets) if r.status == 429)
    assert gets[throttled + 1].time - gets[throttled].time >= 0.6


async def test_create_is_retried_after_429(
    make_emulator: MakeEmulator, make_flux: MakeFlux
) -> None:
    emulator = make_emulator(faults=[Fault("create", "429", times=2, retry_after=0.1)])
    flux = make_flux(emulator)
    result = await flux("generate", prompt="rate limited")
    assert result.status == "succeeded"
    assert emulator.stats.creates == 3 and emulator.stats.predictions_created == 1


@pytest.mark.parametrize("status", ["500", "502", "503", "504"])
async def test_create_is_not_retried_after_a_server_error(
    make_emulator: MakeEmulator, make_flux: MakeFlux, status: str
) -> None:
    emulator = make_emulator(faults=[Fault("create", status, times=1)])
    flux = make_flux(emulator)
    with pytest.raises(FluxAPIError) as info:
        await flux("generate", prompt="server error")
    assert info.value.status == int(status)
    assert emulator.stats.creates == 1


async def test_create_is_not_resent_after_a_dropped_connection(
    flux: Flux, emulator: Emulator
) -> None:
    with pytest.raises(FluxConnectionError) as info:
        await flux("generate", prompt="dropped [emulator:create=drop]")
    assert info.value.maybe_created
    assert "may have been created" in str(info.value)
    assert emulator.stats.creates == 1 and emulator.stats.predictions_created == 1


async def test_create_is_not_resent_after_a_read_timeout(
    emulator: Emulator, make_flux: MakeFlux
) -> None:
    flux = make_flux(emulator, read_timeout=0.3, sync_wait=0)
    with pytest.raises(FluxConnectionError) as info:
        await flux("generate", prompt="slow [emulator:create=slow1.5]")
    assert info.value.maybe_created
    assert emulator.stats.creates == 1


async def test_create_is_retried_when_the_connection_was_refused(
    make_flux: MakeFlux, make_emulator: MakeEmulator
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flux = make_flux(base_url=f"http://127.0.0.1:{port}/v1")
    task = asyncio.ensure_future(flux("generate", prompt="server not up yet"))
    await asyncio.sleep(0.4)  # the first attempts are refused: nothing listens yet
    emulator = make_emulator(port=port)
    result = await task
    assert result.status == "succeeded"
    assert emulator.stats.creates == 1


async def test_an_unreachable_api_is_a_clear_error(make_flux: MakeFlux) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flux = make_flux(base_url=f"http://127.0.0.1:{port}/v1", retry=RetryPolicy(max_retries=2))
    with pytest.raises(FluxConnectionError, match="Could not reach the API") as info:
        await flux("get", "abc")
    assert not info.value.maybe_created


async def test_cancel_is_retried(make_emulator: MakeEmulator, make_flux: MakeFlux) -> None:
    emulator = make_emulator()
    flux = make_flux(emulator)
    created = await flux("create", prompt="[emulator:hang] [emulator:cancel=503x1]")
    canceled = await flux("cancel", created.id)
    assert canceled.status == "canceled"
    assert [r.status for r in requests_to(emulator, "cancel")] == [503, 200]


async def test_failed_prediction(flux: Flux) -> None:
    with pytest.raises(PredictionFailed) as info:
        await flux("generate", prompt="crash [emulator:fail]")
    assert not isinstance(info.value, ContentModerated)
    assert info.value.status == "failed" and "Emulated failure" in str(info.value)
    assert info.value.prediction_id


async def test_moderated_prediction(flux: Flux) -> None:
    with pytest.raises(ContentModerated) as info:
        await flux("generate", prompt="forbidden [emulator:moderate]")
    assert "E005" in str(info.value) and "Change the prompt" in str(info.value)


# -- deadlines and interruptions ------------------------------------------------------------------


async def test_deadline_cancels_the_prediction(flux: Flux, emulator: Emulator) -> None:
    with pytest.raises(PredictionTimeout) as info:
        await flux("generate", prompt="forever [emulator:hang]", timeout=1.5)
    pid = info.value.prediction_id
    assert pid and info.value.canceled
    assert emulator.stats.cancels == 1
    assert emulator.prediction_json(pid)["status"] == "canceled"
    assert pid in str(info.value)


async def test_wait_can_leave_the_prediction_running(flux: Flux, emulator: Emulator) -> None:
    created = await flux("create", prompt="[emulator:hang]")
    with pytest.raises(PredictionTimeout) as info:
        await flux("wait", created.id, timeout=0.5, cancel_on_timeout=False)
    assert not info.value.canceled and emulator.stats.cancels == 0
    assert emulator.prediction_json(created.id)["status"] == "processing"


async def test_aborted_is_final(flux: Flux, emulator: Emulator) -> None:
    created = await flux("create", prompt="queued too long [emulator:queue=30]", cancel_after=1)
    final = await flux("wait", created.id, timeout=20)
    assert final.status == "aborted"
    assert len(requests_to(emulator, "get")) < 30
    with pytest.raises(PredictionFailed, match="aborted") as info:
        flux.client.result(final)
    assert "not billed" in str(info.value)


def test_ctrl_c_cancels_upstream(emulator: Emulator) -> None:
    # Plain sync test: a KeyboardInterrupt must not cross an event loop. It is raised from the
    # progress callback, as Ctrl-C would arrive between two polls.
    from flux_tools import FluxClient

    def interrupt(prediction: Any) -> None:
        if prediction.status == "processing":
            raise KeyboardInterrupt

    with (
        FluxClient("test-token", base_url=emulator.base_url, sync_wait=0) as client,
        pytest.raises(KeyboardInterrupt),
    ):
        client.generate(prompt="[emulator:hang]", on_progress=interrupt)
    assert emulator.stats.cancels == 1
    (pid,) = list(emulator.predictions)
    assert emulator.prediction_json(pid)["status"] == "canceled"


async def test_task_cancellation_cancels_upstream(emulator: Emulator, make_flux: MakeFlux) -> None:
    flux = make_flux(emulator, sync_wait=0)
    if flux.kind == "sync":
        pytest.skip("a thread cannot be cancelled; Ctrl-C is the sync client's interrupt")
    task = asyncio.ensure_future(flux("generate", prompt="[emulator:hang]"))
    while not requests_to(emulator, "get"):
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert emulator.stats.cancels == 1


# -- credentials ---------------------------------------------------------------------------------


async def test_token_goes_only_to_the_api_origin(
    make_emulator: MakeEmulator, make_flux: MakeFlux, tmp_path: Path
) -> None:
    emulator = make_emulator(token="s3cret-token-value", foreign_urls=True, honor_prefer_wait=False)
    flux = make_flux(emulator, api_token="s3cret-token-value")
    result = await flux("generate", prompt="foreign urls")
    assert result.prediction.urls and result.prediction.urls.get
    assert result.prediction.urls.get.startswith(emulator.foreign_origin)
    await flux.save(result, tmp_path)
    foreign = [r for r in emulator.stats.requests if r.origin == "foreign"]
    assert foreign and all(r.path.startswith("/files/") for r in foreign)  # downloads only
    assert not any("authorization" in r.headers for r in foreign)
    api = [r for r in emulator.stats.requests if r.origin == "api"]
    assert api and all(r.headers["authorization"] == "Bearer s3cret-token-value" for r in api)


async def test_token_never_appears_in_errors_reprs_or_logs(
    make_emulator: MakeEmulator, make_flux: MakeFlux, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = make_emulator(token="the-right-token")
    flux = make_flux(emulator, api_token="wrong-token-12345")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as info:
        await flux("generate", prompt="x")
    texts = [str(info.value), repr(info.value), repr(flux.client), caplog.text]
    assert all("wrong-token-12345" not in text for text in texts)
    assert "FLUX_API_TOKEN" in str(info.value) and info.value.status == 401
    assert "token=set" in repr(flux.client)


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    from flux_tools import FluxClient

    monkeypatch.setenv("REPLICATE_API_TOKEN", "from-replicate-env")
    monkeypatch.delenv("FLUX_API_TOKEN", raising=False)
    assert FluxClient(base_url=emulator.base_url).settings.token == "from-replicate-env"
    monkeypatch.setenv("FLUX_API_TOKEN", "from-flux-env")
    assert FluxClient(base_url=emulator.base_url).settings.token == "from-flux-env"
    monkeypatch.setenv("FLUX_BASE_URL", emulator.base_url)
    assert FluxClient().base_url == emulator.base_url
    with pytest.raises(ValueError, match="http"):
        FluxClient(base_url="ftp://example.com")


# -- outputs and files ------------------------------------------------------------------------


async def test_data_uri_outputs_are_decoded_locally(
    make_emulator: MakeEmulator, make_flux: MakeFlux, tmp_path: Path
) -> None:
    emulator = make_emulator(output_mode="data")
    flux = make_flux(emulator)
    result = await flux("generate", prompt="inline", output_format="png")
    assert result.urls[0].startswith("data:image/png;base64,")
    (path,) = await flux.save(result, tmp_path)
    assert path.suffix == ".png" and Image.open(path).format == "PNG"
    assert requests_to(emulator, "file") == []


@pytest.mark.parametrize(
    ("fmt", "pil", "suffix"),
    [("png", "PNG", ".png"), ("jpg", "JPEG", ".jpg"), ("webp", "WEBP", ".webp")],
)
async def test_extension_comes_from_the_bytes_not_the_url(
    make_emulator: MakeEmulator,
    make_flux: MakeFlux,
    tmp_path: Path,
    fmt: str,
    pil: str,
    suffix: str,
) -> None:
    emulator = make_emulator(mislabel_files=True)
    flux = make_flux(emulator)
    result = await flux("generate", prompt="mislabeled", output_format=fmt, aspect_ratio="16:9")
    assert result.urls[0].endswith(".png")
    (path,) = await flux.save(result, tmp_path)
    assert path.suffix == suffix
    with Image.open(path) as image:
        assert image.format == pil and image.width > image.height
    assert not list(tmp_path.glob(".*.part"))


async def test_downloads_are_retried_and_capped(
    flux: Flux, emulator: Emulator, tmp_path: Path
) -> None:
    result = await flux("generate", prompt="flaky file [emulator:file=503x1]")
    (path,) = await flux.save(result, tmp_path / "ok")
    assert path.exists() and [r.status for r in requests_to(emulator, "file")] == [503, 200]
    with pytest.raises(DownloadError, match="bytes"):
        await flux.save(result, tmp_path / "capped", max_bytes=1000)
    assert list((tmp_path / "capped").iterdir()) == []  # nothing half-written left behind


async def test_expired_outputs_say_so(
    make_emulator: MakeEmulator, make_flux: MakeFlux, tmp_path: Path
) -> None:
    emulator = make_emulator(data_retention=0.3)
    flux = make_flux(emulator)
    result = await flux("generate", prompt="short-lived")
    await asyncio.sleep(0.5)
    with pytest.raises(DownloadError, match="expire"):
        await flux.save(result, tmp_path)
    later = await flux("get", result.prediction_id)
    assert later.data_removed and later.output is None
    with pytest.raises(FluxError, match="data_removed"):
        flux.client.result(later)


async def test_unknown_prediction_is_a_clear_error(flux: Flux) -> None:
    with pytest.raises(FluxAPIError) as info:
        await flux("get", "doesnotexist")
    assert info.value.status == 404 and info.value.prediction_id == "doesnotexist"


async def test_summary_never_carries_inline_bytes(
    make_emulator: MakeEmulator, make_flux: MakeFlux, tmp_path: Path
) -> None:
    emulator = make_emulator(output_mode="data")
    flux = make_flux(emulator)
    # A real PNG (inputs are checked before sending), padded so that its base64 is 5000 long.
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, "PNG")
    padded = png.getvalue().ljust(3750, b"\0")
    image_prompt = "data:image/png;base64," + base64.b64encode(padded).decode()
    result = await flux("generate", prompt="inline", image_prompt=image_prompt)
    summary = result.summary()
    assert len(json.dumps(summary)) < 2000
    assert summary["urls"][0].startswith("data:image/webp;base64 (")
    assert summary["urls"][0].endswith(" characters)") and "," not in summary["urls"][0]
    assert summary["input"]["image_prompt"].endswith("(5022 characters)")
    assert result.urls[0] == result.prediction.output  # the result itself keeps every byte
