"""Fuzzed and hostile tool calls through a real client session (one server process reused).

Arguments come from the tools' own ``inputSchema`` (``tools/list``): valid ones, and valid ones
with one field made wrong (wrong type, out of range, not in the enum, an unknown field, even with
a ``null`` value). The hostile values of the fuzz issue are fixed cases. Properties, for every
call: an answer (result or error) within a bound, never a hang; the server still answers
``tools/list``; an invalid call is refused with a text naming the field, a bounded result, and
nothing created upstream; nothing is written or read outside the allowed folders (the output
folder, the image folder). Messages the SDK cannot parse (nested 200 deep, a 5,000-digit
integer, a lone surrogate) get a JSON-RPC error naming the limit, over stdio and HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx2
import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flux_tools.emulator import Emulator

from ..fuzz_schemas import (
    BAD_DATA_URIS,
    BAD_URLS,
    SAFE_TEXT,
    arguments_strategy,
    hostile_paths,
    wrong_value,
)
from .mcp_helpers import (
    ONE_MIB,
    SDK_LINE,
    http_server,
    listening_url,
    server_env,
    server_process,
    text_of,
)
from .real_clients import LEGACY, MODERN, Caller, Target, connect

pytestmark = pytest.mark.mcp

#: A bound on one call: the server answers refusals at once, generations within a second here.
CALL_BOUND = 20
#: An error result quotes at most a short excerpt of the value: its whole size stays small.
ERROR_BOUND = 8_000
FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    # Reproducible in CI (CI=true): the same examples on every run; random elsewhere.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Served:
    """One server process and its client session, callable from synchronous hypothesis tests."""

    portal: anyio.from_thread.BlockingPortal
    session: Caller
    emulator: Emulator
    root: Path
    output: Path
    allowed: Path
    sentinel: Path
    photo: Path
    schemas: dict[str, dict[str, Any]]

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        async def bounded() -> dict[str, Any]:
            with anyio.fail_after(CALL_BOUND):
                result: dict[str, Any] = await self.session.call(name, arguments)
                return result

        return self.portal.call(bounded)

    def tools(self) -> set[str]:
        async def bounded() -> set[str]:
            with anyio.fail_after(CALL_BOUND):
                return set(await self.session.list_tools())

        return self.portal.call(bounded)


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), color).save(path)
    return path


def _tree(root: Path) -> dict[str, float]:
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if not path.is_fifo():
                found[str(path)] = path.lstat().st_mtime
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzz")
    output, allowed, outside = root / "out", root / "allowed", root / "outside"
    for folder in (output, allowed, outside, root / "cwd"):
        folder.mkdir()
    sentinel = _png(outside / "sentinel.png", (250, 0, 250))
    photo = _png(allowed / "photo.png", (0, 120, 30))
    (allowed / "link-out.png").symlink_to(sentinel)
    emulator = Emulator(latency=0.05, queue_time=0.01).start()
    env = server_env(emulator.base_url, output, FLUX_IMAGE_DIRS=str(allowed))
    errlog = root / "server-stderr.log"
    try:
        with anyio.from_thread.start_blocking_portal() as portal:
            # The newest era the installed SDK speaks (2.x: 2026-07-28; 1.x: the handshake).
            era = MODERN if SDK_LINE == 2 else LEGACY
            target = Target("stdio", env, root / "cwd", errlog)
            with portal.wrap_async_context_manager(
                connect("mcp", era, target, session_timeout=600)
            ) as session:
                schemas = {
                    name: tool["inputSchema"]
                    for name, tool in portal.call(session.list_tools).items()
                }
                yield Served(
                    portal, session, emulator, root, output, allowed, sentinel, photo, schemas
                )
    finally:
        emulator.stop()


@pytest.fixture
def before(served: Served) -> Iterator[dict[str, float]]:
    """Around each test: nothing outside the output folder written, the sentinel never sent."""
    outside = {p: t for p, t in _tree(served.root).items() if not p.startswith(str(served.output))}
    yield outside
    after = {p: t for p, t in _tree(served.root).items() if not p.startswith(str(served.output))}
    changed = {p for p in after if p not in outside or after[p] != outside[p]}
    assert changed <= {str(served.root / "server-stderr.log")}, changed
    secret = base64.b64encode(served.sentinel.read_bytes()).decode()
    for prediction in served.emulator.predictions.values():
        sent = json.dumps(served.emulator.prediction_json(prediction.id)["input"])
        assert secret not in sent, "a file outside the allowed folders was read and sent"
    assert served.tools() >= {"generate_image", "edit_image"}  # the server still serves


def fields_at_fault(schema: dict[str, Any], arguments: dict[str, Any]) -> set[str]:
    """The top-level fields that make ``arguments`` invalid for ``schema`` (empty: valid)."""
    validator = jsonschema.Draft202012Validator(schema)
    fields: set[str] = set()
    for error in validator.iter_errors(arguments):
        if error.path:
            fields.add(str(error.path[0]))
        elif error.validator == "additionalProperties":
            fields |= set(arguments) - set(schema.get("properties", {}))
        elif error.validator == "required":
            fields |= {name for name in schema["required"] if name not in arguments}
    return fields


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _named(field: str, text: str) -> bool:
    """The field is named in the text, as is or in an escaped form (control characters)."""
    if field in text:
        return True
    escaped = field.encode("unicode_escape").decode("ascii")
    return escaped in text or json.dumps(field)[1:-1] in text or not field.isprintable()


def check(served: Served, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One call and the properties every call must have."""
    created = served.emulator.stats.predictions_created
    result = served.call(name, arguments)
    size = len(json.dumps(result).encode())
    assert size < ONE_MIB
    fault = fields_at_fault(served.schemas[name], arguments)
    text = text_of(result)
    # Values are quoted sanitised: no raw control characters reach the client's text.
    assert not CONTROL.search(text), text[:500]
    if fault:
        assert result.get("isError") is True, (arguments, text)
        assert any(_named(field, text) for field in fault), (fault, text)
    if result.get("isError"):
        assert size < ERROR_BOUND, (size, text_of(result)[:500])
        assert served.emulator.stats.predictions_created == created, "billed for a refusal"
    return result


