"""The emulator itself, over real HTTP with plain httpx2 (not the project's client)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import httpx2
import pytest
from PIL import Image

from flux_tools.emulator import Emulator, Fault
from flux_tools.emulator._state import parse_duration

from .conftest import AUTH, CREATE, Factory

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def create(
    client: httpx2.Client,
    prompt: str = "a red fox",
    headers: dict[str, str] | None = None,
    **inp: Any,
) -> httpx2.Response:
    return client.post(CREATE, json={"input": {"prompt": prompt, **inp}}, headers=headers)


def poll(
    client: httpx2.Client, prediction_id: str, until: set[str] = TERMINAL, timeout: float = 10
) -> tuple[dict[str, Any], list[str]]:
    """Poll until a status in ``until``; also return the distinct statuses seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(f"/predictions/{prediction_id}").json()
        if not seen or seen[-1] != doc["status"]:
            seen.append(doc["status"])
        if doc["status"] in until:
            return doc, seen
        assert time.monotonic() < deadline, f"still {doc['status']} after {timeout}s"
        time.sleep(0.02)


def stamp(text: str) -> datetime:
    assert ISO.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- package -------------------------------------------------------------------------------------


def test_import_does_not_load_pillow() -> None:
    code = "import sys, flux_tools.emulator; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- lifecycle -----------------------------------------------------------------------------------


def test_lifecycle_statuses_and_timestamps(make: Factory) -> None:
    emu = make(latency=0.3, queue_time=0.15)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        response = create(client, seed=1234)
        assert response.status_code == 201
        first = response.json()
        assert first["status"] == "starting"
        assert re.fullmatch(r"[0-9a-z]{26}", first["id"])
        assert first["model"] == "black-forest-labs/flux-pro"
        assert first["version"] == "hidden"
        assert first["input"] == {"prompt": "a red fox", "seed": 1234}
        assert (first["started_at"], first["completed_at"], first["output"]) == (None, None, None)
        assert first["logs"] == "" and first["error"] is None and not first["data_removed"]
        assert "metrics" not in first
        assert first["urls"]["get"] == f"{emu.base_url}/predictions/{first['id']}"
        assert first["urls"]["cancel"] == f"{emu.base_url}/predictions/{first['id']}/cancel"
        assert first["urls"]["stream"] == f"{emu.origin}/v1/files/stream/{first['id']}"
        assert first["urls"]["web"] == f"{emu.origin}/p/{first['id']}"

        done, seen = poll(client, first["id"])
    assert seen == ["starting", "processing", "succeeded"]
    created, started, completed = (
        stamp(done[k]) for k in ("created_at", "started_at", "completed_at")
    )
    assert created < started < completed
    assert done["created_at"] == first["created_at"]
    assert done["logs"] == "Using seed: 1234\n"
    assert done["output"] == f"{emu.origin}/files/{done['id']}/out-0.webp"
    assert 0 < done["metrics"]["predict_time"] < done["metrics"]["total_time"]
    assert emu.prediction_json(done["id"]) == done
    assert done["id"] in emu.predictions
    completed_mono = emu.stats.completed_at_monotonic[done["id"]]
    assert emu.stats.requests[0].time < completed_mono <= time.monotonic()


def test_random_seed_is_reproducible_with_rng_seed(make: Factory) -> None:
    logs = []
    for _ in range(2):
        emu = make(rng_seed=7, latency=0.0, queue_time=0.0)
        with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
            doc = create(client, headers={"Prefer": "wait"}).json()
        logs.append(doc["logs"])
    assert logs[0] == logs[1]
    assert re.fullmatch(r"Using seed: \d+\n", logs[0])


def test_stats_count_each_endpoint(emu: Emulator, client: httpx2.Client) -> None:
    doc = create(client, headers={"Prefer": "wait"}).json()
    client.get(f"/predictions/{doc['id']}")
    client.post(f"/predictions/{doc['id']}/cancel")
    httpx2.get(doc["output"])
    create(client, steps=99)  # a rejected create still counts as a create
    stats = emu.stats
    assert (stats.creates, stats.predictions_created, stats.gets, stats.cancels, stats.files) == (
        2,
        1,
        1,
        1,
        1,
    )
    assert [r.status for r in stats.requests] == [201, 200, 200, 200, 422]
    assert {r.origin for r in stats.requests} == {"api"}
    emu.reset_stats()
    assert (emu.stats.creates, emu.stats.requests) == (0, [])


