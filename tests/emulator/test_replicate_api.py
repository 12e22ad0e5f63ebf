"""The rest of Replicate's API the official clients call, over real HTTP with plain httpx2.

Models and their schemas, creates by version, the predictions list, the account, the
server-sent-events stream, HTTPS with a generated CA, and outputs derived from references.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from typing import Any

import httpx2
import pytest
from PIL import Image

from flux_tools import MODELS
from flux_tools._domain.schemas import snapshot_schema
from flux_tools.emulator import Emulator
from flux_tools.emulator._images import reference_tiles

from .conftest import AUTH, CREATE, Factory

EMULATOR_DEFAULTS = {"latency": 0.1, "queue_time": 0.02, "image_scale": 0.25}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def wait_done(client: httpx2.Client, prediction_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        doc: dict[str, Any] = client.get(f"/predictions/{prediction_id}").json()
        if doc["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return doc
        assert time.monotonic() < deadline, doc["status"]
        time.sleep(0.02)


# --- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_is_described_with_its_schema(
    client: httpx2.Client, name: str
) -> None:
    response = client.get(f"/models/{name}")
    assert response.status_code == 200
    doc = response.json()
    owner, _, short = name.partition("/")
    assert (doc["owner"], doc["name"], doc["visibility"]) == (owner, short, "public")
    version = doc["latest_version"]
    schemas = version["openapi_schema"]["components"]["schemas"]
    published = snapshot_schema(name)["components"]["schemas"]
    assert schemas["Input"] == published["Input"]  # the package's snapshot, as served
    assert set(schemas["Input"]["properties"]) == set(MODELS[name].input_model.model_fields)
    uri = {"type": "string", "format": "uri"}
    if MODELS[name].output == "list":
        assert schemas["Output"] == {"type": "array", "items": uri, "title": "Output"}
    else:
        assert schemas["Output"] == {**uri, "title": "Output"}
    assert version["cog_version"] and version["created_at"]
    again = client.get(f"/models/{name}/versions/{version['id']}")
    assert again.status_code == 200 and again.json() == version
    listed = client.get(f"/models/{name}/versions").json()
    assert listed["results"] == [version]


def test_models_list_holds_every_model(client: httpx2.Client) -> None:
    doc = client.get("/models").json()
    assert [f"{m['owner']}/{m['name']}" for m in doc["results"]] == list(MODELS)
    assert doc["next"] is None


def test_run_count_counts_predictions(client: httpx2.Client) -> None:
    client.post(CREATE, json={"input": {"prompt": "x"}})
    assert client.get("/models/black-forest-labs/flux-pro").json()["run_count"] == 1
    assert client.get("/models/black-forest-labs/flux-dev").json()["run_count"] == 0


def test_unknown_model_and_version_are_404(client: httpx2.Client) -> None:
    assert client.get("/models/acme/nothing").status_code == 404
    wrong = client.get("/models/black-forest-labs/flux-pro/versions/" + "0" * 64)
    assert wrong.status_code == 404 and wrong.json()["title"] == "Not found"


def test_a_gateway_without_the_model_endpoint(make: Factory) -> None:
    emu = make(model_endpoint=False)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        model = client.get("/models/black-forest-labs/flux-pro")
        created = client.post(CREATE, json={"input": {"prompt": "x"}})
    assert model.status_code == 404
    assert model.json()["detail"].startswith("No such endpoint")
    assert created.status_code == 201


ACME_SCHEMA: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "title": "Input",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
                    "steps": {
                        "type": "integer",
                        "title": "Steps",
                        "default": 4,
                        "minimum": 1,
                        "maximum": 8,
                        "x-order": 1,
                    },
                },
            }
        }
    }
}


def test_added_model_is_served_and_validated_from_its_schema(make: Factory) -> None:
    emu = make(extra_models={"acme/painter": ACME_SCHEMA})
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        described = client.get("/models/acme/painter").json()
        path = "/models/acme/painter/predictions"
        too_many = client.post(path, json={"input": {"prompt": "x", "steps": 9}})
        made = client.post(path, json={"input": {"prompt": "x", "steps": 8}}).json()
        done = wait_done(client, made["id"])
    schemas = described["latest_version"]["openapi_schema"]["components"]["schemas"]
    assert schemas["Input"] == ACME_SCHEMA["components"]["schemas"]["Input"]
    assert schemas["Output"]["format"] == "uri"
    assert too_many.status_code == 422
    assert too_many.json()["invalid_fields"][0]["field"] == "input.steps"
    assert done["status"] == "succeeded" and done["model"] == "acme/painter"


# --- creates by version -----------------------------------------------------------------------


def test_create_by_version_forms(client: httpx2.Client) -> None:
    name = "black-forest-labs/flux-schnell"
    version = client.get(f"/models/{name}").json()["latest_version"]["id"]
    for ref in (version, f"{name}:{version}", name):
        response = client.post(
            "/predictions", json={"version": ref, "input": {"prompt": "x", "num_outputs": 2}}
        )
        assert response.status_code == 201, ref
        assert response.json()["model"] == name
        assert response.json()["version"] == version
        assert len(wait_done(client, response.json()["id"])["output"]) == 2


@pytest.mark.parametrize(
    "version", ["0" * 64, "black-forest-labs/flux-pro:" + "0" * 64, "acme/nothing"]
)
def test_unknown_version_is_422(client: httpx2.Client, emu: Emulator, version: str) -> None:
    response = client.post("/predictions", json={"version": version, "input": {"prompt": "x"}})
    assert response.status_code == 422
    assert response.json()["title"] == "Invalid version"
    assert emu.stats.predictions_created == 0


def test_version_create_validates_input_and_needs_a_version(client: httpx2.Client) -> None:
    missing = client.post("/predictions", json={"input": {"prompt": "x"}})
    assert missing.status_code == 422
    assert missing.json()["invalid_fields"][0]["field"] == "version"
    invalid = client.post(
        "/predictions",
        json={"version": "black-forest-labs/flux-pro", "input": {"prompt": "x", "steps": 99}},
    )
    assert invalid.json()["invalid_fields"][0]["field"] == "input.steps"


# --- list and account -------------------------------------------------------------------------


def test_list_is_newest_first_and_paginated(make: Factory) -> None:
    emu = make(page_size=2)
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        ids = [
            client.post(CREATE, json={"input": {"prompt": f"n{i}"}}).json()["id"] for i in range(5)
        ]
        pages = [client.get("/predictions").json()]
        while pages[-1]["next"]:
            assert pages[-1]["next"].startswith(emu.base_url + "/predictions?cursor=")
            pages.append(client.get(pages[-1]["next"]).json())
        back = client.get(pages[-1]["previous"]).json()
        bad = client.get("/predictions", params={"cursor": "nonsense"})
    assert [[r["id"] for r in p["results"]] for p in pages] == [
        ids[4:2:-1],
        ids[2:0:-1],
        ids[:1],
    ]
    assert pages[0]["previous"] is None
    assert [r["id"] for r in back["results"]] == ids[2:0:-1]
    assert all("logs" not in r and r["source"] == "api" for p in pages for r in p["results"])
    assert pages[0]["results"][0]["input"] == {"prompt": "n4"}
    assert bad.status_code == 400


def test_list_filters_by_creation_time(client: httpx2.Client) -> None:
    first = client.post(CREATE, json={"input": {"prompt": "a"}}).json()
    time.sleep(0.05)
    second = client.post(CREATE, json={"input": {"prompt": "b"}}).json()
    after = client.get("/predictions", params={"created_after": first["created_at"]}).json()
    before = client.get("/predictions", params={"created_before": second["created_at"]}).json()
    assert [r["id"] for r in after["results"]] == [second["id"]]
    assert [r["id"] for r in before["results"]] == [first["id"]]
    assert client.get("/predictions", params={"created_after": "soon"}).status_code == 400


def test_account(client: httpx2.Client) -> None:
    doc = client.get("/account").json()
    assert doc["type"] == "user" and doc["username"]


# --- stream -----------------------------------------------------------------------------------


def sse_events(client: httpx2.Client, url: str) -> list[tuple[str, str, str]]:
    """(event, id, data) of each event until the server ends the stream."""
    events: list[tuple[str, str, str]] = []
    fields: dict[str, str] = {}
    data: list[str] = []
    with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if not line:
                events.append((fields.get("event", ""), fields.get("id", ""), "\n".join(data)))
                fields, data = {}, []
            elif line.startswith("data: "):
                data.append(line[6:])
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
    return events


def test_stream_sends_logs_outputs_then_done(emu: Emulator, client: httpx2.Client) -> None:
    doc = client.post(
        "/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "x", "num_outputs": 2, "seed": 5}, "stream": True},
    ).json()
    assert doc["urls"]["stream"].startswith(emu.origin + "/v1/files/")
    with httpx2.Client(timeout=20) as anonymous:  # no token: as the npm client streams
        events = sse_events(anonymous, doc["urls"]["stream"])
    done = client.get(f"/predictions/{doc['id']}").json()
    assert [e[0] for e in events] == ["logs", "output", "output", "done"]
    assert events[0][2] == "Using seed: 5"
    assert [e[2] for e in events[1:3]] == done["output"]
    assert events[-1][2] == "{}"
    assert [e[1] for e in events] == ["1", "2", "3", "4"]
    assert emu.stats.streams == 1


def test_stream_of_a_failure_and_of_a_cancel(client: httpx2.Client) -> None:
    failed = client.post(CREATE, json={"input": {"prompt": "x [emulator:fail]"}}).json()
    events = sse_events(client, failed["urls"]["stream"])
    assert [e[0] for e in events] == ["logs", "error", "done"]
    assert events[1][2] == "Emulated failure: the model crashed."
    hung = client.post(CREATE, json={"input": {"prompt": "x [emulator:hang]"}}).json()
    client.post(f"/predictions/{hung['id']}/cancel")
    events = sse_events(client, hung["urls"]["stream"])
    assert events[-1][0] == "done" and json.loads(events[-1][2]) == {"reason": "canceled"}


def test_stream_of_an_unknown_prediction_is_404(emu: Emulator) -> None:
    assert httpx2.get(f"{emu.origin}/v1/files/stream/nope").status_code == 404


def test_web_url_is_a_page_on_the_emulator(client: httpx2.Client) -> None:
    doc = client.post(CREATE, json={"input": {"prompt": "x"}}, headers={"Prefer": "wait"}).json()
    page = httpx2.get(doc["urls"]["web"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert doc["output"] in page.text


# --- https ------------------------------------------------------------------------------------


def test_https_mode_serves_tls_with_a_generated_ca(make: Factory) -> None:
    emu = make(https=True)
    assert emu.origin.startswith("https://127.0.0.1:")
    assert emu.ca_bundle is not None
    with httpx2.Client(base_url=emu.base_url, headers=AUTH, verify=emu.ssl_context()) as client:
        doc = client.post(CREATE, json={"input": {"prompt": "x"}}, headers={"Prefer": "wait"})
        image = client.get(doc.json()["output"])
    assert doc.status_code == 201
    assert doc.json()["output"].startswith(emu.origin + "/files/")
    assert doc.json()["urls"]["get"].startswith("https://")
    assert image.status_code == 200 and image.content[:4] == b"RIFF"
    with (
        pytest.raises(httpx2.ConnectError),
        httpx2.Client(verify=ssl.create_default_context()) as c,
    ):
        c.get(emu.base_url + "/account", headers=AUTH)  # not trusted without the bundle
    env = emu.client_env()
    assert env["SSL_CERT_FILE"] == env["NODE_EXTRA_CA_CERTS"] == emu.ca_bundle
    bundle = emu.ca_bundle
    emu.stop()
    assert not os.path.exists(bundle)  # the CA is removed with the emulator


# --- references -------------------------------------------------------------------------------


def reference_model() -> str | None:
    """A registry model with an array image field, with the field's name."""
    for spec in MODELS.values():
        for field in spec.image_inputs:
            if field.multiple:
                return f"{spec.name} {field.name} {field.max_items}"
    return None


