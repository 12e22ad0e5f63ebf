"""The ``flux-tools`` command: generate from a terminal, run the emulator, run the offline demo.

Flags of ``generate`` are derived from the model's input schema (the same pydantic model the
client validates with), so a field added there is a flag here with its help, choices and range.
Exit status: 0 done, 1 the API or the prediction failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ._exceptions import FluxError, FluxInputError
from ._prediction import Prediction
from ._registry import known_model

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
_JSON_TYPES: dict[str, type] = {"integer": int, "number": float, "string": str}
#: Short spellings people type, beside the derived ``--output-format`` style flags.
_ALIASES = {"output_format": ["--format"]}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _schema_of(model: str) -> dict[str, Any]:
    return known_model(model).input_model.model_json_schema()


def _describe(prop: dict[str, Any]) -> str:
    """Help text from a JSON-schema property: description, range, default."""
    options = [prop, *prop.get("anyOf", [])]
    text = str(prop.get("description", ""))
    low = next((o["minimum"] for o in options if "minimum" in o), None)
    high = next((o["maximum"] for o in options if "maximum" in o), None)
    if low is not None and high is not None:
        text += f" [{low}-{high}]"
    if prop.get("default") is not None:
        text += f" (default: {prop['default']})"
    return text.replace("%", "%%")


def add_input_flags(
    parser: argparse.ArgumentParser,
    schema: dict[str, Any],
    skip: frozenset[str] | set[str] = frozenset({"prompt"}),
) -> list[str]:
    """One flag per input field (but those in ``skip``); returns the field names added."""
    fields = []
    for name, prop in schema.get("properties", {}).items():
        if name in skip:
            continue
        options = [prop, *prop.get("anyOf", [])]
        kinds = {o.get("type") for o in options} - {"null", None}
        enum = next((o["enum"] for o in options if "enum" in o), None)
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": _describe(prop)}
        if kinds == {"boolean"}:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif enum is not None:
            kwargs["choices"] = enum
            kwargs["metavar"] = "{" + ",".join(map(str, enum)) + "}"
        else:
            kind = next((k for k in ("integer", "number", "string") if k in kinds), "string")
            kwargs["type"] = _JSON_TYPES[kind]
        parser.add_argument(_flag(name), *_ALIASES.get(name, []), **kwargs)
        fields.append(name)
    return fields


class Progress:
    """Live status on stderr: a spinner on a terminal, one plain line per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._spinner = itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
        self._started = time.monotonic()
        self._last: str | None = None
        self.prediction_id: str | None = None

    def __call__(self, prediction: Prediction) -> None:
        self.prediction_id = prediction.id
        elapsed = time.monotonic() - self._started
        if self._tty:
            line = f"\r{next(self._spinner)} {prediction.status} {elapsed:5.1f}s  {prediction.id}"
            self._stream.write(line)
            self._stream.flush()
        elif prediction.status != self._last:
            print(f"{prediction.status} after {elapsed:.1f}s ({prediction.id})", file=self._stream)
        self._last = prediction.status

    def done(self) -> None:
        if self._tty and self._last is not None:
            self._stream.write("\r\033[K")
            self._stream.flush()


