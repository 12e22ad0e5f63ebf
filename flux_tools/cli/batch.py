"""``flux-tools batch``: the command over :func:`flux_tools.agenerate_many`, with a progress bar."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from flux_tools import (
    AsyncFluxClient,
    BatchReport,
    BatchStatus,
    FluxError,
    FluxInputError,
    agenerate_many,
)
from flux_tools.kit import (
    DEFAULT_CONCURRENCY,
    LEDGER_NAME,
    REPORT_NAME,
    aload_rows,
    check_writable,
    error_text,
    safe_text,
)


class ProgressBar:
    """A bar redrawn in place on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO, *, every: float = 5.0, width: int = 28) -> None:
        self._stream, self._every, self._width = stream, every, width
        self._tty = stream.isatty()
        self._last = -math.inf
        self._last_line = ""

    def __call__(self, status: BatchStatus) -> None:
        now = time.monotonic()
        if self._tty:
            if now - self._last < 0.1 and status.finished < status.total:
                return
            fraction = status.finished / status.total if status.total else 1.0
            filled = int(fraction * self._width)
            bar = "█" * filled + "░" * (self._width - filled)
            eta = ""
            fresh = status.finished - status.skipped
            if fresh > 0 and status.finished < status.total:
                rate = fresh / max(1e-6, now - status.started)
                eta = f"  ETA {_duration((status.total - status.finished) / rate)}"
            self._stream.write(f"\r\033[K{bar} {status.line()}{eta}")
            self._stream.flush()
            self._last = now
            return
        line = status.line()
        if line != self._last_line and (
            now - self._last >= self._every or status.finished == status.total
        ):
            print(f"batch: {line}", file=self._stream, flush=True)
            self._last, self._last_line = now, line

    def done(self) -> None:
        if self._tty:
            self._stream.write("\r\033[K")
            self._stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# -- the command ---------------------------------------------------------------------------------