# -- properties over the schemas -------------------------------------------------------------


@st.composite
def broken(draw: st.DrawFn, schema: dict[str, Any], base: st.SearchStrategy[Any]) -> Any:
    """Valid arguments with one thing made wrong."""
    arguments: dict[str, Any] = dict(draw(base))
    properties = schema.get("properties", {})
    how = draw(st.sampled_from(["wrong", "unknown", "unknown-null", "missing"]))
    if how == "wrong" and properties:
        field = draw(st.sampled_from(sorted(properties)))
        arguments[field] = draw(wrong_value(properties[field]))
    elif how == "missing" and schema.get("required"):
        arguments.pop(draw(st.sampled_from(schema["required"])), None)
    else:
        unknown = draw(SAFE_TEXT.filter(lambda s: s not in properties))
        arguments[unknown] = None if how == "unknown-null" else draw(SAFE_TEXT)
    return arguments


@pytest.mark.parametrize("tool", ["generate_image", "edit_image", "get_prediction"])
def test_fuzzed_invalid_arguments_are_refused_naming_the_field(
    served: Served, before: dict[str, float], tool: str
) -> None:
    schema = served.schemas[tool]
    base = arguments_strategy(schema, {"input_image": st.just(str(served.photo))})

    @FUZZ
    @given(arguments=broken(schema, base))
    def run(arguments: dict[str, Any]) -> None:
        check(served, tool, arguments)

    run()