def _run(args: argparse.Namespace, fields: list[str]) -> int:
    """``generate`` and ``edit``: one client call, progress, save, print."""
    from ._client import FluxClient

    values = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    progress = Progress(sys.stderr)
    editing = args.command == "edit"
    # The image named on the command line is the user's choice: its folder may be read.
    image_dirs = [Path(args.image).expanduser().resolve().parent] if editing else []
    # No Prefer: wait here: a person at a terminal wants progress, and a prediction whose id we
    # know can be canceled on Ctrl-C.
    with FluxClient(sync_wait=0, timeout=args.timeout, image_dirs=image_dirs) as client:
        try:
            if editing:
                result = client.edit(
                    args.image, args.prompt, model=args.model, on_progress=progress, **values
                )
            else:
                result = client.generate(
                    model=args.model, prompt=args.prompt, on_progress=progress, **values
                )
            if not args.no_save:
                result.save(Path(args.out).expanduser().resolve())
        except KeyboardInterrupt:
            progress.done()
            pid = progress.prediction_id
            print(
                f"interrupted: prediction {pid} was canceled upstream"
                if pid
                else "interrupted before the prediction was created",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        finally:
            progress.done()
    if args.json:
        print(json.dumps(result.summary(), indent=2))
        return 0
    for url in result.urls:
        print(url)
    for path in result.files:
        print(path)
    seed = f", seed {result.seed}" if result.seed is not None else ""
    print(f"{result.model}{seed}; URLs expire after about an hour", file=sys.stderr)
    return 0


def _usage_error(error: FluxInputError) -> str:
    """The input error in the CLI's words: fields are flags."""
    if not error.errors:
        return str(error)
    lines = []
    for e in error.errors:
        flag = "PROMPT" if e["field"] == "prompt" else _flag(str(e["field"]))
        allowed = f" (allowed: {e['allowed']})" if e.get("allowed") else ""
        lines.append(f"{flag}: {e['problem']}{allowed}")
    return "\n".join(lines)


def _add_run_options(command: argparse.ArgumentParser, model: str) -> None:
    command.add_argument(
        "--model", default=model, help="owner/name of the model (default: %(default)s)"
    )
    command.add_argument("--out", default=".", metavar="DIR", help="where to save (default: .)")
    command.add_argument("--no-save", action="store_true", help="print the URLs only")
    command.add_argument("--json", action="store_true", help="print the whole result as JSON")
    command.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up")


def build_parser(command: str, model: str) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser, with the flags of ``model``'s input for the ``command`` being run."""
    parser = argparse.ArgumentParser(
        prog="flux-tools",
        description="FLUX image generation from the command line. Needs FLUX_API_TOKEN or "
        "REPLICATE_API_TOKEN (and FLUX_BASE_URL for a Replicate-compatible gateway).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fields: list[str] = []

    gen = commands.add_parser(
        "generate",
        help="generate an image and save it",
        description="Generate an image, show progress on stderr, print the URLs and saved paths.",
    )
    gen.add_argument("prompt", help="what the image should show")
    _add_run_options(gen, model)
    if command == "generate":
        fields = add_input_flags(gen, _schema_of(model))

    edit = commands.add_parser(
        "edit",
        help="edit an image as an instruction says",
        description="Edit IMAGE (a file, an http(s) URL, or an earlier prediction id) as PROMPT "
        "says, e.g. flux-tools edit car.png 'make the car gold'.",
    )
    edit.add_argument("image", help="the image: a file, an http(s) URL or a prediction id")
    edit.add_argument("prompt", help="the edit to make, as an instruction")
    _add_run_options(edit, model)
    if command == "edit":
        spec = known_model(model)
        skip = {"prompt", spec.edit_field or ""}
        fields = add_input_flags(edit, spec.input_model.model_json_schema(), skip=skip)

    commands.add_parser("emulator", help="run the offline emulator of the API", add_help=False)
    demo = commands.add_parser("demo", help="the offline end-to-end demo (no key, no network)")
    demo.add_argument("--out", default="flux-images", metavar="DIR")
    for sub in (gen, edit):
        sub.set_defaults(handler=_run)
    return parser, fields


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:  # its own parser: every emulator option, one definition
        from .emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:], prog="flux-tools emulator")
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main

        return demo_main(argv[1:])

    # The flags depend on the model: find it first, then build the parser for its schema.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=None)
    known, _ = pre.parse_known_args(argv)
    command = argv[0] if argv else ""
    try:
        from ._client import resolve_edit_model, resolve_model

        resolve = resolve_edit_model if command == "edit" else resolve_model
        parser, fields = build_parser(command, resolve(known.model))
    except (FluxInputError, ValueError) as exc:
        print(f"flux-tools: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args, fields)
        return code
    except FluxInputError as exc:
        parser.exit(EXIT_USAGE, f"flux-tools {command}: error:\n{_usage_error(exc)}\n")
    except FluxError as exc:
        print(f"flux-tools: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