def add_batch_parser(commands: Any, model: str) -> Any:
    """The ``batch`` subcommand's arguments (the CLI adds it; it runs :func:`run_batch_command`)."""
    batch = commands.add_parser(
        "batch",
        help="generate one image per row of a JSONL or CSV file, resumably",
        description="Generate one image (set) per row of FILE (JSON lines or CSV with a header; "
        "any of the model's input fields as columns, and optionally model, and name: the "
        "row's file name) into DIR. The ledger DIR/"
        f"{LEDGER_NAME} records every step: run the same command again after a crash or "
        "Ctrl-C and it resumes, never paying twice for a row. Each run writes "
        f"DIR/{REPORT_NAME}.csv: every row's name, files, prediction, cost, status and error.",
    )
    batch.add_argument("file", metavar="FILE", help="rows: .jsonl (one JSON object a line) or .csv")
    batch.add_argument("--out", required=True, metavar="DIR", help="where images and ledger go")
    batch.add_argument("--model", default=model, help="model of rows without one (%(default)s)")
    batch.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="generations in flight at most (default: %(default)s); the account's rate limits "
        "hold whatever the number",
    )
    batch.add_argument(
        "--budget", type=float, default=None, metavar="USD", help="most the whole batch may cost"
    )
    batch.add_argument("--timeout", type=float, default=300.0, help="seconds per generation")
    batch.add_argument(
        "--name",
        metavar="TEMPLATE",
        default=None,
        help="name each row's files from its fields, e.g. '{sku}-{seed}' (columns only the "
        "template uses are not sent); default: the row's name column, else the prediction id",
    )
    batch.add_argument("--dry-run", action="store_true", help="check the rows, print the cost")
    batch.add_argument("--json", action="store_true", help="print the report as JSON")
    batch.add_argument(
        "--recreate-unresolved",
        action="store_true",
        help="send again a create whose answer never came when the account's predictions "
        "cannot be listed (it may be paid twice)",
    )
    batch.set_defaults(handler=run_batch_command)
    return batch


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def run_batch_command(args: Any, _fields: Sequence[str] = ()) -> int:
    """``flux-tools batch``: exit 0 all rows done, 1 some failed, 2 bad input, 130 Ctrl-C."""
    out, source_dir = _resolved(args.out), _resolved(args.file).parent
    bar = ProgressBar(sys.stderr)
    result: dict[str, BatchReport] = {}
    last: dict[str, BatchStatus] = {}

    def progress(status: BatchStatus) -> None:
        last["status"] = status
        bar(status)

    async def main() -> None:
        if args.budget is not None and args.budget < 0:
            raise FluxInputError("--budget must be an amount in USD >= 0")
        async with AsyncFluxClient(sync_wait=0, timeout=args.timeout) as client:
            prepared = await aload_rows(
                client, args.file, model=args.model, name_template=args.name
            )
            unchecked = sorted({r.model for r in prepared if client.input_model(r.model) is None})
            for model in unchecked:
                print(
                    f"batch: rows of {safe_text(model, 200)} are not checked here: the API "
                    "publishes no schema flux-tools can use for it (the API checks each create)",
                    file=sys.stderr,
                )
            estimates = [client.estimate(r.input, model=r.model) for r in prepared]
            known = sum(e for e in estimates if e is not None)
            unknown = sum(e is None for e in estimates)
            priced = f" ({unknown} rows of unknown price)" if unknown else ""
            if args.dry_run:
                valid = "are valid" if not unchecked else "were read"
                print(f"{len(prepared)} rows {valid}; estimated cost ${known:.2f}{priced}")
                return
            # Nothing is paid for that could not be saved: the folder must take files.
            check_writable(out)
            print(
                f"batch: {len(prepared)} rows, estimated ${known:.2f} in all{priced}; "
                f"ledger {out / LEDGER_NAME}",
                file=sys.stderr,
            )
            result["batch"] = await agenerate_many(
                client,
                prepared,
                out,
                concurrency=args.concurrency,
                timeout=args.timeout,
                budget=args.budget,
                image_dirs=[source_dir],
                on_progress=progress,
                recreate_unresolved=args.recreate_unresolved,
            )

    try:
        anyio.run(main)
    except FluxInputError as exc:  # rows named by number, fields by name: not as flags
        print(f"flux-tools batch: error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.done()
        status = last.get("status")
        line = status.line() if status else "nothing finished"
        print(
            f"interrupted: {line}. Running predictions were canceled upstream; the ledger is "
            "consistent: run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    except FluxError as exc:  # the ledger or the folder cannot be written: one line, no trace
        bar.done()
        print(f"flux-tools batch: {error_text(exc, tool='flux-tools batch')}", file=sys.stderr)
        return 1
    except OSError as exc:
        bar.done()
        print(f"flux-tools batch: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        bar.done()
    if args.dry_run:
        return 0
    report = result["batch"]
    if args.json:
        print(json.dumps(report.summary(), indent=2))
    else:
        for outcome in sorted(report.rows, key=lambda o: o.row):
            if outcome.status in ("failed", "refused", "unresolved"):
                print(f"row {outcome.row}: {outcome.status}: {outcome.error}", file=sys.stderr)
        for pid in report.unmatched:
            print(
                f"prediction {safe_text(pid, 100)}: read in a damaged line of the ledger, and "
                "matches no row: it may be billed; look it up",
                file=sys.stderr,
            )
        status = report.status
        print(
            f"batch: {status.line()}; {status.created} predictions created by this run"
            + (f", {status.skipped} rows already done" if status.skipped else "")
            + (f", {status.recovered} recovered" if status.recovered else "")
            + f"; report {out / (REPORT_NAME + '.csv')}",
            file=sys.stderr,
        )
    return 0 if report.ok else 1


__all__ = ["ProgressBar", "add_batch_parser", "run_batch_command"]