def tile_colours(data: bytes, count: int) -> list[tuple[int, int, int]]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    colours: list[tuple[int, int, int]] = []
    for box in reference_tiles(count, *image.size):
        # the middle of each tile, away from the blended edges
        left, top, right, bottom = box
        inner = image.crop(
            (left + (right - left) // 4, top + (bottom - top) // 4,
             right - (right - left) // 4, bottom - (bottom - top) // 4)
        )  # fmt: skip
        r, g, b = inner.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))  # type: ignore[misc]
        colours.append((int(r), int(g), int(b)))
    return colours


def near(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 50 for a, b in zip(colour, expected, strict=True))


def test_output_is_composed_from_the_references_in_order(client: httpx2.Client) -> None:
    found = reference_model()
    if found is None:
        pytest.skip("no registry model takes several reference images yet")
    model, field, max_items = found.split()
    colours = [(230, 20, 20), (20, 200, 20), (20, 20, 230)][: int(max_items)]
    refs = [png(c) for c in colours]
    doc = client.post(
        f"/models/{model}/predictions",
        json={"input": {"prompt": "compose", field: refs}},
        headers={"Prefer": "wait"},
    ).json()
    output = doc["output"][0] if isinstance(doc["output"], list) else doc["output"]
    data = client.get(output).content
    measured = tile_colours(data, len(refs))
    assert all(near(m, c) for m, c in zip(measured, colours, strict=True)), measured
    # the same references in another order give the tiles in that order
    doc2 = client.post(
        f"/models/{model}/predictions",
        json={"input": {"prompt": "compose", field: refs[::-1]}},
        headers={"Prefer": "wait"},
    ).json()
    output2 = doc2["output"][0] if isinstance(doc2["output"], list) else doc2["output"]
    measured2 = tile_colours(client.get(output2).content, len(refs))
    assert all(near(m, c) for m, c in zip(measured2, colours[::-1], strict=True)), measured2


