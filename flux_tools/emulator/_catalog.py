"""The models the emulator serves, described as Replicate's model endpoint describes them.

``GET /v1/models/{owner}/{name}`` answers the model with ``latest_version.openapi_schema``, whose
``components.schemas.Input`` is the model's input JSON schema and ``Output`` its output (one URI,
or a list). For a registry model the schema is the package's published snapshot
(``flux_tools/schemas``, with the version it came from), or, for a model without one, derived
from its pydantic input model. The registry is read on each call, so models added to it are
served without a change here. Models outside the registry can be added (``Emulator.add_model``)
from an OpenAPI schema; the emulator then validates their inputs from that schema.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from .._domain.inputs import FluxInput
from .._domain.registry import MODELS, ModelSpec, normalize_model_name
from .._domain.schemas import input_model_from_schema, snapshot_document

COG_VERSION = "0.16.8"
_VERSION_ID = re.compile(r"^[0-9a-f]{8,64}$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")


@dataclass(frozen=True, eq=False)
class ServedModel:
    """One model as the emulator serves it (the attributes a create needs, as on ModelSpec)."""

    name: str
    input_model: type[FluxInput]
    output: Literal["single", "list"]
    edit_field: str | None
    version: str
    openapi_schema: dict[str, Any]
    description: str
    created_at: str | None  # ISO date-time of the version, None: the emulator's start


@cache
def uri_array_fields(model: type[FluxInput]) -> tuple[str, ...]:
    """Fields holding several images: declared image fields or arrays of URI strings."""
    schema = model.model_json_schema()
    found = []
    for name, prop in schema.get("properties", {}).items():
        for option in [prop, *prop.get("anyOf", [])]:
            items = option.get("items") if option.get("type") == "array" else None
            if (
                isinstance(items, dict)
                and items.get("type") == "string"
                and (name in model.image_fields or items.get("format") == "uri")
            ):
                found.append(name)
                break
    return tuple(found)


@cache
def image_fields(model: type[FluxInput]) -> tuple[str, ...]:
    """Every field that takes one image or several."""
    return tuple(dict.fromkeys([*model.image_fields, *uri_array_fields(model)]))


def derived_input_schema(model: type[FluxInput]) -> dict[str, Any]:
    """An input schema as the API would publish it, from a pydantic input model.

    The pydantic schema also allows local paths and ``None`` (the client resolves or drops
    them); the API takes URIs, and leaves out what is not set.
    """
    schema = model.model_json_schema()
    images = set(image_fields(model))
    properties: dict[str, Any] = {}
    for order, (name, original) in enumerate(schema.get("properties", {}).items()):
        prop = dict(original)
        options = prop.pop("anyOf", None)
        if options:
            kept = [o for o in options if o.get("type") != "null"]
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept
            if prop.get("default", ...) is None:
                del prop["default"]
        if name in images:
            if prop.get("type") == "array":
                prop["items"] = {**prop.get("items", {}), "type": "string", "format": "uri"}
            else:
                prop["type"], prop["format"] = "string", "uri"
        prop["x-order"] = order
        properties[name] = prop
    doc: dict[str, Any] = {
        "type": "object",
        "title": "Input",
        "required": list(schema.get("required", [])),
        "properties": properties,
    }
    if schema.get("$defs"):
        doc["$defs"] = schema["$defs"]
    text = json.dumps(doc).replace('"#/$defs/', '"#/components/schemas/')
    result: dict[str, Any] = json.loads(text)
    return result


def output_schema(output: Literal["single", "list"]) -> dict[str, Any]:
    uri = {"type": "string", "format": "uri"}
    if output == "list":
        return {"type": "array", "items": uri, "title": "Output"}
    return {**uri, "title": "Output"}


def _with_output(schema: dict[str, Any], output: Literal["single", "list"]) -> dict[str, Any]:
    doc = copy.deepcopy(schema)
    if "components" not in doc:  # a bare Input schema
        doc = {"components": {"schemas": {"Input": doc}}}
    doc.setdefault("openapi", "3.0.2")
    doc.setdefault("info", {"title": "Cog", "version": "0.1.0"})
    doc.setdefault("paths", {})
    schemas = doc["components"].setdefault("schemas", {})
    schemas.setdefault("Output", output_schema(output))
    return doc


def _digest(name: str, schema: dict[str, Any]) -> str:
    text = json.dumps(schema, sort_keys=True)
    return hashlib.sha256(f"{name}\0{text}".encode()).hexdigest()


def _snapshot(spec: ModelSpec) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = snapshot_document(spec.name)
    except ValueError:
        return None
    return document


def _iso(date: Any) -> str | None:
    if isinstance(date, str) and _DATE.fullmatch(date):
        return f"{date}T00:00:00.000000Z"
    return None


def from_registry(spec: ModelSpec) -> ServedModel:
    document = _snapshot(spec)
    if document is not None and isinstance(document.get("openapi_schema"), dict):
        schema = _with_output(document["openapi_schema"], spec.output)
        version = str(document.get("version") or "")
        created = _iso(document.get("date"))
    else:
        schema = _with_output(derived_input_schema(spec.input_model), spec.output)
        version, created = "", None
    if not _VERSION_ID.fullmatch(version):
        version = _digest(spec.name, schema)
    return ServedModel(
        name=spec.name,
        input_model=spec.input_model,
        output=spec.output,
        edit_field=spec.edit_field,
        version=version,
        openapi_schema=schema,
        description=f"{spec.title}: {spec.strengths}",
        created_at=created,
    )


class Catalog:
    """Registry models (read live) and models added to this emulator. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._extra: dict[str, ServedModel] = {}
        # Keyed by identity: a spec may hold unhashable data; kept so its id stays unique.
        self._cache: dict[int, tuple[ModelSpec, ServedModel]] = {}

    def add(
        self,
        name: str,
        openapi_schema: dict[str, Any],
        *,
        output: Literal["single", "list"] = "single",
        version: str | None = None,
        edit_field: str | None = None,
    ) -> ServedModel:
        """Serve ``name`` from its schema (an ``openapi_schema`` or a bare ``Input``)."""
        name = normalize_model_name(name)
        if output not in ("single", "list"):
            raise ValueError("output must be 'single' or 'list'")
        schema = _with_output(openapi_schema, output)
        model = input_model_from_schema(name, schema)
        if version is not None and not _VERSION_ID.fullmatch(version):
            raise ValueError("version must be 8 to 64 lower-case hex digits")
        served = ServedModel(
            name=name,
            input_model=model,
            output=output,
            edit_field=edit_field,
            version=version or _digest(name, schema),
            openapi_schema=schema,
            description=str(schema["components"]["schemas"]["Input"].get("description") or ""),
            created_at=None,
        )
        with self._lock:
            self._extra[name] = served
        return served

    def _served(self, spec: ModelSpec) -> ServedModel:
        with self._lock:
            entry = self._cache.get(id(spec))
        if entry is not None and entry[0] is spec:
            return entry[1]
        served = from_registry(spec)
        with self._lock:
            self._cache[id(spec)] = (spec, served)
        return served

    def all(self) -> list[ServedModel]:
        with self._lock:
            extra = dict(self._extra)
        # An added model of a registry name replaces it, in the registry's order.
        found = [extra.pop(s.name) if s.name in extra else self._served(s) for s in MODELS.values()]
        return [*found, *extra.values()]

    def find(self, model: str) -> ServedModel | None:
        try:
            name = normalize_model_name(model)
        except ValueError:
            return None
        with self._lock:
            extra = self._extra.get(name)
        if extra is not None:
            return extra
        spec = MODELS.get(name)
        return self._served(spec) if spec is not None else None

    def by_version(self, version: str) -> ServedModel | None:
        return next((m for m in self.all() if m.version == version), None)


def version_doc(model: ServedModel, started_at: str) -> dict[str, Any]:
    return {
        "id": model.version,
        "created_at": model.created_at or started_at,
        "cog_version": COG_VERSION,
        "openapi_schema": copy.deepcopy(model.openapi_schema),
    }


def model_doc(
    model: ServedModel, *, api_base: str, started_at: str, run_count: int
) -> dict[str, Any]:
    owner, _, name = model.name.partition("/")
    return {
        "url": f"{api_base}/models/{model.name}",
        "owner": owner,
        "name": name,
        "description": model.description,
        "visibility": "public",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": run_count,
        "cover_image_url": None,
        "default_example": None,
        "is_official": owner == "black-forest-labs",
        "latest_version": version_doc(model, started_at),
    }