# --- Prefer: wait --------------------------------------------------------------------------------


def test_prefer_wait_answers_a_finished_prediction_processing_with_output(
    client: httpx2.Client,
) -> None:
    """Replicate's blocking API: done, but still "processing", with the output already set."""
    response = create(client, headers={"Prefer": "wait"})
    assert response.status_code == 201
    held = response.json()
    assert held["status"] == "processing"
    assert held["output"] and held["completed_at"] is None
    later = client.get(f"/predictions/{held['id']}").json()
    assert later["status"] == "succeeded"
    assert later["output"] == held["output"]


def test_prefer_wait_n_that_runs_out_answers_starting(make: Factory) -> None:
    """Replicate answers "starting" when the wait runs out, though the model is running."""
    emu = make(latency=30, queue_time=0.1)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        response = create(client, headers={"Prefer": "wait=1"})
        now = client.get(f"/predictions/{response.json()['id']}").json()
    assert response.status_code == 201
    held = response.json()
    assert held["status"] == "starting"
    assert (held["started_at"], held["output"], held["logs"]) == (None, None, "")
    assert response.elapsed.total_seconds() >= 0.9
    assert now["status"] == "processing"  # what it really is doing


def test_prefer_wait_answers_a_failure_as_failed(client: httpx2.Client) -> None:
    doc = create(client, "x [emulator:fail]", headers={"Prefer": "wait"}).json()
    assert doc["status"] == "failed" and doc["error"]


def test_blocking_answers_final_answers_the_status_as_it_is(make: Factory) -> None:
    emu = make(blocking_answers="final")
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client, headers={"Prefer": "wait"}).json()
    assert doc["status"] == "succeeded" and doc["completed_at"]


def test_gateway_mode_ignores_prefer_wait(make: Factory) -> None:
    emu = make(latency=0.5, honor_prefer_wait=False)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        response = create(client, headers={"Prefer": "wait=bogus"})  # not even parsed
    assert response.status_code == 201
    assert response.json()["status"] == "starting"


def test_invalid_prefer_wait_is_a_problem(client: httpx2.Client) -> None:
    response = create(client, headers={"Prefer": "wait=61"})
    assert response.status_code == 422
    assert "Prefer" in response.json()["title"]


def test_early_output_answers_processing_with_output(make: Factory) -> None:
    emu = make(early_output=True)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        held = create(client, headers={"Prefer": "wait"}).json()
        later = client.get(f"/predictions/{held['id']}").json()
    assert held["status"] == "processing"
    assert held["output"] and held["completed_at"] is None
    assert later["status"] == "succeeded"
    assert later["output"] == held["output"]


# --- deadlines and cancel ------------------------------------------------------------------------


def test_cancel_after_aborts_a_queued_prediction(client: httpx2.Client, emu: Emulator) -> None:
    response = create(client, "queued [emulator:queue=5]", headers={"Cancel-After": "200ms"})
    assert response.status_code == 201
    assert response.json()["deadline"]
    done, seen = poll(client, response.json()["id"])
    assert seen == ["starting", "aborted"]
    assert done["started_at"] is None and done["completed_at"]
    assert "predict_time" not in done["metrics"]  # never ran, not billed
    assert emu.stats.requests[0].headers["cancel-after"] == "200ms"


def test_cancel_after_cancels_a_running_prediction_and_wakes_prefer_wait(
    make: Factory,
) -> None:
    emu = make(latency=30)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        response = create(client, headers={"Cancel-After": "0.3s", "Prefer": "wait=20"})
    doc = response.json()
    assert doc["status"] == "canceled"
    assert response.elapsed.total_seconds() < 10
    assert doc["started_at"] and doc["completed_at"]
    assert doc["metrics"]["predict_time"] > 0
    assert doc["output"] is None


