"""Hypothesis strategies derived from JSON schemas (the tools' own ``inputSchema``, the models'
``model_json_schema()``), plus the hostile values of the fuzz issue, shared by the MCP and CLI
fuzz tests.

Only the schema keywords our tools use are understood: ``type`` (string, integer, number,
boolean), ``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``,
``required``, ``properties``, ``anyOf`` (pydantic's optional fields). ``hypothesis-jsonschema``
does the same in general but does not run on current hypothesis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

#: Text that is never a directive of the emulator ("[emulator:...]") nor a local path.
SAFE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="[]\x00/\\~"), min_size=1, max_size=40
)


def _branch(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic writes optional fields as ``anyOf: [{...}, {"type": "null"}]``."""
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return {**schema, **option}
    return schema


def value_strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for one property's schema."""
    schema = _branch(schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= schema.get("maxLength", 200)
            )
        return st.text(
            alphabet=st.characters(codec="utf-8", exclude_characters="[]\x00"),
            min_size=schema.get("minLength", 0),
            max_size=min(schema.get("maxLength", 60), 60),
        )
    return st.none()


def arguments_strategy(
    schema: dict[str, Any], overrides: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Argument dicts valid for an object schema: every required field, any optional ones."""
    properties: dict[str, Any] = schema.get("properties", {})
    overrides = overrides or {}
    required = set(schema.get("required", []))
    fields = {name: overrides.get(name, value_strategy(prop)) for name, prop in properties.items()}
    return st.fixed_dictionaries(
        {name: fields[name] for name in properties if name in required},
        optional={name: fields[name] for name in properties if name not in required},
    )


#: Values no field of ours accepts as given, with what they are (the test ids).
WRONG_TYPES: list[Any] = [[], {}, [1, 2], {"a": 1}, 1.5, "not-a-number"]


def wrong_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values invalid for one property's schema: wrong type, out of range, not in the enum."""
    schema = _branch(schema)
    kind = schema.get("type")
    options: list[st.SearchStrategy[Any]] = []
    if "enum" in schema:
        options.append(SAFE_TEXT.filter(lambda s: s not in schema["enum"]))
        options.append(st.sampled_from([[], {}, 12]))
    elif kind in ("integer", "number"):
        # (null is not here: the server takes it for "not given" on an optional field.)
        options.append(st.sampled_from([[], {}, "many", ""]))
        if "maximum" in schema:
            options.append(st.integers(int(schema["maximum"]) + 1, int(schema["maximum"]) + 10**6))
        if "minimum" in schema:
            options.append(st.integers(int(schema["minimum"]) - 10**6, int(schema["minimum"]) - 1))
        if kind == "integer":
            options.append(st.sampled_from([0.5, 10**40]))
    elif kind == "boolean":
        options.append(st.sampled_from([[], {}, "perhaps", 7]))
    elif kind == "string":
        options.append(st.sampled_from([[], {}, 12, 3.5, False]))
        if schema.get("minLength"):
            options.append(st.just(""))
    return st.one_of(options) if options else st.just([])


def hostile_paths(tmp: Path, sentinel: Path) -> dict[str, str]:
    """Local-file values an attacker would try: each must be refused without being read.

    ``sentinel`` is a real image outside every allowed folder; the FIFO would block a reader
    forever; the symlink points out of an allowed folder.
    """
    fifo = tmp / "fifo.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    return {
        "traversal": "../" * 12 + str(sentinel).lstrip("/"),
        "traversal-long": "../" * 100_000 + "x.png",
        "absolute-outside": str(sentinel),
        "proc": "/proc/self/environ",
        "proc-fd": "/proc/self/fd/0",
        "dev": "/dev/zero",
        "fifo": str(fifo),
        "file-uri": sentinel.as_uri(),
        "nul-byte": "car\x00.png",
        "tilde-user": "~nosuchuser-flux/x.png",
        "too-long-name": "a" * 5000 + ".png",
    }


BAD_DATA_URIS = {
    "data-text": "data:text/plain;base64,aGVsbG8=",
    "data-bad-base64": "data:image/png;base64,!!!!",
    "data-empty": "data:image/png;base64,",
    "data-not-an-image": "data:image/png;base64,aGVsbG8gd29ybGQ=",
}
BAD_URLS = {"http-empty": "http://", "https-empty": "https://", "url-bad-ipv6": "http://[::1"}
