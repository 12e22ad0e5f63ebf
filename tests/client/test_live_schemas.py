"""Schemas that follow the API: the model endpoint's schema is fetched once, cached and used
instead of the snapshot; the snapshot stands where the API has none; any model the API
describes is validated before anything is spent."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from flux_tools import FluxAPIError, FluxClient, FluxInputError, RetryPolicy
from flux_tools._domain.schemas import snapshot_document, snapshot_schema
from flux_tools.emulator import Emulator

from ..conftest import Flux
from ..hostile import Answer, HostileGateway, fan_out_schema

MakeFlux = Callable[..., Flux]
URL = "https://example.com/ref.png"
PAINTER = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string", "x-order": 0},
                    "brush": {"allOf": [{"$ref": "#/components/schemas/brush"}], "default": "oil"},
                    "strokes": {"type": "integer", "minimum": 1, "maximum": 9, "default": 3},
                    "canvas": {"type": "string", "format": "uri"},
                },
            },
            "brush": {"type": "string", "enum": ["oil", "ink"]},
        }
    }
}


def model_document(openapi_schema: Any, version: str = "abc123") -> dict[str, Any]:
    return {
        "owner": "acme",
        "name": "x",
        "latest_version": {
            "id": version,
            "created_at": "2026-11-30T10:00:00Z",
            "openapi_schema": openapi_schema,
        },
    }


def model_gets(gateway: HostileGateway, path: str) -> int:
    return sum(1 for r in gateway.requests if r.method == "GET" and r.path.startswith(path))


def creates(gateway: HostileGateway) -> list[dict[str, Any]]:
    return [r.json()["input"] for r in gateway.seen("create")]


async def test_the_emulator_serves_each_registry_models_schema(
    make_flux: MakeFlux, emulator: Emulator
) -> None:
    flux = make_flux(emulator)
    live = await flux("model_schema", "flux-2-pro")
    assert live is not None and live.schema_source == "live"
    snapshot = snapshot_document("flux-2-pro")
    props = live.model_json_schema()["properties"]
    assert list(props) == list(
        snapshot["openapi_schema"]["components"]["schemas"]["Input"]["properties"]
    )
    assert {f.name: f.max_items for f in live.image_inputs} == {"input_images": 8}
    assert live.schema_version == snapshot["version"] == "285631b5"
    before = len(emulator.stats.requests)
    assert await flux("model_schema", "black-forest-labs/flux-2-pro") is live  # cached
    assert len(emulator.stats.requests) == before


async def test_without_a_model_endpoint_the_snapshot_stands(
    make_flux: MakeFlux, make_emulator: Callable[..., Emulator]
) -> None:
    emulator = make_emulator(model_endpoint=False)
    flux = make_flux(emulator)
    schema = await flux("model_schema", "flux-2-flex")
    assert schema is not None and schema.schema_source == "snapshot"
    assert await flux("model_schema", "flux-2-flex") is schema
    assert len(emulator.stats.requests) == 1  # asked once: the 404 is remembered
    # A refused input is refused by the snapshot, and nothing is created.
    with pytest.raises(FluxInputError, match="steps"):
        await flux("generate", prompt="x", model="flux-2-flex", steps=99)
    assert emulator.stats.creates == 0 and len(emulator.stats.requests) == 1


async def test_a_model_outside_the_registry_is_validated_from_the_emulators_endpoint(
    make_flux: MakeFlux, emulator: Emulator
) -> None:
    version = emulator.add_model("acme/painter", PAINTER)
    flux = make_flux(emulator, model="acme/painter")
    with pytest.raises(FluxInputError) as info:
        await flux("generate", prompt="a harbour", strokes=12, brush="spray")
    assert sorted(info.value.fields) == ["brush", "strokes"]
    assert "1 to 9" in str(info.value) and "'ink'" in str(info.value)
    assert emulator.stats.predictions_created == 0 and emulator.stats.creates == 0
    result = await flux("generate", prompt="a harbour", strokes=5, brush="ink")
    assert result.status == "succeeded" and result.model == "acme/painter"
    assert emulator.prediction_json(result.prediction_id)["input"] == {
        "prompt": "a harbour",
        "strokes": 5,
        "brush": "ink",
    }
    schema = await flux("model_schema")
    assert schema is not None and schema.schema_source == "live"
    assert schema.schema_version == version
    model_gets = [r for r in emulator.stats.requests if r.path.startswith("/v1/models/acme/")]
    # One schema fetch, then only the valid create: the refused one sent nothing.
    assert [r.method for r in model_gets] == ["GET", "POST"]


async def test_a_model_outside_the_registry_is_validated_from_its_endpoint(
    make_flux: MakeFlux, hostile: HostileGateway
) -> None:
    hostile.on("GET", "/v1/models/acme/painter", Answer.json(model_document(PAINTER)))
    flux = make_flux(base_url=hostile.base_url, model="acme/painter")
    with pytest.raises(FluxInputError) as info:
        await flux("generate", prompt="a harbour", strokes=12, brush="spray", canvas="ftp://x")
    assert sorted(info.value.fields) == ["brush", "canvas", "strokes"]
    assert "1 to 9" in str(info.value) and "'ink'" in str(info.value)
    with pytest.raises(FluxInputError, match="is not a field"):
        await flux("generate", prompt="a harbour", colour="red")
    assert creates(hostile) == []
    result = await flux("generate", prompt="a harbour", strokes=5, canvas=URL)
    assert result.status == "succeeded"
    assert creates(hostile) == [{"prompt": "a harbour", "strokes": 5, "canvas": URL}]
    assert model_gets(hostile, "/v1/models/acme/painter") == 1  # fetched once per client
    schema = await flux("model_schema")
    assert schema is not None and schema.__name__ == "PainterInput"
    assert schema.schema_version == "abc123" and schema.schema_date == "2026-11-30"


async def test_a_model_nothing_describes_is_sent_for_the_server_to_judge(
    make_flux: MakeFlux, hostile: HostileGateway
) -> None:
    flux = make_flux(base_url=hostile.base_url, model="acme/unknown")
    result = await flux("generate", prompt="x", anything=1)
    assert result.status == "succeeded"
    assert creates(hostile) == [{"prompt": "x", "anything": 1}]


async def test_a_newer_live_schema_wins_over_a_stale_snapshot(
    make_flux: MakeFlux, hostile: HostileGateway
) -> None:
    newer = copy.deepcopy(snapshot_schema("flux-2-pro"))
    newer["components"]["schemas"]["Input"]["properties"]["input_images"]["maxItems"] = 12
    path = "/v1/models/black-forest-labs/flux-2-pro"
    hostile.on("GET", path, Answer.json(model_document(newer, "n3w3r")))
    flux = make_flux(base_url=hostile.base_url, model="flux-2-pro")
    # Within the snapshot: no schema is fetched at all.
    await flux("generate", prompt="x", input_images=[URL] * 8)
    assert model_gets(hostile, path) == 0
    # The snapshot says 8 at most; the API now takes 12: the API is believed.
    await flux("generate", prompt="x", input_images=[URL] * 10)
    assert [len(i["input_images"]) for i in creates(hostile)] == [8, 10]
    with pytest.raises(FluxInputError, match="at most 12"):
        await flux("generate", prompt="x", input_images=[URL] * 13)
    assert model_gets(hostile, path) == 1
    assert len(creates(hostile)) == 2


@pytest.mark.parametrize(
    "answer",
    [
        Answer.json({"latest_version": None}),
        Answer.json(model_document({"properties": {"model_config": {"type": "string"}}})),
        Answer.raw(b"<html>not json</html>", "text/html"),
        Answer.json(model_document({"properties": {"x": {"type": "object"}}})),
    ],
)
async def test_an_unusable_live_schema_leaves_the_snapshot(
    make_flux: MakeFlux, hostile: HostileGateway, answer: Answer
) -> None:
    path = "/v1/models/black-forest-labs/flux-2-pro"
    hostile.on("GET", path, answer)
    flux = make_flux(base_url=hostile.base_url, model="flux-2-pro")
    with pytest.raises(FluxInputError, match="at most 8"):
        await flux("generate", prompt="x", input_images=[URL] * 9)
    schema = await flux("model_schema")
    assert schema is not None and schema.schema_source == "snapshot"
    assert model_gets(hostile, path) == 1 and creates(hostile) == []


async def test_a_bad_image_source_does_not_ask_for_the_schema(
    make_flux: MakeFlux, hostile: HostileGateway
) -> None:
    flux = make_flux(base_url=hostile.base_url, model="flux-2-pro")
    with pytest.raises(FluxInputError) as info:
        await flux("generate", prompt="x", input_images=[URL, "http://"])
    assert info.value.fields == ["input_images[1]"]
    assert hostile.requests == []  # no schema version would take it: nothing was asked


async def test_a_422_naming_a_field_is_reported_as_such(
    make_flux: MakeFlux, hostile: HostileGateway
) -> None:
    problem = {
        "title": "Input validation failed",
        "status": 422,
        "detail": "- input.input_images: Array must have at most 4 items",
        "invalid_fields": [
            {
                "type": "array_max_items",
                "field": "input.input_images",
                "description": "Array must have at most 4 items",
            }
        ],
    }
    hostile.on(
        "POST",
        "/v1/models/black-forest-labs/flux-2-pro/predictions",
        Answer(422, {"Content-Type": "application/problem+json"}, json.dumps(problem).encode()),
    )
    flux = make_flux(base_url=hostile.base_url, model="flux-2-pro")
    with pytest.raises(FluxAPIError) as info:
        await flux("generate", prompt="x", input_images=[URL] * 6)
    assert info.value.status == 422
    assert info.value.invalid_fields[0]["field"] == "input.input_images"
    assert "input.input_images: Array must have at most 4 items" in str(info.value)


def test_flux_model_names_a_model_outside_the_registry(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    emulator.add_model("acme/painter", PAINTER)
    monkeypatch.setenv("FLUX_MODEL", "acme/painter")
    monkeypatch.setenv("FLUX_BASE_URL", emulator.base_url)
    monkeypatch.setenv("FLUX_API_TOKEN", emulator.token)
    with FluxClient() as client:
        assert client.model == "acme/painter"
        with pytest.raises(FluxInputError, match="strokes"):
            client.generate(prompt="a harbour", strokes=0)
        assert emulator.stats.creates == 0
        assert client.generate(prompt="a harbour", brush="ink").model == "acme/painter"


async def test_a_failing_model_endpoint_is_not_asked_at_every_call(
    make_flux: MakeFlux, hostile: HostileGateway
) -> None:
    path = "/v1/models/black-forest-labs/flux-2-pro"
    hostile.on("GET", path, Answer.status(500))
    flux = make_flux(
        base_url=hostile.base_url, model="flux-2-pro", retry=RetryPolicy(max_retries=0)
    )
    for _ in range(3):
        with pytest.raises(FluxInputError, match="at most 8"):
            await flux("generate", prompt="x", input_images=[URL] * 9)
    assert model_gets(hostile, path) == 1  # the snapshot stands; asked again only later
    assert creates(hostile) == []


@pytest.mark.parametrize(("width", "fields"), [(12, 10), (48, 20)])
async def test_a_hostile_fan_out_schema_is_refused_fast_and_the_snapshot_stands(
    make_flux: MakeFlux,
    hostile: HostileGateway,
    caplog: pytest.LogCaptureFixture,
    width: int,
    fields: int,
) -> None:
    """16 KB and 216 KB of three-level allOf fan-out, served for a registry model and for one
    outside it: refused at once (the async client's event loop is never blocked for long);
    the snapshot judges the registry model, the server the other."""
    document = model_document(fan_out_schema(width, fields))
    hostile.on("GET", "/v1/models/black-forest-labs/flux-2-pro", Answer.json(document))
    hostile.on("GET", "/v1/models/acme/sketch", Answer.json(document))
    flux = make_flux(base_url=hostile.base_url, model="flux-2-pro", timeout=5)
    started = time.perf_counter()
    with pytest.raises(FluxInputError, match="at most 8"):
        await flux("generate", prompt="x", input_images=[URL] * 9)
    assert await flux("model_schema", "acme/sketch") is None
    assert time.perf_counter() - started < 1.0
    assert creates(hostile) == []
    refusals = [r.getMessage() for r in caplog.records if "was refused" in r.getMessage()]
    assert any("input schema of acme/sketch was refused" in r for r in refusals)
    assert any("black-forest-labs/flux-2-pro was refused" in r for r in refusals)