def test_invalid_cancel_after_is_a_problem(client: httpx2.Client, emu: Emulator) -> None:
    response = create(client, headers={"Cancel-After": "soon"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "Cancel-After" in response.json()["detail"]
    assert emu.stats.predictions_created == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("500ms", 0.5), ("0", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "-1s", "5 m", "1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cancel_endpoint(make: Factory) -> None:
    emu = make(latency=30)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client).json()
        canceled = client.post(f"/predictions/{doc['id']}/cancel")
        again = client.get(f"/predictions/{doc['id']}").json()
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["completed_at"]
    assert again["status"] == "canceled"
    assert again["completed_at"] == canceled.json()["completed_at"]


def test_cancel_leaves_a_finished_prediction_alone(client: httpx2.Client) -> None:
    held = create(client, headers={"Prefer": "wait"}).json()
    doc = client.get(f"/predictions/{held['id']}").json()
    assert doc["status"] == "succeeded"
    after = client.post(f"/predictions/{doc['id']}/cancel").json()
    assert after == doc


async def test_cancel_wakes_a_held_create(make: Factory) -> None:
    emu = make()
    async with httpx2.AsyncClient(base_url=emu.base_url, headers=AUTH, timeout=30) as client:
        held = asyncio.create_task(
            client.post(
                CREATE, json={"input": {"prompt": "x [emulator:hang]"}}, headers={"Prefer": "wait"}
            )
        )
        for _ in range(500):  # until the server stored it
            if emu.predictions:
                break
            await asyncio.sleep(0.01)
        (prediction_id,) = emu.predictions
        await asyncio.sleep(0.1)
        await client.post(f"/predictions/{prediction_id}/cancel")
        response = await asyncio.wait_for(held, 10)
    assert response.json()["status"] == "canceled"


# --- auth, validation, routing -------------------------------------------------------------------


UNAUTHENTICATED = {
    "title": "Unauthenticated",
    "detail": "You did not pass a valid authentication token",
    "status": 401,
}


def test_auth(make: Factory) -> None:
    emu = make(token="sekrit")
    assert emu.token == "sekrit"
    with httpx2.Client(base_url=emu.base_url) as client:
        missing = create(client)
        wrong = create(client, headers={"Authorization": "Bearer nope"})
        good = create(client, headers={"Authorization": "Bearer sekrit", "Prefer": "wait"})
        prediction_id = good.json()["id"]
        get_without = client.get(f"/predictions/{prediction_id}")
        cancel_without = client.post(f"/predictions/{prediction_id}/cancel")
        file_without = client.get(good.json()["output"])  # files are public
    for response in (missing, wrong, get_without, cancel_without):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json() == UNAUTHENTICATED
    assert good.status_code == 201
    assert file_without.status_code == 200
    assert emu.stats.requests[2].headers["authorization"] == "Bearer sekrit"
    assert emu.stats.predictions_created == 1


def test_any_token_is_accepted_but_none_is_401(emu: Emulator) -> None:
    """As Replicate: a request without a bearer token is refused whatever the configuration."""
    with httpx2.Client(base_url=emu.base_url) as client:
        doc = create(client, headers={"Authorization": "Bearer whatever", "Prefer": "wait"})
        prediction_id = doc.json()["id"]
        refused = [
            create(client),
            create(client, headers={"Authorization": "Bearer"}),
            create(client, headers={"Authorization": "Basic dXNlcjpwYXNz"}),
            client.get(f"/predictions/{prediction_id}"),
            client.post(f"/predictions/{prediction_id}/cancel"),
            client.get("/predictions"),
            client.get("/models/black-forest-labs/flux-pro"),
            client.get("/account"),
        ]
        public_file = client.get(doc.json()["output"])
    assert doc.status_code == 201
    assert emu.token  # a placeholder any caller can send
    for response in refused:
        assert response.status_code == 401, response.request.url
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json() == UNAUTHENTICATED
    assert public_file.status_code == 200
    assert emu.stats.predictions_created == 1


@pytest.mark.parametrize(
    ("inp", "kind", "field"),
    [
        ({}, "required", "input.prompt"),
        ({"prompt": "x", "aspect_ratio": "7:5"}, "enum", "input.aspect_ratio"),
        ({"prompt": "x", "steps": 51}, "number_lte", "input.steps"),
        ({"prompt": "x", "steps": 0}, "number_gte", "input.steps"),
        ({"prompt": "x", "colour": "red"}, "additional_property_not_allowed", "input.colour"),
        ({"prompt": "x", "steps": "25"}, "invalid", "input.steps"),
        ({"prompt": "x", "aspect_ratio": "custom"}, "invalid", "input"),
    ],
)
def test_validation_problems(
    client: httpx2.Client, emu: Emulator, inp: dict[str, Any], kind: str, field: str
) -> None:
    response = client.post(CREATE, json={"input": inp})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Input validation failed" and body["status"] == 422
    assert [(f["type"], f["field"]) for f in body["invalid_fields"]] == [(kind, field)]
    assert body["detail"].startswith(f"- {field}: ")
    assert emu.stats.predictions_created == 0


def test_validation_messages_read_like_replicate(client: httpx2.Client) -> None:
    body = client.post(CREATE, json={"input": {"prompt": "x", "steps": 51}}).json()
    assert body["detail"] == "- input.steps: Must be less than or equal to 50"


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"not json", 400), (b"[1]", 422), (b"{}", 422), (b'{"input": "x"}', 422)],
)
def test_bad_bodies(client: httpx2.Client, content: bytes, status: int) -> None:
    response = client.post(CREATE, content=content)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