def test_a_reference_that_cannot_be_loaded_fails_naming_the_item(
    emu: Emulator, client: httpx2.Client
) -> None:
    found = reference_model()
    if found is None:
        pytest.skip("no registry model takes several reference images yet")
    model, field, _ = found.split()
    gone = f"{emu.origin}/files/{'0' * 26}/out-0.png"  # answers 404
    doc = client.post(
        f"/models/{model}/predictions",
        json={"input": {"prompt": "x", field: [png((1, 2, 3)), gone]}},
        headers={"Prefer": "wait"},
    ).json()
    assert doc["status"] == "failed"
    assert f"{field}[1]" in doc["error"]


def test_a_reference_that_is_not_a_uri_is_422_naming_the_item(client: httpx2.Client) -> None:
    found = reference_model()
    if found is None:
        pytest.skip("no registry model takes several reference images yet")
    model, field, _ = found.split()
    response = client.post(
        f"/models/{model}/predictions",
        json={"input": {"prompt": "x", field: [png((1, 2, 3)), "photo.png"]}},
    )
    assert response.status_code == 422
    assert [f["field"] for f in response.json()["invalid_fields"]] == [f"input.{field}.1"]


def test_command_line_https_prints_the_ca_bundle() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flux_tools.emulator", "--port", "0", "--https"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(
            r"FLUX emulator listening on (https://127\.0\.0\.1:\d+/v1) \(CA bundle: (.+)\)\n", line
        )
        assert match, line
        trust = ssl.create_default_context(cafile=match.group(2))
        response = httpx2.get(match.group(1) + "/account", headers=AUTH, verify=trust)
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert not os.path.exists(match.group(2))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_match_input_image_follows_the_first_reference(client: httpx2.Client) -> None:
    found = reference_model()
    if found is None:
        pytest.skip("no registry model takes several reference images yet")
    model, field, _ = found.split()
    aspect = MODELS[model].input_model.model_json_schema()["properties"].get("aspect_ratio", {})
    if "match_input_image" not in json.dumps(aspect):
        pytest.skip(f"{model} has no match_input_image")
    doc = client.post(
        f"/models/{model}/predictions",
        json={
            "input": {
                "prompt": "x",
                field: [png((200, 0, 0), (256, 128)), png((0, 0, 200), (64, 64))],
                "aspect_ratio": "match_input_image",
            }
        },
        headers={"Prefer": "wait"},
    ).json()
    output = doc["output"][0] if isinstance(doc["output"], list) else doc["output"]
    width, height = Image.open(io.BytesIO(client.get(output).content)).size
    assert abs(width / height - 2) < 0.1  # the first reference is 2:1


