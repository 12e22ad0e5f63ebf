"""From what a caller passes to what the API takes: the input checked against the model's
schema (the package's snapshot, or the API's live one when the snapshot may be stale) before
anything is sent, and every image source (a path, a ``data:`` URI, a prediction id) resolved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from .._base.errors import FluxAPIError, FluxConnectionError, FluxInputError, SchemaError
from .._domain.images import check_image_uri, data_uri_size, source_kind
from .._domain.inputs import FluxInput
from .._domain.registry import ModelSpec, normalize_model_name, spec_or_none
from .._domain.schemas import input_error, live_input_model
from .actions import Call, Flow, ImageLoader, LoadImage
from .requests import Requests

#: How long fetching a model's schema may take (retries included) before the snapshot is used,
#: and how long after a failed fetch (a 5xx, no connection) it is not tried again.
SCHEMA_SECONDS = 5.0
SCHEMA_RETRY_SECONDS = 300.0

logger = logging.getLogger("flux_tools")


class Payloads:
    """The inputs of one client: validation, live schemas (fetched once), image sources."""

    def __init__(self, requests: Requests, *, model: str, clock: Callable[[], float]) -> None:
        self.requests = requests
        self.model = model
        self._clock = clock
        #: Input models from the API's model endpoint, by model (None: it has none to use).
        self._live_schemas: dict[str, type[FluxInput] | None] = {}
        self._schema_retry_at: dict[str, float] = {}
        #: Whether the API's model endpoint is asked for schemas (see ``model_schema``).
        self.live_schemas = True
        #: Why a model's live schema was refused (:class:`SchemaError`'s text), by model.
        self.refused: dict[str, str] = {}

    def input_model(self, model: str) -> type[FluxInput] | None:
        """The input model ``model`` is validated with now: its live schema once fetched (see
        :meth:`model_schema`), else the package's snapshot; None for a model nothing describes."""
        live = self._live_schemas.get(model)
        if live is not None:
            return live
        spec = spec_or_none(model)
        return spec.input_model if spec else None

    def validate(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        model: str,
        *,
        max_image_bytes: int | None = None,
    ) -> FluxInput | dict[str, Any]:
        """Check the input against the model's schema before anything is sent."""
        model = normalize_model_name(model)
        cls = self.input_model(model)
        spec = spec_or_none(model)
        if isinstance(input, BaseModel):
            if fields:
                raise FluxInputError("Pass either an input model or keyword fields, not both.")
            accepted = tuple(c for c in (cls, spec.input_model if spec else None) if c)
            if accepted and not isinstance(input, accepted):
                raise FluxInputError(
                    f"{model} takes {accepted[0].__name__}, not {type(input).__name__}."
                )
            return input
        data = {**(input or {}), **fields}
        if cls is None:
            return dict(data)  # a model nothing describes: the server validates
        context = {"max_image_bytes": max_image_bytes} if max_image_bytes else None
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as exc:
            raise input_error(exc, cls, model) from None

    def prepare_input(
        self,
        input: FluxInput | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        model: str,
        images: ImageLoader,
    ) -> Flow[dict[str, Any]]:
        """Validate, then turn image sources (paths, prediction ids) into what the API takes.

        A model the registry does not know is validated with its live schema (fetched once); a
        registry model's input the snapshot refuses is checked again against the live schema,
        which may be newer than the snapshot, before the refusal is believed.
        """
        model = normalize_model_name(model)
        spec = spec_or_none(model)
        if spec is None and self.live_schemas and not self._schema_asked(model):
            yield from self.model_schema(model)
        try:
            checked = self.validate(input, fields, model, max_image_bytes=images.max_bytes)
        except FluxInputError as exc:
            if not self._may_be_stale(exc, spec, model, input):
                raise
            live = yield from self.model_schema(model)
            if live is None or live is (spec.input_model if spec else None):
                raise
            checked = self.validate(input, fields, model, max_image_bytes=images.max_bytes)
        if not isinstance(checked, FluxInput):
            return checked
        payload = checked.to_api()
        for name in type(checked).image_fields:
            value = payload.get(name)
            if isinstance(value, str):
                payload[name] = yield from self._image(value, name, images)
            elif isinstance(value, list):
                resolved = []
                for i, source in enumerate(value):
                    resolved.append((yield from self._image(source, f"{name}[{i}]", images)))
                payload[name] = resolved
        return payload

    def _may_be_stale(
        self,
        error: FluxInputError,
        spec: ModelSpec | None,
        model: str,
        input: FluxInput | Mapping[str, Any] | None,
    ) -> bool:
        """Whether a refusal could come from an outdated snapshot (not from a bad image source,
        which no schema version would take): then the live schema is asked."""
        if not self.live_schemas or spec is None or self._schema_asked(model):
            return False
        if isinstance(input, BaseModel) or not error.errors:
            return False
        # A refused item of a list, or a refused single image: its source is wrong, whatever the
        # schema's version. A list's count, or any other field, may be a newer schema's rule.
        single = {f.name for f in spec.input_model.image_inputs if not f.multiple}
        return any(
            "[" not in str(e["field"]) and str(e["field"]) not in single for e in error.errors
        )

    def _image(self, source: str, label: str, images: ImageLoader) -> Flow[str]:
        """One image source as the API takes it: URLs as they are, a ``data:`` URI within the
        size cap, a local file read as a data URI, a prediction id as its output's URL."""
        kind = source_kind(source)
        if kind == "data":
            size = data_uri_size(source)
            if size > images.max_bytes:
                raise _input_problem(
                    label,
                    f"the data: URI holds about {size} bytes, over the {images.max_bytes}-byte "
                    "limit for inline images; pass a smaller image or an https URL",
                )
            return source
        if kind == "url":
            return source
        data_uri = yield LoadImage(source, label, images)
        if isinstance(data_uri, str):
            return data_uri
        # A prediction id with no saved file: use its output URL.
        return (yield from self._output_of(source, label))

    def _output_of(self, prediction_id: str, field: str) -> Flow[str]:
        try:
            earlier = yield from self.requests.get(prediction_id)
        except FluxAPIError as exc:
            if exc.status != 404:
                raise
            raise FluxInputError.one(
                field,
                f"{prediction_id} is neither a file in the allowed folders nor a known "
                "prediction id",
            ) from None
        urls = earlier.output_urls
        if earlier.status != "succeeded" or not urls:
            why = "its outputs were deleted" if earlier.data_removed else f"it is {earlier.status}"
            raise FluxInputError.one(
                field,
                f"prediction {prediction_id} has no image to use ({why}); pass the saved file "
                "or a URL instead",
            )
        try:  # the API's answer is not trusted: it must be an image source the API takes
            return check_image_uri(urls[0])
        except ValueError as exc:
            raise _input_problem(
                field, f"prediction {prediction_id}'s output cannot be used: {exc}"
            ) from None

    def model_schema(
        self, model: str | None = None, *, refresh: bool = False
    ) -> Flow[type[FluxInput] | None]:
        """The input model of ``model`` as the API describes it now (``GET {base}/models/{owner}/
        {name}``), fetched once per client and cached; the snapshot (or None, for a model the
        package does not know) where the API has no such endpoint or no usable schema."""
        model = normalize_model_name(model or self.model)
        spec = spec_or_none(model)
        snapshot = spec.input_model if spec else None
        if self._schema_asked(model) and not refresh:
            return self._live_schemas.get(model) or snapshot
        call = Call("GET", self.requests.model_url(model), "get")
        try:
            reply = yield from self.requests.send(call, deadline=self._clock() + SCHEMA_SECONDS)
        except FluxAPIError as exc:
            if 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 429):
                self._live_schemas[model] = None  # no such endpoint (a gateway): the snapshot
            else:  # may pass: asked again, but not at every call meanwhile
                self._schema_retry_at[model] = self._clock() + SCHEMA_RETRY_SECONDS
            return snapshot
        except FluxConnectionError:
            self._schema_retry_at[model] = self._clock() + SCHEMA_RETRY_SECONDS
            return snapshot
        try:
            live = live_input_model(
                model,
                reply.body,
                name=snapshot.__name__ if snapshot else None,
                summary=snapshot.__doc__ if snapshot else None,
            )
        except SchemaError as exc:  # refused at once, whatever it would have cost
            logger.warning(
                "%s; %s", exc, "using the package's snapshot" if snapshot else "not validated here"
            )
            self.refused[model] = str(exc)
            live = None
        self._live_schemas[model] = live
        return live or snapshot

    def _schema_asked(self, model: str) -> bool:
        """Whether the model endpoint was asked about ``model`` (or failed a moment ago)."""
        return model in self._live_schemas or self._clock() < self._schema_retry_at.get(
            model, -math.inf
        )


def _input_problem(field: str, problem: str) -> FluxInputError:
    return FluxInputError.one(field, problem)
