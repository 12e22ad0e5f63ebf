"""The official npm ``replicate`` client (1.4.0) against the emulator, as a user's tests use it.

Each test runs one scenario of ``js/conformance.mjs`` in node, with ``baseUrl`` set to the
emulator's ``/v1`` base and, in HTTPS mode, the emulator's CA in ``NODE_EXTRA_CA_CERTS``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

from flux_tools.emulator import Emulator, Fault

from .conftest import Factory, RunJS


def assert_file_output(output: dict[str, Any], emulator: Emulator) -> None:
    assert output["kind"] == "FileOutput"
    assert output["url"].startswith(emulator.origin + "/files/")
    assert output["type"].startswith("image/")
    assert output["size"] > 100
    assert output["head"] == "RIFF"  # the default webp, read through the client


def test_run_blocks_and_returns_a_file_output(run_js: RunJS, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    result = run_js("run_block", emulator)
    assert_file_output(result["output"], emulator)
    predictions = [r for r in emulator.stats.requests if r.path.startswith("/v1/")]
    assert [(r.method, r.headers.get("prefer")) for r in predictions] == [("POST", "wait")]


def test_run_with_a_wait_that_runs_out_polls_to_the_output(
    run_js: RunJS, make_emulator: Factory
) -> None:
    emulator = make_emulator(https=True)
    result = run_js("run_block_short_wait", emulator)
    assert_file_output(result["output"], emulator)  # not null: "starting" made it poll
    gets = [r for r in emulator.stats.requests if r.method == "GET" and "/predictions/" in r.path]
    assert gets, "the client should have polled"
    assert emulator.stats.requests[0].headers["prefer"] == "wait=1"


def test_run_in_poll_mode(run_js: RunJS, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    result = run_js("run_poll", emulator)
    assert_file_output(result["output"], emulator)
    assert result["seen"][0] == "starting" and result["seen"][-1] == "succeeded"
    assert "prefer" not in emulator.stats.requests[0].headers


def test_run_of_a_list_output_model(run_js: RunJS, https_emulator: Emulator) -> None:
    outputs = run_js("run_list_output", https_emulator)["output"]
    assert len(outputs) == 2
    for output in outputs:
        assert_file_output(output, https_emulator)
    assert outputs[0]["url"] != outputs[1]["url"]


def test_run_by_version(run_js: RunJS, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    result = run_js("run_by_version", emulator)
    (output,) = result["output"]
    assert_file_output(output, emulator)
    create = next(r for r in emulator.stats.requests if r.method == "POST")
    assert create.path == "/v1/predictions"  # the npm client creates by version there


def test_predictions_create_get_wait_cancel(run_js: RunJS, https_emulator: Emulator) -> None:
    result = run_js("predictions", https_emulator)
    assert result["created"] == "starting"
    assert result["got"] is True
    assert result["done"] == "succeeded"
    assert result["output"].startswith(https_emulator.origin + "/files/")
    assert result["canceled"] == "canceled"


@pytest.mark.parametrize("strategy", ["upload", "data-uri"])
def test_a_buffer_input_is_sent_and_edited(
    run_js: RunJS, make_emulator: Factory, tmp_path: Path, strategy: str
) -> None:
    """Uploaded to the Files API; inline as a data: URI when the upload fails (a 5xx)."""
    faults = [] if strategy == "upload" else [Fault("upload", "503", times=None)]
    emulator = make_emulator(https=True, faults=faults)
    photo = tmp_path / "car.png"
    Image.new("RGB", (128, 64), (220, 30, 30)).save(photo)
    output = run_js("file_input", emulator, FLUX_TEST_IMAGE=str(photo))["output"]
    assert output["kind"] == "FileOutput" and output["head"] == "\x89PNG"  # kontext: png
    (prediction,) = emulator.predictions.values()
    sent = prediction.input["input_image"]
    if strategy == "upload":
        assert sent.startswith(emulator.base_url + "/files/")
        assert emulator.stats.uploads == 1
    else:  # a Buffer has no type: the client labels it octet-stream, as Replicate accepts
        assert sent.startswith("data:application/octet-stream;base64,")
        assert emulator.stats.uploads == 1  # the failed upload
    with httpx2.Client(verify=emulator.ssl_context()) as client:
        edited = Image.open(io.BytesIO(client.get(output["url"]).content))
    assert abs(edited.width / edited.height - 2) < 0.1  # derived from the 2:1 input


def test_webhook_is_signed_as_validate_webhook_expects(
    run_js: RunJS, make_emulator: Factory
) -> None:
    emulator = make_emulator(https=True)
    result = run_js("webhook", emulator)
    assert result == {"valid": True, "tampered": False, "status": "succeeded"}
    assert [d.event for d in emulator.wait_for_webhooks(1)] == ["completed"]


def test_stream(run_js: RunJS, https_emulator: Emulator) -> None:
    events = run_js("stream", https_emulator)["events"]
    assert [e["event"] for e in events] == ["logs", "output", "done"]
    assert events[0]["data"]["value"].startswith("Using seed: ")
    assert_file_output(events[1]["data"], https_emulator)  # a /v1/files/ stream: FileOutput
    assert events[2]["data"]["value"] == "{}"


def test_invalid_input_is_a_422_naming_the_field(run_js: RunJS, https_emulator: Emulator) -> None:
    error = run_js("invalid_input", https_emulator)
    assert error["raised"] is True
    assert error["status"] == 422
    assert "input.steps" in error["message"] and "invalid_fields" in error["message"]


def test_no_token_is_a_401(run_js: RunJS, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    error = run_js("unauthenticated", emulator, token=False)
    assert (error["raised"], error["status"]) == (True, 401)
    assert "You did not pass a valid authentication token" in error["message"]
    assert "authorization" not in emulator.stats.requests[0].headers
    assert emulator.stats.predictions_created == 0


def test_throttled_create_is_a_429_with_retry_after(run_js: RunJS, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True, rate_limits="creates=1/60")
    error = run_js("throttled", emulator)
    assert (error["raised"], error["status"]) == (True, 429)
    assert error["retryAfter"] == "60"
    assert "Request was throttled. Your rate limit resets in ~60s." in error["message"]
    # The npm client retries a throttled create by itself (5 times) before giving up.
    assert emulator.stats.throttled == 6
    assert emulator.stats.predictions_created == 1


def test_moderation_fails_the_run(run_js: RunJS, https_emulator: Emulator) -> None:
    error = run_js("moderated", https_emulator)
    assert error["raised"] is True
    assert "Prediction failed" in error["message"] and "(E005)" in error["message"]


def test_list_and_paginate(run_js: RunJS, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True, page_size=2)
    made = [
        emulator.prediction_json(pid)["id"]
        for pid in _create(emulator, 3)  # made through plain HTTP, listed by the client
    ]
    result = run_js("list", emulator)
    assert result["first"] == made[::-1][:2]
    assert result["next"].startswith(emulator.base_url + "/predictions?cursor=")
    assert result["ids"] == made[::-1]


def test_models_get_describes_the_schema(run_js: RunJS, https_emulator: Emulator) -> None:
    result = run_js("models_get", https_emulator)
    assert (result["owner"], result["name"]) == ("black-forest-labs", "flux-2-pro")
    assert "prompt" in result["input"] and "input_images" in result["input"]
    assert result["output"]["format"] == "uri"


def test_accounts_current(run_js: RunJS, https_emulator: Emulator) -> None:
    account = run_js("account", https_emulator)
    assert account["type"] == "user" and account["username"]


def _create(emulator: Emulator, count: int) -> list[str]:
    with httpx2.Client(
        base_url=emulator.base_url,
        headers={"Authorization": f"Bearer {emulator.token}"},
        verify=emulator.ssl_context(),
    ) as client:
        return [
            client.post(
                "/models/black-forest-labs/flux-pro/predictions",
                json={"input": {"prompt": f"n{i}"}},
            ).json()["id"]
            for i in range(count)
        ]