# --- the Files API ----------------------------------------------------------------------------


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    return base64.b64decode(png(colour, size).partition(",")[2])


def test_upload_then_edit_from_its_url(emu: Emulator, client: httpx2.Client) -> None:
    uploaded = client.post(
        "/files",
        files={"content": ("car.png", png_bytes((220, 30, 30), (128, 64)), "image/png")},
        data={"metadata": json.dumps({"purpose": "test"})},
    )
    assert uploaded.status_code == 201
    doc = uploaded.json()
    assert (doc["name"], doc["content_type"], doc["metadata"]) == (
        "car.png",
        "image/png",
        {"purpose": "test"},
    )
    assert doc["size"] > 0 and len(doc["checksums"]["sha256"]) == 64
    assert doc["urls"]["get"] == f"{emu.base_url}/files/{doc['id']}"
    assert client.get(f"/files/{doc['id']}").json() == doc
    assert [f["id"] for f in client.get("/files").json()["results"]] == [doc["id"]]
    edit = client.post(
        "/models/black-forest-labs/flux-kontext-pro/predictions",
        json={"input": {"prompt": "make it gold", "input_image": doc["urls"]["get"]}},
        headers={"Prefer": "wait"},
    ).json()
    image = Image.open(io.BytesIO(client.get(edit["output"]).content)).convert("RGB")
    assert abs(image.width / image.height - 2) < 0.1  # match_input_image
    top = image.crop((0, 0, image.width, image.height // 2)).resize((1, 1))
    r, g, b = top.getpixel((0, 0))  # type: ignore[misc]
    assert r > 120 and g < 110 and b < 110  # the uploaded red, tinted
    assert client.delete(f"/files/{doc['id']}").status_code == 204
    assert client.get(f"/files/{doc['id']}").status_code == 404
    assert emu.stats.uploads == 5  # create, get, list, delete, get


def test_upload_needs_multipart_content(client: httpx2.Client) -> None:
    assert client.post("/files", json={"x": 1}).status_code == 400
    missing = client.post("/files", files={"other": ("a.txt", b"x", "text/plain")})
    assert missing.status_code == 422
    assert missing.json()["invalid_fields"][0]["field"] == "content"
