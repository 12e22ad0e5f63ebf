"""The contract between ``mcp_server._sdk`` and the installed mcp SDK (1.x or 2.x).

No public API lets a server publish its own input schema for a tool and receive the arguments
raw (validated by the server, so errors can name the field and the allowed values). ``_sdk._tool``
therefore sets three attributes of the SDK's ``Tool``: ``fn_metadata.arg_model``,
``parameters`` and ``fn_metadata.output_schema``. This test pins what the adapter relies on, so
that an SDK release that renames or stops honouring them fails here, by name, before a user sees
a tool whose schema or arguments went wrong.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import BaseModel

pytestmark = pytest.mark.mcp

_sdk = pytest.importorskip("mcp_server._sdk")


class Out(BaseModel):
    status: str


SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "In",
    "properties": {"prompt": {"type": "string", "title": "Prompt", "description": "what"}},
    "required": ["prompt"],
    "additionalProperties": False,
}


async def _handler(context: Any, arguments: dict[str, Any]) -> Any:
    return _sdk.tool_result([_sdk.text_content(repr(sorted(arguments.items())))], {"status": "ok"})


def _spec() -> Any:
    return _sdk.ToolSpec(
        name="probe",
        title="Probe",
        description="A probe.",
        input_schema=SCHEMA,
        output_model=Out,
        handler=_handler,
    )


def test_the_sdk_tool_has_the_attributes_the_adapter_sets() -> None:
    tool = _sdk._tool(_spec(), output_schema=True, meta=None)
    assert hasattr(tool, "fn_metadata") and hasattr(tool, "parameters")
    assert hasattr(tool.fn_metadata, "arg_model") and hasattr(tool.fn_metadata, "output_schema")
    # What tools/list publishes is our derived schema, trimmed, not the SDK's own.
    assert tool.parameters == _sdk.lean_schema(SCHEMA)
    assert "title" not in tool.parameters["properties"]["prompt"]
    assert tool.fn_metadata.output_schema == _sdk.lean_schema(Out.model_json_schema(), output=True)


def test_arguments_reach_the_handler_raw() -> None:
    """The SDK must hand the arguments through unvalidated (an unknown field included): the
    server's own validation is what names the field for the model. It does so by validating
    them with ``fn_metadata.arg_model`` and calling ``model_dump_one_level()`` on the result;
    both halves are pinned here. (End to end: an unknown field is refused with our text,
    ``tests/mcp/test_mcp_stdio.py``.)"""
    tool = _sdk._tool(_spec(), output_schema=False, meta=None)
    sdk_call = inspect.getsource(type(tool.fn_metadata))  # how the SDK prepares arguments
    assert "arg_model" in sdk_call and "model_dump_one_level" in sdk_call
    parsed = tool.fn_metadata.arg_model.model_validate({"prompt": "a cat", "stpes": 30})
    assert parsed.model_dump_one_level() == {"arguments": {"prompt": "a cat", "stpes": 30}}