def test_unknown_directive_is_rejected(client: httpx2.Client) -> None:
    response = create(client, "x [emulator:explode]")
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "input.prompt"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/models/black-forest-labs/flux-imaginary/predictions", 404),
        ("GET", "/models/black-forest-labs/flux-imaginary", 404),
        ("GET", "/predictions/doesnotexist", 404),
        ("POST", "/predictions/doesnotexist/cancel", 404),
        ("GET", "/nothing/here", 404),
        ("GET", CREATE, 405),
        ("POST", "/predictions/abc", 405),
        ("DELETE", "/predictions", 405),
    ],
)
def test_not_found_and_wrong_method(
    client: httpx2.Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, path, json={"input": {"prompt": "x"}})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status
    if status == 404:
        assert response.json()["title"] == "Not found"  # one spelling


def test_unknown_endpoint_reads_unlike_a_missing_prediction(client: httpx2.Client) -> None:
    unknown = client.get("/nothing/here").json()
    missing = client.get("/predictions/doesnotexist").json()
    assert unknown["title"] == missing["title"] == "Not found"
    assert unknown["detail"].startswith("No such endpoint: GET /v1/nothing/here")
    assert missing["detail"] == "Prediction doesnotexist not found."


def test_unknown_file_is_404(emu: Emulator) -> None:
    assert httpx2.get(f"{emu.origin}/files/nope/out-0.webp").status_code == 404


def test_custom_prefix(make: Factory) -> None:
    emu = make(prefix="/replicate/v1/")
    assert emu.base_url == f"{emu.origin}/replicate/v1"
    with httpx2.Client(base_url=emu.origin, headers=AUTH) as client:
        assert client.post(f"/replicate/v1{CREATE}", json={"input": {"prompt": "x"}}).is_success
        assert client.post(f"/v1{CREATE}", json={"input": {"prompt": "x"}}).status_code == 404


def test_registry_drives_models_and_list_output(make: Factory) -> None:
    emu = make()
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        path = "/models/black-forest-labs/flux-schnell/predictions"
        body = {"input": {"prompt": "x", "num_outputs": 3, "output_format": "png"}}
        doc = client.post(path, json=body, headers={"Prefer": "wait"}).json()
        too_many = client.post(path, json={"input": {"prompt": "x", "num_outputs": 5}})
        files = [client.get(url) for url in doc["output"]]
    assert doc["model"] == "black-forest-labs/flux-schnell"
    assert [url.rsplit("/", 1)[1] for url in doc["output"]] == [
        "out-0.png",
        "out-1.png",
        "out-2.png",
    ]
    assert too_many.json()["invalid_fields"][0]["type"] == "number_lte"
    assert all(f.headers["content-type"] == "image/png" for f in files)
    assert len({f.content for f in files}) == 3  # one image per output, each different


# --- faults --------------------------------------------------------------------------------------


def test_status_fault_with_retry_after(emu: Emulator, client: httpx2.Client) -> None:
    doc = create(client).json()
    emu.add_fault(Fault("get", "503", times=1, retry_after=0.25))
    failed = client.get(f"/predictions/{doc['id']}")
    ok = client.get(f"/predictions/{doc['id']}")
    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "0.25"
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["retry_after"] == 0.25 and failed.json()["status"] == 503
    assert ok.status_code == 200
    assert [r.status for r in emu.stats.requests] == [201, 503, 200]
    assert emu.stats.gets == 2


