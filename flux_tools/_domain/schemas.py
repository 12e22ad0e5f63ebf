"""Input schemas as data: the models' published schemas, compiled into pydantic input models.

A model's input schema is what its API publishes (Replicate: ``GET /models/{owner}/{name}`` →
``latest_version.openapi_schema.components.schemas.Input``, in the OpenAPI style Cog writes). The
package carries a dated snapshot of each registry model's schema (``flux_tools/schemas/*.json``,
with the version it came from); :func:`compile_input_model` turns such a document, a snapshot or
one fetched live, into the pydantic model every front end validates with and derives its tool
schema from. Two things are layered on top, keyed by field name and model:

- descriptions written for a language model that must choose a value (``DESCRIPTIONS``), which
  replace the API's terse ones where we know the field (the API's text is used, bounded and
  stripped of control characters, for fields we do not know);
- rules the schema cannot say (``RULES``): ``custom`` needs a width and a height, Kontext is at
  most 2 strict with an input image.

Nothing an API returns is trusted: a live schema with odd field names, too many fields or
unknown types is refused (:class:`SchemaError`) and the caller falls back to the snapshot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainSerializer,
    ValidationError,
    create_model,
    model_validator,
)

from .._base.errors import FluxInputError, SchemaError
from .images import IMAGE_SOURCE_HELP, IMAGE_TYPES_TEXT, ImageField, ImageSource
from .inputs import MAX_TEXT_CHARS, FluxInput, Prompt, Text

#: Bounds of what a schema may declare, live or not.
MAX_FIELDS = 100
MAX_ENUM_VALUES = 200
#: A list of images without a declared maximum takes at most this many; other lists this many.
DEFAULT_MAX_ITEMS = 16
MAX_LIST_ITEMS = 100
#: Integers without a declared range (seeds): what a 64-bit server takes.
INT_RANGE = (-(2**63), 2**63 - 1)
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_RESERVED = {"model_config", "model_fields", "image_fields", "image_inputs", "to_api"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# -- the snapshots ------------------------------------------------------------------------------


@cache
def snapshot(short_name: str) -> dict[str, Any]:
    """The snapshot document of a registry model: ``model``, ``version``, ``date``, ``source``
    and ``openapi_schema`` (``components.schemas.Input`` and the enums it refers to)."""
    text = resources.files("flux_tools").joinpath("schemas", f"{short_name}.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def snapshot_document(model: str) -> dict[str, Any]:
    """The snapshot of ``model`` (``owner/name``, or a FLUX short name): a copy of its document
    (``model``, ``version``, ``date``, ``source``, ``openapi_schema``). ValueError if the
    package has none."""
    short = model.strip().strip("/").rpartition("/")[2]
    if short not in snapshot_names():
        raise ValueError(
            f"no schema snapshot for {model!r}; snapshots: {', '.join(snapshot_names())}"
        )
    document = snapshot(short)
    if model.count("/") == 1 and document["model"] != model.strip().strip("/"):
        raise ValueError(f"no schema snapshot for {model!r}")
    copied: dict[str, Any] = json.loads(json.dumps(document))
    return copied


def snapshot_schema(model: str) -> dict[str, Any]:
    """The ``openapi_schema`` of ``model``'s snapshot, as a model endpoint serves it
    (``latest_version.openapi_schema``): a fresh copy, safe to change."""
    schema: dict[str, Any] = snapshot_document(model)["openapi_schema"]
    return schema


def input_model_from_schema(model: str, openapi_schema: Mapping[str, Any]) -> type[FluxInput]:
    """The input model of any model (``owner/name``) from its ``openapi_schema`` (or a bare
    ``Input`` schema): what the client validates with. Raises :class:`SchemaError`."""
    return compile_input_model(model, openapi_schema, source="live")


@cache
def snapshot_names() -> tuple[str, ...]:
    """The short names of the models the package has a schema snapshot of."""
    folder = resources.files("flux_tools").joinpath("schemas")
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")))


# -- what is layered on top: descriptions for a language model, and rules ---------------------

FLUX_OWNER = "black-forest-labs"
FORMAT_WORDS = {"webp": "webp (small)", "jpg": "jpg", "png": "png (lossless)"}
DEFAULT_KEY = ""


def _formats(prop: Mapping[str, Any]) -> str:
    words = [FORMAT_WORDS.get(str(v), str(v)) for v in prop.get("enum", ())]
    listed = ", ".join(words[:-1]) + (f", or {words[-1]}" if len(words) > 2 else f" or {words[-1]}")
    return f"File format of the image: {listed}." if len(words) > 1 else "File format of the image."


def _aspect(prop: Mapping[str, Any]) -> str:
    values = prop.get("enum", ())
    text = "Shape of the image, width:height."
    if "custom" in values:
        text += " Use 'custom' to set width and height."
    if "match_input_image" in values:
        text += " 'match_input_image' keeps the shape of the (first) input image."
    return text


def _size(axis: str) -> Callable[[Mapping[str, Any]], str]:
    def text(prop: Mapping[str, Any]) -> str:
        multiple = 16 if "multiple of 16" in str(prop.get("description", "")) else 32
        return (
            f"{axis} in pixels ({prop.get('minimum')}-{prop.get('maximum')}, rounded to a multiple "
            f"of {multiple}). Used only when aspect_ratio is 'custom'."
        )

    return text


def _references(prop: Mapping[str, Any]) -> str:
    most = prop.get("maxItems", DEFAULT_MAX_ITEMS)
    return (
        f"Reference images to edit or compose from, up to {most} ({IMAGE_TYPES_TEXT}); each is "
        f"{IMAGE_SOURCE_HELP}. Refer to them in the prompt by position: 'the person from image 1 "
        "in the room of image 2'."
    )


Description = str | Callable[[Mapping[str, Any]], str]
#: field -> {model short name or "" for any model -> text, or a function of the field's schema}.
DESCRIPTIONS: dict[str, dict[str, Description]] = {
    "prompt": {
        DEFAULT_KEY: "What the image should show. Be concrete: subject, setting, style, lighting.",
        "flux-kontext-pro": "The edit to make, as an instruction: 'make the car gold', 'change "
        "the background to a beach', 'turn it into a watercolor'. Say what to keep unchanged.",
    },
    "seed": {
        DEFAULT_KEY: "Random seed. Reuse a previous image's seed with the same prompt to "
        "reproduce or slightly vary it; leave empty for a new random image."
    },
    "prompt_upsampling": {
        DEFAULT_KEY: "Let the model rewrite the prompt with more detail before generating."
    },
    "output_quality": {
        DEFAULT_KEY: lambda p: (
            f"Compression quality {p.get('minimum')}-{p.get('maximum')} for "
            "webp and jpg (ignored for png)."
        )
    },
    "image_prompt": {
        DEFAULT_KEY: "Optional image whose composition and style guide the generation "
        f"({IMAGE_TYPES_TEXT}): {IMAGE_SOURCE_HELP}."
    },
    "safety_tolerance": {
        DEFAULT_KEY: lambda p: (
            f"Content filter strength: {p.get('minimum')} is the strictest, "
            f"{p.get('maximum')} the most permissive."
        ),
        "flux-kontext-pro": lambda p: (
            f"Content filter strength: {p.get('minimum')} is the "
            f"strictest, {p.get('maximum')} the most permissive (at most 2 when editing an image)."
        ),
    },
    "output_format": {DEFAULT_KEY: _formats},
    "aspect_ratio": {
        DEFAULT_KEY: _aspect,
        "flux-dev": "Shape of the image, width:height. Ignored when an image is given.",
    },
    "width": {DEFAULT_KEY: _size("Width")},
    "height": {DEFAULT_KEY: _size("Height")},
    "steps": {
        DEFAULT_KEY: lambda p: (
            f"Diffusion steps ({p.get('minimum')}-{p.get('maximum')}): more "
            "gives finer detail but takes longer."
        )
    },
    "guidance": {
        DEFAULT_KEY: lambda p: (
            f"How closely to follow the prompt ({p.get('minimum')}-"
            f"{p.get('maximum')}). Higher is more literal, lower is more natural and varied."
        )
    },
    "interval": {
        DEFAULT_KEY: "Variance of possible outputs (1-4). Higher gives more varied "
        "compositions but lower prompt adherence."
    },
    "raw": {DEFAULT_KEY: "Less processed, more natural-looking images (photography)."},
    "image_prompt_strength": {
        DEFAULT_KEY: "How much the image_prompt shapes the result (0-1); higher follows it more."
    },
    "num_outputs": {
        DEFAULT_KEY: lambda p: (
            f"How many images to generate in one call ({p.get('minimum')}-{p.get('maximum')})."
        )
    },
    "num_inference_steps": {
        DEFAULT_KEY: lambda p: (
            f"Denoising steps ({p.get('minimum')}-{p.get('maximum')}): more is finer but slower."
        ),
        "flux-schnell": "Denoising steps (1-4): 4 is best, fewer is faster.",
    },
    "disable_safety_checker": {DEFAULT_KEY: "Turn off the safety checker of the generated images."},
    "go_fast": {DEFAULT_KEY: "Run an optimised version: faster, very slightly lower quality."},
    "megapixels": {
        DEFAULT_KEY: "Approximate size: '1' megapixel (about 1024x1024) or '0.25' (512x512)."
    },
    "output_megapixels": {
        DEFAULT_KEY: lambda p: (
            "Approximate size in megapixels, one of "
            + ", ".join(repr(v) for v in p.get("enum", ()))
            + " ('1' is about 1024x1024)."
        )
    },
    "resolution": {
        DEFAULT_KEY: "Size in megapixels ('1 MP' is about 1024x1024, at most 2048x2048). "
        "'match_input_image' follows the first input image; not used with aspect_ratio 'custom'."
    },
    "image": {
        DEFAULT_KEY: "Optional starting image for image-to-image (the output keeps its aspect "
        f"ratio): {IMAGE_SOURCE_HELP}."
    },
    "prompt_strength": {
        DEFAULT_KEY: "With an image: how much to change it (0 keeps it, 1 replaces it entirely)."
    },
    "input_image": {DEFAULT_KEY: f"The image to edit ({IMAGE_TYPES_TEXT}): {IMAGE_SOURCE_HELP}."},
    "input_images": {DEFAULT_KEY: _references},
    "images": {DEFAULT_KEY: _references},
}
#: Models whose descriptions follow another's (same family, same fields).
DESCRIPTION_FAMILY = {"flux-kontext-max": "flux-kontext-pro"}


def _describe(model: str, name: str, prop: Mapping[str, Any]) -> str:
    owner, _, short = model.rpartition("/")
    # Our words are for the FLUX family; another owner's "prompt" may mean something else.
    texts = DESCRIPTIONS.get(name) if owner == FLUX_OWNER else None
    if texts is not None:
        chosen = texts.get(short) or texts.get(DESCRIPTION_FAMILY.get(short, "")) or texts[""]
        return chosen(prop) if callable(chosen) else chosen
    # A field we do not know: the API's own words, bounded and printable, plus its range.
    text = _CONTROL.sub(" ", str(prop.get("description") or prop.get("title") or name))[:300]
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None and str(low) not in text:
        text += f" ({low}-{high})"
    return text.strip()


Props = Mapping[str, Mapping[str, Any]]


def _custom_size(props: Props) -> Callable[[Any], Any] | None:
    if not {"aspect_ratio", "width", "height"} <= set(props):
        return None
    if "custom" not in props["aspect_ratio"].get("enum", ()):
        return None
    width = props["width"]
    bounds = (
        f" ({width.get('minimum')}-{width.get('maximum')} pixels)" if "maximum" in width else ""
    )

    def rule(self: Any) -> Any:
        if self.aspect_ratio == "custom" and (self.width is None or self.height is None):
            raise ValueError(f"aspect_ratio 'custom' needs both width and height{bounds}")
        return self

    return rule


def _strict_with_an_image(props: Props) -> Callable[[Any], Any] | None:
    if not {"input_image", "safety_tolerance"} <= set(props):
        return None

    def rule(self: Any) -> Any:
        if self.input_image is not None and self.safety_tolerance > 2:
            raise ValueError("safety_tolerance must be at most 2 when an input_image is given")
        return self

    return rule


#: Rules beyond what a JSON schema says: model short name (or "" for every model) -> rules.
RULES: dict[str, list[Callable[[Props], Callable[[Any], Any] | None]]] = {
    DEFAULT_KEY: [_custom_size],
    "flux-kontext-pro": [_strict_with_an_image],
    "flux-kontext-max": [_strict_with_an_image],
}

# -- compiling a schema -----------------------------------------------------------------------


def _whole(value: float) -> float | int:
    # The API documents numbers with integer defaults (guidance 3): send 3, not 3.0.
    return int(value) if float(value).is_integer() else value


def _int64(value: int) -> int:
    if not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise ValueError(f"must be a 64-bit integer ({INT_RANGE[0]} to {INT_RANGE[1]})")
    return value


#: An integer without a published range (seeds): bounded, without cluttering the tool schema.
BoundedInt = Annotated[int, AfterValidator(_int64)]
Number = Annotated[float, PlainSerializer(_whole, return_type=float | int, when_used="json")]


#: How much work resolving one schema's ``$ref``/``allOf`` may take: parts of one property (Cog
#: writes one ``allOf`` part, pydantic two ``anyOf`` options), nesting, and resolution steps in
#: all (a reference resolved once is remembered). A document that needs more is refused at once:
#: three levels of 50-way fan-out would otherwise cost 50³ merges per field.
MAX_PARTS = 8
MAX_DEPTH = 3
MAX_RESOLVE_STEPS = 5000


class _Resolver:
    """Merges ``allOf``/``$ref`` parts (Cog puts enums in components) into one property, each
    reference resolved once, within :data:`MAX_RESOLVE_STEPS` in all."""

    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self._schemas = schemas
        self._done: dict[str, dict[str, Any]] = {}
        self._active: set[str] = set()
        self.steps = 0

    def _step(self) -> None:
        self.steps += 1
        if self.steps > MAX_RESOLVE_STEPS:
            raise SchemaError(
                f"resolving its $ref/allOf parts takes more than {MAX_RESOLVE_STEPS} steps"
            )

    def _ref(self, ref: str, depth: int) -> dict[str, Any]:
        name = ref.rpartition("/")[2]
        if name in self._done:
            return self._done[name]
        if name in self._active:
            raise SchemaError(f"$ref {name[:40]!r} refers to itself")
        self._active.add(name)
        try:
            resolved = self.resolve(self._schemas.get(name), depth)
        finally:
            self._active.discard(name)
        self._done[name] = resolved
        return resolved

    def resolve(self, prop: Any, depth: int = 0) -> dict[str, Any]:
        self._step()
        if not isinstance(prop, Mapping) or depth > MAX_DEPTH:
            raise SchemaError("a property is not an object")
        merged: dict[str, Any] = {
            k: v for k, v in prop.items() if k not in ("allOf", "anyOf", "oneOf", "$ref")
        }
        all_of = prop.get("allOf") or []
        if not isinstance(all_of, list):
            raise SchemaError("an allOf is not a list")
        parts = list(all_of) + ([{"$ref": prop["$ref"]}] if "$ref" in prop else [])
        # A nullable field written {"anyOf": [{...}, {"type": "null"}]} (pydantic's style): its
        # one non-null branch is the field.
        for key in ("anyOf", "oneOf"):
            options = prop.get(key)
            if isinstance(options, list):
                if len(options) > MAX_PARTS:
                    raise SchemaError(f"a property has {len(options)} {key} options")
                real = [
                    o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")
                ]
                if len(real) != 1:
                    raise SchemaError(f"a property has {len(real)} alternatives")
                parts.append(real[0])
        if len(parts) > MAX_PARTS:
            raise SchemaError(f"a property merges {len(parts)} allOf/$ref parts")
        for part in parts:
            if isinstance(part, Mapping) and isinstance(part.get("$ref"), str):
                self._step()
                part = self._ref(part["$ref"], depth + 1)
            elif isinstance(part, Mapping):
                part = self.resolve(part, depth + 1)
            else:
                raise SchemaError("an allOf part is not an object")
            merged = {**part, **merged}  # the property's own default and description win
        return merged


def _range(prop: Mapping[str, Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for key, arg in (("minimum", "ge"), ("maximum", "le")):
        value = prop.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            bounds[arg] = value
    return bounds


ImageKind = Literal["single", "list"] | None


def _annotation(name: str, prop: Mapping[str, Any]) -> tuple[Any, dict[str, Any], ImageKind]:
    """The Python type of one property, its Field constraints, and whether it takes images."""
    kind = prop.get("type")
    if "enum" in prop:
        values = prop["enum"]
        if (
            not isinstance(values, list)
            or not 0 < len(values) <= MAX_ENUM_VALUES
            or not all(isinstance(v, str | int | float) for v in values)
            or any(isinstance(v, str) and len(v) > 200 for v in values)
        ):
            raise SchemaError(f"{name}: its enum is not a short list of plain values")
        return Literal[tuple(values)], {}, None
    if kind == "string" and prop.get("format") == "uri":
        return ImageSource, {}, "single"
    if kind == "string":
        if name == "prompt":
            return Prompt, {"min_length": 1}, None
        most = prop.get("maxLength")
        return (
            Text,
            ({"max_length": min(most, MAX_TEXT_CHARS)} if isinstance(most, int) else {}),
            None,
        )
    if kind == "integer":
        bounds = _range(prop)
        return (int, bounds, None) if bounds else (BoundedInt, {}, None)
    if kind == "number":
        return Number, {**_range(prop), "allow_inf_nan": False}, None
    if kind == "boolean":
        return bool, {}, None
    if kind == "array":
        items = prop.get("items")
        if (
            isinstance(items, Mapping)
            and items.get("type") == "string"
            and (items.get("format") == "uri")
        ):
            most = prop.get("maxItems")
            most = most if isinstance(most, int) and 0 < most <= 100 else DEFAULT_MAX_ITEMS
            return list[ImageSource], {"max_length": most}, "list"
        item = {"string": Text, "integer": BoundedInt, "number": Number, "boolean": bool}.get(
            str(items.get("type")) if isinstance(items, Mapping) else ""
        )
        if item is None:
            raise SchemaError(f"{name}: only lists of images, text, numbers or booleans")
        most = prop.get("maxItems")
        most = most if isinstance(most, int) and 0 < most <= MAX_LIST_ITEMS else MAX_LIST_ITEMS
        return list[item], {"max_length": most}, None  # type: ignore[valid-type]
    raise SchemaError(f"{name}: type {str(kind)[:20]!r} is not supported")


def class_name(model: str) -> str:
    """``black-forest-labs/flux-1.1-pro`` -> ``Flux11ProInput`` (the name of the model)."""
    short = model.rpartition("/")[2]
    words = re.split(r"[^A-Za-z0-9]+", short.replace(".", ""))
    return "".join(w[:1].upper() + w[1:] for w in words if w) + "Input"


def compile_input_model(
    model: str,
    openapi_schema: Mapping[str, Any],
    *,
    name: str | None = None,
    summary: str | None = None,
    version: str | None = None,
    date: str | None = None,
    source: str = "snapshot",
    module: str = __name__,
) -> type[FluxInput]:
    """The pydantic input model of ``model`` (``owner/name``) from its OpenAPI document.

    ``openapi_schema`` is a model version's ``openapi_schema`` (``components.schemas.Input``
    and the enums it refers to), or a bare ``Input`` object schema. Raises :class:`SchemaError`
    for a document it will not compile, naming the model; the work it takes is bounded
    (:data:`MAX_RESOLVE_STEPS`), whatever the document.
    """
    try:
        return _compile(model, openapi_schema, name, summary, version, date, source, module)
    except SchemaError as exc:
        raise SchemaError(f"the input schema of {model[:200]} was refused: {exc}") from None


def _compile(
    model: str,
    openapi_schema: Mapping[str, Any],
    name: str | None,
    summary: str | None,
    version: str | None,
    date: str | None,
    source: str,
    module: str,
) -> type[FluxInput]:
    schemas: Mapping[str, Any]
    components = openapi_schema.get("components")
    if isinstance(components, Mapping) and isinstance(components.get("schemas"), Mapping):
        schemas = components["schemas"]
        input_schema = schemas.get("Input")
    else:
        schemas, input_schema = {}, openapi_schema
    if not isinstance(input_schema, Mapping) or not isinstance(
        input_schema.get("properties"), Mapping
    ):
        raise SchemaError("the document has no Input schema with properties")
    properties: Mapping[str, Any] = input_schema["properties"]
    if not 0 < len(properties) <= MAX_FIELDS:
        raise SchemaError(f"the Input schema has {len(properties)} fields")
    required_raw = input_schema.get("required")
    required = (
        {r for r in required_raw if isinstance(r, str)} if isinstance(required_raw, list) else set()
    )

    def order(item: tuple[str, Any]) -> Any:
        position = item[1].get("x-order") if isinstance(item[1], Mapping) else None
        return position if isinstance(position, int) else 10**6

    fields: dict[str, Any] = {}
    resolver = _Resolver(schemas)
    resolved: dict[str, dict[str, Any]] = {}
    images: list[ImageField] = []
    for field_name, raw in sorted(properties.items(), key=order):
        if (
            not isinstance(field_name, str)
            or not _FIELD_NAME.match(field_name)
            or field_name in _RESERVED
            or field_name.startswith("model_")
            or hasattr(FluxInput, field_name)  # json, copy, image_sources...: would shadow them
        ):
            raise SchemaError(f"field name {str(field_name)[:40]!r} is not usable")
        prop = resolved[field_name] = resolver.resolve(raw)
        annotation, constraints, image_kind = _annotation(field_name, prop)
        is_required = field_name in required
        description = _describe(model, field_name, prop)
        if is_required:
            info = Field(description=description, **constraints)
        elif prop.get("default") is not None:
            info = Field(default=prop["default"], description=description, **constraints)
        else:
            annotation = Annotated[annotation, Field(**constraints)] | None
            info = Field(default=None, description=description)
        fields[field_name] = (annotation, info)
        if image_kind == "single":
            images.append(ImageField(field_name, False, 1, is_required))
        elif image_kind == "list":
            images.append(ImageField(field_name, True, constraints["max_length"], is_required))

    short = model.rpartition("/")[2]
    validators: dict[str, Any] = {}
    for make in [*RULES[DEFAULT_KEY], *RULES.get(short, [])]:
        rule = make(resolved)
        if rule is not None:
            validators[f"_rule_{make.__name__.strip('_')}"] = model_validator(mode="after")(rule)
    builder: Any = create_model  # its overloads cannot see that the result subclasses the base
    cls: type[FluxInput] = builder(
        name or class_name(model),
        __base__=FluxInput,
        __doc__=summary or f"Input of ``{model}``.",
        __module__=module,
        __validators__=validators or None,
        **fields,
    )
    cls.image_fields = tuple(f.name for f in images)
    cls.image_inputs = tuple(images)
    cls.model_name = model
    cls.schema_version = version
    cls.schema_date = date
    cls.schema_source = source
    return cls


# -- what the API's model endpoint says ---------------------------------------------------------

#: Largest model document read from the API (Replicate's are a few tens of kB).
MAX_DOCUMENT_BYTES = 1024 * 1024
_VERSION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def live_input_model(
    model: str, body: bytes, *, name: str | None = None, summary: str | None = None
) -> type[FluxInput] | None:
    """The input model from a ``GET /models/{owner}/{name}`` answer; None if it has none (no
    version, no schema). Raises :class:`SchemaError`, naming the model, for a document too large
    or a schema that does not compile (or would cost too much to): the caller falls back to the
    snapshot. Bounded work whatever the document (see :data:`MAX_RESOLVE_STEPS`)."""
    if len(body) > MAX_DOCUMENT_BYTES:
        raise SchemaError(
            f"the model document of {model[:200]} is {len(body)} bytes, over the "
            f"{MAX_DOCUMENT_BYTES} read: refused"
        )
    try:
        document = json.loads(body)
        version = document["latest_version"]
        openapi = version["openapi_schema"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if not isinstance(openapi, Mapping):
        return None
    version_id = version.get("id") if isinstance(version, Mapping) else None
    created = version.get("created_at") if isinstance(version, Mapping) else None
    try:
        return compile_input_model(
            model,
            openapi,
            name=name,
            summary=summary,
            version=version_id
            if isinstance(version_id, str) and _VERSION_ID.match(version_id)
            else None,
            date=created[:10]
            if isinstance(created, str) and re.match(r"^\d{4}-\d\d-\d\d", created)
            else None,
            source="live",
        )
    except SchemaError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise SchemaError(
            f"the input schema of {model[:200]} was refused: {type(exc).__name__}"
        ) from None


def _label(loc: tuple[int | str, ...]) -> str:
    """``("input_images", 2)`` -> ``input_images[2]``: the item of a list, as a caller names it."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "input"


def input_error(exc: ValidationError, cls: type[FluxInput], model: str) -> FluxInputError:
    """The error of an input refused by ``cls``: each field (or list item) named, with what is
    allowed, and none of the refused value but a short excerpt."""
    error = FluxInputError.from_validation_error(exc, cls.model_json_schema(), model=model)
    message = error.message
    for raw, entry in zip(exc.errors(include_url=False), error.errors, strict=False):
        if any(isinstance(p, int) for p in raw["loc"]):
            label = _label(tuple(raw["loc"]))
            message = message.replace(f"- {entry['field']}:", f"- {label}:", 1)
            entry["field"] = label
    if message != error.message:
        error = FluxInputError(message, error.errors)
    return error
