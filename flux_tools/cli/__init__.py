"""The ``flux-tools`` command: generate from a terminal, run the emulator, run the offline demo.

Flags of ``generate`` are derived from the model's input schema (the same pydantic model the
client validates with), so a field added there is a flag here with its help, choices and range.
A prediction is journaled in the output folder from the moment its id is known until its image
is saved (:class:`flux_tools.kit.Journal`): one the command did not live to save (killed, the
download failed) is saved by ``flux-tools resume``.
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

from flux_tools import (
    FluxAPIError,
    FluxClient,
    FluxError,
    FluxInputError,
    GenerationResult,
    Prediction,
    Settings,
)
from flux_tools.kit import (
    RETENTION_SECONDS,
    ArgumentParser,
    Journal,
    PendingPrediction,
    Progress,
    abbreviate,
    check_writable,
    error_text,
    known_model,
    safe_text,
)
from mcp_server import main as serve_mcp

from .batch import add_batch_parser

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
        elif "array" in kinds:  # reference images: the flag takes one or several
            kwargs["nargs"] = "+"
            kwargs["metavar"] = "IMAGE"
        elif enum is not None:
            kwargs["choices"] = enum
            kwargs["metavar"] = "{" + ",".join(map(str, enum)) + "}"
        else:
            kind = next((k for k in ("integer", "number", "string") if k in kinds), "string")
            kwargs["type"] = _JSON_TYPES[kind]
        parser.add_argument(_flag(name), *_ALIASES.get(name, []), **kwargs)
        fields.append(name)
    return fields


class TerminalProgress:
    """Live status on stderr: a spinner on a terminal, one plain line per change otherwise.

    The words are the core's (:class:`flux_tools.Progress`), gateway text made safe to print.
    """

    def __init__(self, stream: TextIO, model: str, journal: Journal | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._spinner = itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
        self._progress = Progress(model)
        self._model = model
        self._journal = journal
        self._shown = False

    @property
    def prediction_id(self) -> str | None:
        return self._progress.prediction_id

    def __call__(self, prediction: Prediction) -> None:
        if self._journal is not None and self._progress.prediction_id is None:
            # The create answered: from now on a kill must not lose what is billed.
            entry = PendingPrediction(prediction.id, self._model, time.time())
            self._journal.add(entry)
        update = self._progress.update(prediction)
        if self._tty:
            self._stream.write(f"\r\033[K{next(self._spinner)} {update.message}")
            self._stream.flush()
            self._shown = True
        elif update.changed:
            print(update.message, file=self._stream)

    def done(self) -> None:
        if self._tty and self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._shown = False


def _run(args: argparse.Namespace, fields: list[str]) -> int:
    """``generate`` and ``edit``: one client call, progress, save, print."""
    values = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    out = None if args.no_save else Path(args.out).expanduser().resolve()
    editing = args.command == "edit"
    images = _edit_images(args) if editing else []
    # The images named on the command line are the user's choice: their folders may be read.
    image_dirs = [folder for i in images if (folder := _folder_of(i)) is not None]
    # No Prefer: wait here: a person at a terminal wants progress, and a prediction whose id we
    # know can be canceled on Ctrl-C.
    settings = Settings.from_env(sync_wait=0, timeout=args.timeout, image_dirs=image_dirs)
    journal = None
    if out is not None:
        # Nothing is paid for that could not be saved, nor journaled until it is.
        check_writable(out)
        journal = Journal(out, api=settings.base_url)
        journal.check()
        _remind_pending(journal, out)
    progress = TerminalProgress(sys.stderr, args.model, journal)
    result: GenerationResult | None = None
    with FluxClient(settings=settings) as client:
        try:
            if editing:
                image: Any = images[0] if len(images) == 1 else images
                result = client.edit(
                    image, args.prompt, model=args.model, on_progress=progress, **values
                )
            else:
                result = client.generate(
                    model=args.model, prompt=args.prompt, on_progress=progress, **values
                )
            progress.done()
            if out is not None and journal is not None:
                client.save(result, out)
                journal.remove(result.prediction_id)
        except BaseException as exc:
            progress.done()
            if result is None and journal is not None:  # over (canceled, failed): nothing left
                journal.settle(progress.prediction_id, exc, owner=True)
            if isinstance(exc, KeyboardInterrupt):
                print(_interrupted(result, progress.prediction_id, out), file=sys.stderr)
                return EXIT_INTERRUPTED
            if result is not None and out is not None and isinstance(exc, Exception):
                # Not saved (a download refused or failed): the entry stays for `resume`.
                print(f"flux-tools: save it later: flux-tools resume --out {out}", file=sys.stderr)
            raise
        finally:
            progress.done()
    if args.json:
        print(json.dumps(result.summary(), indent=2))
        return 0
    for url in result.urls:
        print(safe_text(abbreviate(url), 4000))
    for path in result.files:
        print(safe_text(str(path), 4000))
    seed = f", seed {result.seed}" if result.seed is not None else ""
    print(f"{safe_text(result.model, 100)}{seed}; URLs expire after about an hour", file=sys.stderr)
    return 0


def _remind_pending(journal: Journal, out: Path) -> None:
    """An earlier run in this folder did not save its image: say how to get it."""
    try:
        pending = journal.entries()
    except OSError:
        return
    if pending:
        ids = ", ".join(safe_text(e.prediction_id, 100) for e in pending[:5])
        more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
        print(
            f"flux-tools: {len(pending)} earlier prediction(s) in {out} were not saved "
            f"({ids}{more}): flux-tools resume --out {out} saves them while the provider "
            "keeps them (about an hour)",
            file=sys.stderr,
        )


def _resume(args: argparse.Namespace, fields: list[str]) -> int:
    """``resume``: save the images of the predictions journaled in ``--out`` and not saved
    (the command was killed, or the download failed). Watched, never canceled."""
    out = Path(args.out).expanduser().resolve()
    settings = Settings.from_env(sync_wait=0, timeout=args.timeout)
    journal = Journal(out, api=settings.base_url)
    journal.check()
    live, expired = journal.take_up()
    for entry in expired:
        print(entry.expired_text(), file=sys.stderr)
    others = journal.others()
    if others:
        print(
            f"flux-tools: {len(others)} prediction(s) of another API are left for it "
            f"({', '.join(sorted({safe_text(e.api or '?', 200) for e in others}))})",
            file=sys.stderr,
        )
    if not live:
        print(f"flux-tools: nothing to resume in {out}", file=sys.stderr)
        return 0
    kept = 0
    summaries = []
    with FluxClient(settings=settings) as client:
        for entry in live:
            pid = safe_text(entry.prediction_id, 100)
            progress = TerminalProgress(sys.stderr, entry.model)
            try:
                outcome = client.follow(entry.prediction_id, on_progress=progress)
                progress.done()
                assert isinstance(outcome, GenerationResult), "no budget: follow waits to the end"
                client.save(outcome, out)
            except FluxError as exc:
                progress.done()
                dropped = journal.settle(entry.prediction_id, exc, owner=False)
                kept += not dropped
                state = "it is over, dropped" if dropped else _kept(exc, entry)
                text = error_text(exc, tool="flux-tools resume")
                print(f"prediction {pid}: {text} ({state})", file=sys.stderr)
                continue
            except KeyboardInterrupt:
                progress.done()
                print(
                    f"interrupted: prediction {pid} was not canceled; run flux-tools resume "
                    f"--out {out} again to save it",
                    file=sys.stderr,
                )
                return EXIT_INTERRUPTED
            journal.remove(entry.prediction_id)
            summaries.append(outcome.summary())
            for path in [] if args.json else outcome.files:
                print(safe_text(str(path), 4000))
    if args.json:
        print(json.dumps(summaries, indent=2))
    return EXIT_FAILED if kept else 0


def _kept(error: FluxError, entry: PendingPrediction) -> str:
    """Why an entry stays, and until when."""
    left = max(0, round((RETENTION_SECONDS - entry.age()) / 60))
    if isinstance(error, FluxAPIError) and error.status == 404:
        return (
            "kept: the API at FLUX_BASE_URL does not know it; if that is not the API that "
            f"created it, set FLUX_BASE_URL and run resume again (kept {left} more minutes)"
        )
    return f"kept for another try (for {left} more minutes)"


def _edit_images(args: argparse.Namespace) -> list[str]:
    image = getattr(args, "image", None)
    if isinstance(image, list):
        return [str(i) for i in image]
    return [str(image)] if image else []


def _folder_of(source: str) -> Path | None:
    """The folder of a path named on the command line (not of a URL, a data: URI or a bare
    prediction id). Odd ones (too long, a NUL byte, ``~nosuchuser``) give None: the core then
    refuses them, naming the image and what is wrong with it."""
    if len(source) > 4096 or source.startswith(("http://", "https://", "data:")):
        return None
    try:
        path = Path(source).expanduser()
        if "/" in source or "." in source or path.exists():
            return path.resolve().parent
    except (OSError, ValueError, RuntimeError):
        pass
    return None


def _interrupted(
    result: GenerationResult | None, prediction_id: str | None, out: Path | None
) -> str:
    """What Ctrl-C did: it cancels a running prediction; a finished one stays, with its URLs."""
    if result is not None:
        urls = ", ".join(safe_text(abbreviate(u), 2000) for u in result.urls)
        later = f"; flux-tools resume --out {out} saves it" if out is not None else ""
        return (
            f"interrupted while saving: prediction {safe_text(result.prediction_id, 100)} "
            f"succeeded; its image: {urls} (for about an hour){later}"
        )
    if prediction_id:
        return f"interrupted: prediction {prediction_id} was canceled upstream"
    return "interrupted before the prediction was created"


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


def build_parser(command: str, model: str) -> tuple[ArgumentParser, list[str]]:
    """The parser, with the flags of ``model``'s input for the ``command`` being run."""
    parser = ArgumentParser(
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
        help="edit an image, or compose from several, as an instruction says",
        description="Edit IMAGE (a file, an http(s) URL, or an earlier prediction id) as PROMPT "
        "says, e.g. flux-tools edit car.png 'make the car gold'. Models that take reference "
        "images (FLUX.2: --model flux-2-pro) take several, in the order the prompt names them: "
        "flux-tools edit --model flux-2-pro person.png room.png 'the person from image 1 in the "
        "room of image 2'.",
    )
    edit.add_argument(
        "image",
        nargs="+",
        metavar="IMAGE",
        help="the image(s): files, http(s) URLs or prediction ids (several for models that "
        "take reference images)",
    )
    edit.add_argument("prompt", metavar="PROMPT", help="the edit to make, as an instruction")
    _add_run_options(edit, model)
    if command == "edit":
        spec = known_model(model)
        skip = {"prompt", spec.edit_field or ""}
        fields = add_input_flags(edit, spec.input_model.model_json_schema(), skip=skip)
        most = spec.max_edit_images
        edit.epilog = (
            f"{spec.name} takes {'one image' if most == 1 else f'1 to {most} images'}."
            if most
            else None
        )

    resume = commands.add_parser(
        "resume",
        help="save the images of earlier runs that did not live to save them",
        description="Each prediction is journaled in the output folder until its image is "
        "saved. When flux-tools was killed, or the download failed, this watches those "
        "predictions (never canceling them) and saves their images, while the provider keeps "
        "them (about an hour).",
    )
    resume.add_argument("--out", default=".", metavar="DIR", help="the output folder (default: .)")
    resume.add_argument("--json", action="store_true", help="print the results as JSON")
    resume.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up")
    resume.set_defaults(handler=_resume)

    commands.add_parser("emulator", help="run the offline emulator of the API", add_help=False)
    commands.add_parser(
        "mcp", help="run the MCP server (the same as flux-tools-mcp)", add_help=False
    )
    demo = commands.add_parser("demo", help="the offline end-to-end demo (no key, no network)")
    demo.add_argument("--out", default="flux-images", metavar="DIR")
    for sub in (gen, edit):
        sub.set_defaults(handler=_run)
    add_batch_parser(commands, model)
    return parser, fields


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:  # its own parser: every emulator option, one definition
        from flux_tools.emulator.__main__ import main as emulator_main  # needs the emulator extra

        return emulator_main(argv[1:], prog="flux-tools emulator")
    if argv[:1] == ["mcp"]:  # the MCP server with its own parser; registry clients run this
        serve_mcp(argv[1:])
        return 0
    if argv[:1] == ["demo"]:
        from flux_tools.demo import main as demo_main  # needs the mcp and langchain extras

        return demo_main(argv[1:])

    # The flags depend on the model: find it first, then build the parser for its schema.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=None)
    known, _ = pre.parse_known_args(argv)
    command = argv[0] if argv else ""
    try:
        overrides = {"edit_model" if command == "edit" else "model": known.model}
        settings = Settings.from_env(**overrides)
        parser, fields = build_parser(
            command, settings.edit_model if command == "edit" else settings.model
        )
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
        text = error_text(exc, tool=f"flux-tools {command}")
        print(f"flux-tools: {type(exc).__name__}: {text}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