def test_throttle_fault_body(emu: Emulator, client: httpx2.Client) -> None:
    emu.add_fault(Fault("create", "429", retry_after=5))
    response = create(client)
    assert response.status_code == 429
    assert response.json() == {
        "detail": "Request was throttled. Your rate limit resets in ~5s.",
        "status": 429,
        "retry_after": 5,
    }
    assert response.headers["retry-after"] == "5"
    assert emu.stats.predictions_created == 0  # a refused create made nothing
    assert create(client).status_code == 201


def test_forever_fault_until_cleared(emu: Emulator, client: httpx2.Client) -> None:
    emu.add_fault(Fault("any", "502", times=None))
    assert [create(client).status_code for _ in range(3)] == [502, 502, 502]
    assert client.get("/predictions/x").status_code == 502
    emu.clear_faults()
    assert create(client).status_code == 201


def test_constructor_faults_apply_in_order(make: Factory) -> None:
    emu = make(faults=[Fault("create", "500"), Fault("create", "503", times=2)])
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        assert [create(client).status_code for _ in range(4)] == [500, 503, 503, 201]


def test_drop_fault_is_a_transport_error(emu: Emulator, client: httpx2.Client) -> None:
    doc = create(client).json()
    emu.add_fault(Fault("get", "drop"))
    with pytest.raises(httpx2.TransportError):
        client.get(f"/predictions/{doc['id']}")
    assert client.get(f"/predictions/{doc['id']}").status_code == 200
    assert [r.status for r in emu.stats.requests] == [201, None, 200]


def test_slow_fault_delays_then_answers(emu: Emulator, client: httpx2.Client) -> None:
    doc = create(client).json()
    emu.add_fault(Fault("get", "slow", delay=0.3))
    response = client.get(f"/predictions/{doc['id']}")
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.25
    assert client.get(f"/predictions/{doc['id']}").elapsed.total_seconds() < 0.25


def test_create_drop_stores_the_prediction(emu: Emulator, client: httpx2.Client) -> None:
    emu.add_fault(Fault("create", "drop"))
    with pytest.raises(httpx2.TransportError):
        create(client)
    assert emu.stats.predictions_created == 1
    assert emu.stats.requests[0].status is None
    (prediction_id,) = emu.predictions
    done, _ = poll(client, prediction_id)
    assert done["status"] == "succeeded"  # the server did accept it


def test_create_drop_directive_then_resend_makes_a_second_prediction(
    emu: Emulator, client: httpx2.Client
) -> None:
    prompt = "twice [emulator:create=drop]"
    with pytest.raises(httpx2.TransportError):
        create(client, prompt)
    assert create(client, prompt).status_code == 201
    assert emu.stats.predictions_created == 2  # why a client must not re-send a create


def test_create_status_directive_counts_per_input(emu: Emulator, client: httpx2.Client) -> None:
    prompt = "busy [emulator:create=503x2]"
    statuses = [create(client, prompt).status_code for _ in range(3)]
    assert statuses == [503, 503, 201]
    assert (emu.stats.creates, emu.stats.predictions_created) == (3, 1)


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ("fail", "Emulated failure: the model crashed."),
        (
            "moderate",
            "The input or output was flagged as sensitive. "
            "Please try again with different inputs. (E005)",
        ),
    ],
)
def test_failure_directives(client: httpx2.Client, directive: str, error: str) -> None:
    doc = create(client, f"x [emulator:{directive}]", headers={"Prefer": "wait"}).json()
    assert doc["status"] == "failed"
    assert doc["error"] == error
    assert doc["output"] is None
    assert doc["metrics"]["predict_time"] > 0


def test_hang_directive_until_canceled(client: httpx2.Client) -> None:
    doc = create(client, "x [emulator:hang]").json()
    time.sleep(0.3)
    assert client.get(f"/predictions/{doc['id']}").json()["status"] == "processing"
    assert client.post(f"/predictions/{doc['id']}/cancel").json()["status"] == "canceled"


