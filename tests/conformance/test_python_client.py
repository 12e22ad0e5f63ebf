"""The official Python ``replicate`` client (1.0.7) against the emulator, as a user's tests use it.

The client is given the emulator's origin as ``base_url`` (it adds ``/v1`` itself) and, in HTTPS
mode, trusts the emulator's CA through ``SSL_CERT_FILE`` (httpx reads it), as a user would.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import replicate
from PIL import Image
from replicate.client import Client as OfficialClient
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput
from replicate.webhook import InvalidSignatureError, Webhooks

from flux_tools.emulator import Emulator

from .conftest import Factory

PRO = "black-forest-labs/flux-pro"
SCHNELL = "black-forest-labs/flux-schnell"
Client = Callable[..., Any]


@pytest.fixture
def official(monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """Build official clients for an emulator; the environment is the user's, cleaned."""
    for name in ("REPLICATE_API_TOKEN", "REPLICATE_BASE_URL", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    made: list[Any] = []

    def make(emulator: Emulator, *, token: bool = True) -> Any:
        if emulator.ca_bundle:
            monkeypatch.setenv("SSL_CERT_FILE", emulator.ca_bundle)
        client = OfficialClient(
            api_token=emulator.token if token else None, base_url=emulator.origin
        )
        client.poll_interval = 0.05  # REPLICATE_POLL_INTERVAL; keeps the suite quick
        made.append(client)
        return client

    yield make


def api_requests(emulator: Emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.stats.requests if r.path.startswith("/v1/")]


def assert_image(output: Any, emulator: Emulator) -> None:
    assert isinstance(output, FileOutput)
    assert output.url.startswith(emulator.origin + "/files/")
    data = output.read()
    assert Image.open(io.BytesIO(data)).format == "WEBP"


def test_run_blocks_and_returns_a_file_output(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    output = official(emulator).run(PRO, input={"prompt": "a fox"})
    assert_image(output, emulator)
    (create,) = [r for r in emulator.stats.requests if r.path.startswith("/v1/")]
    assert create.headers["prefer"] == "wait"
    assert create.headers["authorization"] == f"Bearer {emulator.token}"


def test_run_over_http_returns_the_url_as_text(official: Client, make_emulator: Factory) -> None:
    """The clients wrap only https: and data: outputs; use https=True to get FileOutput."""
    emulator = make_emulator()
    output = official(emulator).run(PRO, input={"prompt": "a fox"})
    assert isinstance(output, str) and output.startswith("http://")


def test_run_with_a_wait_that_runs_out_polls_to_the_output(
    official: Client, make_emulator: Factory
) -> None:
    emulator = make_emulator(https=True)
    output = official(emulator).run(PRO, input={"prompt": "slow [emulator:latency=2]"}, wait=1)
    assert_image(output, emulator)  # not None: the blocking answer said "starting"
    calls = api_requests(emulator)
    assert calls[0] == ("POST", "/v1/models/black-forest-labs/flux-pro/predictions")
    assert len(calls) > 1 and {m for m, _ in calls[1:]} == {"GET"}
    assert emulator.stats.requests[0].headers["prefer"] == "wait=1"


def test_run_in_polling_mode(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    output = official(emulator).run(PRO, input={"prompt": "polled"}, wait=False)
    assert_image(output, emulator)
    assert "prefer" not in emulator.stats.requests[0].headers
    assert emulator.stats.gets >= 1


async def test_async_run(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    output = await official(emulator).async_run(PRO, input={"prompt": "async"})
    assert isinstance(output, FileOutput)
    assert (await output.aread())[:4] == b"RIFF"


def test_run_of_a_list_output_model(official: Client, https_emulator: Emulator) -> None:
    outputs = official(https_emulator).run(SCHNELL, input={"prompt": "two", "num_outputs": 2})
    assert isinstance(outputs, list) and len(outputs) == 2
    for output in outputs:
        assert_image(output, https_emulator)


def test_run_by_version_reads_the_version(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    client = official(emulator)
    version = client.models.get(SCHNELL).latest_version.id
    outputs = client.run(f"{SCHNELL}:{version}", input={"prompt": "versioned"})
    assert len(outputs) == 1
    assert_image(outputs[0], emulator)
    assert api_requests(emulator)[1:] == [
        ("POST", "/v1/predictions"),
        ("GET", f"/v1/models/{SCHNELL}/versions/{version}"),
    ]


def test_predictions_create_get_wait_reload_cancel(
    official: Client, https_emulator: Emulator
) -> None:
    client = official(https_emulator)
    prediction = client.predictions.create(model=PRO, input={"prompt": "created"})
    assert prediction.status == "starting"
    assert client.predictions.get(prediction.id).id == prediction.id
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.output.startswith(https_emulator.origin + "/files/")
    assert prediction.metrics["predict_time"] > 0
    hung = client.models.predictions.create(model=PRO, input={"prompt": "x [emulator:hang]"})
    canceled = client.predictions.cancel(hung.id)
    assert canceled.status == "canceled"
    hung.reload()
    assert hung.status == "canceled"


def test_stream(official: Client, https_emulator: Emulator) -> None:
    events = list(official(https_emulator).stream(SCHNELL, input={"prompt": "streamed"}))
    kinds = [e.event.value for e in events]
    assert kinds == ["logs", "output", "done"]
    assert events[0].data.startswith("Using seed: ")
    assert_image(events[1].data, https_emulator)


def test_invalid_input_is_a_422_naming_the_field(
    official: Client, https_emulator: Emulator
) -> None:
    with pytest.raises(ReplicateError) as info:
        official(https_emulator).run(PRO, input={"prompt": "x", "steps": 99})
    assert info.value.status == 422
    assert info.value.title == "Input validation failed"
    assert info.value.detail == "- input.steps: Must be less than or equal to 50"


def test_no_token_is_a_401(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    with pytest.raises(ReplicateError) as info:
        official(emulator, token=False).run(PRO, input={"prompt": "x"})
    assert info.value.status == 401
    assert info.value.title == "Unauthenticated"
    assert emulator.stats.predictions_created == 0


def test_throttled_create_is_a_429(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True, rate_limits="creates=1/60")
    client = official(emulator)
    client.predictions.create(model=PRO, input={"prompt": "first"})
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model=PRO, input={"prompt": "second"})
    assert info.value.status == 429
    assert info.value.detail == "Request was throttled. Your rate limit resets in ~60s."
    last = emulator.stats.requests[-1]
    assert last.status == 429
    assert emulator.stats.predictions_created == 1


def test_throttled_read_is_retried_after_retry_after(
    official: Client, make_emulator: Factory
) -> None:
    """The client retries a throttled GET once Retry-After (whole seconds) has passed."""
    emulator = make_emulator(https=True, rate_limits="reads=1/1:burst=1")
    client = official(emulator)
    prediction = client.predictions.create(model=PRO, input={"prompt": "x"})
    first = client.predictions.get(prediction.id)
    second = client.predictions.get(prediction.id)  # throttled, waited for, retried
    assert first.id == second.id == prediction.id
    statuses = [r.status for r in emulator.stats.requests if r.method == "GET"]
    assert statuses[:2] == [200, 429] and statuses[-1] == 200
    assert emulator.stats.throttled >= 1


def test_moderation_raises_model_error(official: Client, https_emulator: Emulator) -> None:
    with pytest.raises(ModelError, match=r"flagged as sensitive.*\(E005\)") as info:
        official(https_emulator).run(PRO, input={"prompt": "x [emulator:moderate]"})
    assert info.value.prediction.status == "failed"


def test_list_and_paginate(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True, page_size=2)
    client = official(emulator)
    made = [client.predictions.create(model=PRO, input={"prompt": f"n{i}"}).id for i in range(3)]
    page = client.predictions.list()
    assert [p.id for p in page] == made[::-1][:2]
    assert page.next is not None
    listed = [p.id for page in replicate.paginate(client.predictions.list) for p in page]
    assert listed == made[::-1]


def test_models_get_describes_the_schema(official: Client, https_emulator: Emulator) -> None:
    model = official(https_emulator).models.get("black-forest-labs/flux-2-pro")
    assert model.id == "black-forest-labs/flux-2-pro"
    schemas = model.latest_version.openapi_schema["components"]["schemas"]
    assert {"prompt", "input_images"} <= set(schemas["Input"]["properties"])
    assert schemas["Output"]["format"] == "uri"


def test_accounts_current(official: Client, https_emulator: Emulator) -> None:
    account = official(https_emulator).accounts.current()
    assert account.type == "user" and account.username


def test_a_file_input_is_uploaded_then_edited(
    official: Client, make_emulator: Factory, tmp_path: Path
) -> None:
    emulator = make_emulator(https=True)
    photo = tmp_path / "car.png"
    Image.new("RGB", (128, 64), (220, 30, 30)).save(photo)
    with photo.open("rb") as file:
        output = official(emulator).run(
            "black-forest-labs/flux-kontext-pro", input={"prompt": "gold", "input_image": file}
        )
    assert isinstance(output, FileOutput)
    image = Image.open(io.BytesIO(output.read())).convert("RGB")
    assert abs(image.width / image.height - 2) < 0.1  # derived from the upload
    calls = api_requests(emulator)
    assert calls[0] == ("POST", "/v1/files")
    assert calls[1] == ("POST", "/v1/models/black-forest-labs/flux-kontext-pro/predictions")
    (prediction,) = emulator.predictions.values()
    assert prediction.input["input_image"].startswith(emulator.base_url + "/files/")


def test_a_file_input_as_a_data_uri(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    file = io.BytesIO()
    Image.new("RGB", (64, 128), (30, 30, 220)).save(file, format="PNG")
    output = official(emulator).run(
        "black-forest-labs/flux-kontext-pro",
        input={"prompt": "gold", "input_image": file},
        file_encoding_strategy="base64",
    )
    image = Image.open(io.BytesIO(output.read()))
    assert abs(image.height / image.width - 2) < 0.1
    assert emulator.stats.uploads == 0


def test_webhook_is_signed_as_validate_expects(official: Client, make_emulator: Factory) -> None:
    emulator = make_emulator(https=True)
    received: list[tuple[dict[str, str], str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the stdlib names it
            body = self.rfile.read(int(self.headers["content-length"])).decode()
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = official(emulator)
        client.run(
            PRO,
            input={"prompt": "hooked"},
            webhook=f"http://127.0.0.1:{server.server_address[1]}/hook",
            webhook_events_filter=["completed"],
        )
        deadline = time.monotonic() + 10
        while not received:
            assert time.monotonic() < deadline, "no webhook arrived"
            time.sleep(0.02)
    finally:
        server.shutdown()
        server.server_close()
    ((headers, body),) = received
    secret = client.webhooks.default.secret()
    Webhooks.validate(headers=headers, body=body, secret=secret, tolerance=60)
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(headers=headers, body=body + " ", secret=secret)
    assert json.loads(body)["status"] == "succeeded"


def test_data_uri_outputs_are_file_outputs_too(official: Client, make_emulator: Factory) -> None:
    """Outputs inline as data: URIs (as Replicate served them for a while): FileOutput as well."""
    emulator = make_emulator(output_mode="data")
    output = official(emulator).run(PRO, input={"prompt": "inline"})
    assert isinstance(output, FileOutput)
    assert output.url.startswith("data:image/webp;base64,")
    assert output.read()[:4] == b"RIFF"
    assert emulator.stats.files == 0  # nothing to download


def test_the_default_client_configured_from_the_environment_only(
    make_emulator: Factory,
) -> None:
    """``replicate.run`` as most users call it: REPLICATE_BASE_URL, REPLICATE_API_TOKEN and the
    CA in SSL_CERT_FILE, all from ``emulator.client_env()`` (in a fresh process: the module's
    default client keeps its connection)."""
    emulator = make_emulator(https=True)
    code = (
        "import replicate\n"
        "out = replicate.run('black-forest-labs/flux-pro', input={'prompt': 'env'})\n"
        "print(type(out).__name__, out.url, out.read()[:4])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "SSL_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **emulator.client_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    kind, url, head = done.stdout.split()
    assert kind == "FileOutput" and url.startswith(emulator.origin + "/files/")
    assert head == "b'RIFF'"
    (create,) = [r for r in emulator.stats.requests if r.method == "POST"]
    assert create.headers["authorization"] == f"Bearer {emulator.token}"