def test_fuzzed_valid_arguments_get_an_answer(served: Served, before: dict[str, float]) -> None:
    images = st.sampled_from(
        [
            str(served.photo),
            "data:image/png;base64," + base64.b64encode(served.photo.read_bytes()).decode(),
        ]
    )
    overrides = {"prompt": SAFE_TEXT, "input_image": images, "image_prompt": images}
    calls = st.one_of(
        [
            st.tuples(st.just(name), arguments_strategy(served.schemas[name], overrides))
            for name in ("generate_image", "edit_image", "list_models")
        ]
    )

    made: list[str] = []

    @settings(FUZZ, max_examples=12)
    @given(call=calls)
    def run(call: tuple[str, dict[str, Any]]) -> None:
        name, arguments = call
        result = check(served, name, arguments)
        if not result.get("isError") and name != "list_models":
            for path in result["structuredContent"].get("files", []):
                assert Path(path).parent == served.output
                made.append(path)

    run()
    assert made, "no fuzzed call made an image: the strategy is too narrow"


# -- the hostile values of the fuzz issue, as fixed cases -----------------------------------


def hostile_cases(served: Served) -> dict[str, tuple[str, dict[str, Any], str]]:
    """name -> (tool, arguments, the field the refusal must name)."""
    cases: dict[str, tuple[str, dict[str, Any], str]] = {}
    images = {
        **hostile_paths(served.root, served.sentinel),
        **BAD_DATA_URIS,
        **BAD_URLS,
        "symlink-out": str(served.allowed / "link-out.png"),
        "data-10mb": "data:image/png;base64," + "A" * 10_000_000,
        "string-1mb": "x" * 1_000_000,
    }
    for label, value in images.items():
        cases[f"edit-{label}"] = ("edit_image", {"prompt": "make it red", "input_image": value},
                                  "input_image")  # fmt: skip
    cases["prompt-10mb"] = ("generate_image", {"prompt": "a cat " * 1_700_000}, "prompt")
    cases["prompt-nul"] = ("generate_image", {"prompt": "a cat\x00"}, "prompt")
    cases["unknown-null"] = ("generate_image", {"prompt": "a cat", "0": None}, "0")
    cases["seed-5000-digits"] = ("generate_image", {"prompt": "a cat", "seed": 10**4000}, "seed")
    cases["id-traversal"] = ("get_prediction", {"prediction_id": "../../etc/passwd"},
                             "prediction_id")  # fmt: skip
    return cases


HOSTILE = [
    *(f"edit-{k}" for k in ["traversal", "traversal-long", "absolute-outside", "proc", "proc-fd"]),
    *(f"edit-{k}" for k in ["dev", "fifo", "file-uri", "nul-byte", "tilde-user", "too-long-name"]),
    *(f"edit-{k}" for k in [*BAD_DATA_URIS, *BAD_URLS, "symlink-out", "data-10mb", "string-1mb"]),
    "prompt-10mb",
    "prompt-nul",
    "unknown-null",
    "seed-5000-digits",
    "id-traversal",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_value_is_refused_naming_the_field(
    served: Served, before: dict[str, float], case: str
) -> None:
    tool, arguments, field = hostile_cases(served)[case]
    created = served.emulator.stats.predictions_created
    result = served.call(tool, arguments)
    text = text_of(result)
    assert result.get("isError") is True, text
    assert field in text, text[:500]
    assert len(json.dumps(result).encode()) < ERROR_BOUND, text[:500]
    assert "Internal error" not in text, text[:500]
    assert served.emulator.stats.predictions_created == created


# -- messages the SDK cannot parse --------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def _call(request_id: int, arguments_json: str) -> str:
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
        f'"params":{{"name":"generate_image","arguments":{arguments_json}}}}}'
    )


UNREADABLE = {
    "nested-200": (_call(11, json.dumps({"prompt": "x", "deep": _nested(200)})), "200"),
    "integer-5000-digits": (_call(12, '{"prompt": "x", "seed": ' + "7" * 5000 + "}"), "4300"),
    "lone-surrogate": (_call(13, '{"prompt": "\\ud800"}'), "surrogate"),
}