def test_latency_and_queue_directives(make: Factory) -> None:
    emu = make(latency=30, queue_time=30)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        response = create(
            client, "x [emulator:latency=0.1][emulator:queue=0.05]", {"Prefer": "wait"}
        )
        done = client.get(f"/predictions/{response.json()['id']}").json()
    assert response.json()["output"]
    assert done["status"] == "succeeded"
    assert done["metrics"]["predict_time"] == pytest.approx(0.1)


def test_get_status_directive(emu: Emulator, client: httpx2.Client) -> None:
    doc = create(client, "x [emulator:get=503x2]").json()
    other = create(client, "y").json()
    url = f"/predictions/{doc['id']}"
    statuses = [client.get(url).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert client.get(f"/predictions/{other['id']}").status_code == 200  # only that prediction


def test_get_throttle_directive_with_retry_after(client: httpx2.Client) -> None:
    doc = create(client, "x [emulator:get=429x1:ra=0.2]").json()
    response = client.get(f"/predictions/{doc['id']}")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0.2"
    assert response.json()["retry_after"] == 0.2


def test_get_slow_and_cancel_drop_directives(client: httpx2.Client) -> None:
    doc = create(client, "x [emulator:get=slow0.3][emulator:cancel=drop][emulator:hang]").json()
    assert client.get(f"/predictions/{doc['id']}").elapsed.total_seconds() >= 0.25
    with pytest.raises(httpx2.TransportError):
        client.post(f"/predictions/{doc['id']}/cancel")
    assert client.get(f"/predictions/{doc['id']}").json()["status"] == "processing"
    assert client.post(f"/predictions/{doc['id']}/cancel").json()["status"] == "canceled"


def test_file_directive(client: httpx2.Client) -> None:
    doc = create(client, "x [emulator:file=500]", headers={"Prefer": "wait"}).json()
    assert client.get(doc["output"]).status_code == 500
    assert client.get(doc["output"]).status_code == 200


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("get", "200")
    with pytest.raises(ValueError):
        Fault("everything", "500")  # type: ignore[arg-type]


# --- outputs -------------------------------------------------------------------------------------


def test_data_retention_removes_data_and_files(make: Factory) -> None:
    emu = make(data_retention=0.3)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client, headers={"Prefer": "wait"}).json()
        assert client.get(doc["output"]).status_code == 200
        time.sleep(0.4)
        removed = client.get(f"/predictions/{doc['id']}").json()
        file_after = client.get(doc["output"])
    assert removed["data_removed"] is True
    assert (removed["output"], removed["input"], removed["logs"]) == (None, {}, "")
    assert removed["status"] == "succeeded"
    assert file_after.status_code == 404


@pytest.mark.parametrize(
    ("fmt", "content_type", "pil_format"),
    [("webp", "image/webp", "WEBP"), ("jpg", "image/jpeg", "JPEG"), ("png", "image/png", "PNG")],
)
def test_image_formats(client: httpx2.Client, fmt: str, content_type: str, pil_format: str) -> None:
    doc = create(client, headers={"Prefer": "wait"}, output_format=fmt).json()
    assert doc["output"].endswith(f".{fmt}")
    response = client.get(doc["output"])
    assert response.headers["content-type"] == content_type
    assert int(response.headers["content-length"]) == len(response.content)
    assert decode(response.content).format == pil_format


@pytest.mark.parametrize(
    ("inp", "scale", "size"),
    [
        ({"aspect_ratio": "16:9"}, 1.0, (1376, 768)),
        ({"aspect_ratio": "1:1"}, 0.25, (256, 256)),
        ({"aspect_ratio": "custom", "width": 1000, "height": 600}, 1.0, (992, 608)),
    ],
)
def test_image_sizes(
    make: Factory, inp: dict[str, Any], scale: float, size: tuple[int, int]
) -> None:
    emu = make(image_scale=scale)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client, headers={"Prefer": "wait"}, **inp).json()
        image = decode(client.get(doc["output"]).content)
    assert image.size == size


def test_images_are_deterministic(client: httpx2.Client) -> None:
    def image(seed: int) -> bytes:
        doc = create(client, "a lighthouse", {"Prefer": "wait"}, seed=seed).json()
        return client.get(doc["output"]).content

    assert image(1) == image(1)
    assert image(1) != image(2)