@pytest.mark.parametrize(
    ("arguments", "limit"),
    [
        pytest.param({"prompt": "x", "deep": _nested(200)}, "200", id="nested-200"),
        pytest.param({"prompt": "x", "seed": 10**4999}, "4300", id="integer-5000-digits"),
    ],
)
def test_a_client_sending_what_the_sdk_cannot_parse_gets_an_error_at_once(
    served: Served, before: dict[str, float], arguments: dict[str, Any], limit: str
) -> None:
    # The SDK's client sends these; the server's parser refuses them. The caller gets an error
    # naming the limit at once, not its own timeout. (A lone surrogate cannot be sent this way:
    # the Python client itself fails to encode it; the raw test below sends one.)
    with pytest.raises(Exception) as refused:
        served.call("generate_image", arguments)
    assert "Parse error" in str(refused.value) and limit in str(refused.value)
    assert not isinstance(refused.value, TimeoutError)


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_message_over_stdio_gets_an_error_naming_the_limit(
    tmp_path: Path, emulator: Emulator, case: str
) -> None:
    line, limit = UNREADABLE[case]
    request_id = json.loads(line.replace("7" * 5000, "7").replace("\\ud800", "?"))["id"]
    env = server_env(emulator.base_url, tmp_path / "out")
    with server_process([], env, tmp_path, stdio=True) as server:
        server.initialize()
        assert server.proc.stdin is not None
        server.proc.stdin.write(line.encode() + b"\n")
        server.proc.stdin.write(b'{"jsonrpc":"2.0","id":14,"method":\n')  # not even JSON
        server.proc.stdin.flush()
        reply = json.loads(server.receive(request_id, timeout=CALL_BOUND))
        broken_json = json.loads(server.receive(None, timeout=CALL_BOUND))  # type: ignore[arg-type]
        server.send({"jsonrpc": "2.0", "id": 99, "method": "tools/list"})
        alive = json.loads(server.receive(99, timeout=CALL_BOUND))
    assert reply["error"]["code"] == -32700
    assert limit in reply["error"]["message"]
    assert broken_json["error"]["code"] == -32700 and "JSON" in broken_json["error"]["message"]
    assert len(alive["result"]["tools"]) >= 5
    assert emulator.stats.creates == 0


def _first_post(
    http: httpx2.Client, url: str, headers: dict[str, str], body: dict[str, Any]
) -> httpx2.Response:
    # The server logs its address a moment before it listens (reported): retry the connect.
    for _ in range(50):
        try:
            return http.post(url, headers=headers, json=body)
        except httpx2.ConnectError:
            time.sleep(0.1)
    return http.post(url, headers=headers, json=body)


def test_a_message_that_is_not_json_rpc_over_stdio_gets_invalid_request(
    tmp_path: Path, emulator: Emulator
) -> None:
    env = server_env(emulator.base_url, tmp_path / "out")
    with server_process([], env, tmp_path, stdio=True) as server:
        server.initialize()
        server.send({"jsonrpc": "2.0", "id": 21, "method": 42})
        server.send({"jsonrpc": "1.0", "id": "x-22", "method": "tools/list"})
        first = json.loads(server.receive(21, timeout=CALL_BOUND))
        second = json.loads(server.receive("x-22", timeout=CALL_BOUND))  # type: ignore[arg-type]
    for reply in (first, second):
        assert reply["error"]["code"] == -32600
        assert "JSON-RPC 2.0" in reply["error"]["message"]


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_message_over_http_gets_an_error(
    tmp_path: Path, emulator: Emulator, case: str
) -> None:
    line, _ = UNREADABLE[case]
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    env = server_env(emulator.base_url, tmp_path / "out")
    with http_server(env, tmp_path) as server, httpx2.Client(timeout=CALL_BOUND) as http:
        url = listening_url(server)
        opened = _first_post(http, url, headers, initialize)
        session = {"mcp-session-id": opened.headers["mcp-session-id"]}
        reply = http.post(url, headers={**headers, **session}, content=line.encode())
        again = http.post(
            url,
            headers={**headers, **session},
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        )
    # The SDK answers by itself over HTTP: 400 with a JSON-RPC parse error (2.x), or a tool
    # error / 500 (1.x, whose JSON parser is Python's: no depth or surrogate limit there).
    assert reply.status_code in (200, 400, 500), reply.text
    assert '"error"' in reply.text or '"isError":true' in reply.text, reply.text[:500]
    assert again.status_code == 200 and "generate_image" in again.text
    assert emulator.stats.creates == 0