def test_data_mode_outputs_data_uris(make: Factory) -> None:
    emu = make(output_mode="data")
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client, headers={"Prefer": "wait"}, output_format="jpg").json()
    prefix = "data:image/jpeg;base64,"
    assert doc["output"].startswith(prefix)
    assert decode(base64.b64decode(doc["output"][len(prefix) :])).format == "JPEG"


def test_mislabel_files(make: Factory) -> None:
    emu = make(mislabel_files=True)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client, headers={"Prefer": "wait"}, output_format="jpg").json()
        response = client.get(doc["output"])
    assert doc["output"].endswith(".png")
    assert response.headers["content-type"] == "application/octet-stream"
    assert decode(response.content).format == "JPEG"  # only the bytes tell


def test_foreign_urls(make: Factory) -> None:
    emu = make(foreign_urls=True)
    assert emu.foreign_origin != emu.origin
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client).json()
        assert doc["urls"]["get"] == f"{emu.foreign_origin}/v1/predictions/{doc['id']}"
        done = client.get(doc["urls"]["get"]).json()  # a client that follows urls.get
        while done["status"] not in TERMINAL:
            done = client.get(doc["urls"]["get"]).json()
        assert done["output"].startswith(emu.foreign_origin + "/files/")
        assert client.get(done["output"]).status_code == 200
    origins = [(r.origin, r.method) for r in emu.stats.requests]
    assert origins[0] == ("api", "POST")
    assert set(origins[1:]) == {("foreign", "GET")}


# --- HTTP plumbing -------------------------------------------------------------------------------


def _raw_exchange(emu: Emulator, payload: bytes, responses: int) -> bytes:
    host, port = emu.origin.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < responses or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_keep_alive_serves_several_requests_on_one_connection(emu: Emulator) -> None:
    request = b"GET /v1/predictions/nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n"
    data = _raw_exchange(emu, request * 3, responses=3)
    assert data.count(b"HTTP/1.1 404 Not Found") == 3


def test_malformed_request_gets_400(emu: Emulator) -> None:
    data = _raw_exchange(emu, b"NONSENSE\r\n\r\n", responses=1)
    assert data.startswith(b"HTTP/1.1 400")


async def test_async_context_manager() -> None:
    emu = Emulator(latency=0.05, queue_time=0.0)
    async with emu, httpx2.AsyncClient(base_url=emu.base_url, headers=AUTH) as client:
        response = await client.post(
            CREATE, json={"input": {"prompt": "x"}}, headers={"Prefer": "wait"}
        )
    assert response.json()["output"]
    with pytest.raises(httpx2.TransportError):
        httpx2.get(emu.base_url + "/predictions/x")  # stopped
    emu.stop()  # idempotent


async def test_200_concurrent_held_creates(make: Factory) -> None:
    emu = make(latency=0.3, latency_jitter=0.1, rng_seed=1)
    limits = httpx2.Limits(max_connections=250, max_keepalive_connections=250)
    async with httpx2.AsyncClient(
        base_url=emu.base_url, headers=AUTH, limits=limits, timeout=60
    ) as client:
        responses = await asyncio.gather(
            *(
                client.post(CREATE, json={"input": {"prompt": f"n{i}"}}, headers={"Prefer": "wait"})
                for i in range(200)
            )
        )
    assert [r.status_code for r in responses] == [201] * 200
    assert {r.json()["status"] for r in responses} == {"processing"}
    assert all(r.json()["output"] for r in responses)
    assert len({r.json()["id"] for r in responses}) == 200
    assert emu.stats.predictions_created == 200
    assert len(emu.stats.completed_at_monotonic) == 200


# --- command line --------------------------------------------------------------------------------


def test_command_line_serves_until_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flux_tools.emulator", "--port", "0", "--latency", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"FLUX emulator listening on (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, line
        assert match.group(2) != "0"
        response = httpx2.post(
            match.group(1) + CREATE,
            json={"input": {"prompt": "x"}},
            headers={"Prefer": "wait", **AUTH},
        )
        assert response.json()["output"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # exactly one line
        assert process.stderr is not None and process.stderr.read() == ""  # not --verbose
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_json_body_is_utf8(client: httpx2.Client) -> None:
    response = create(client, "café ☕")
    assert json.loads(response.content)["input"]["prompt"] == "café ☕"
