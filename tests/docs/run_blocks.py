"""Runs the documentation's code in one process: ``python run_blocks.py JOBS.json RESULTS.json``.

Each job runs in a folder of its own (given, already holding the inputs the docs name), one after
the other: a Python block (``exec``, top-level ``await`` run on an event loop), a Python block
that is a test module (pytest), or a ``flux-tools`` command (its ``main``, in this process). The
environment points at the emulator the test started. Results: one ``{"ok", "output"}`` per job.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def run_python(code: str, where: str, line: int) -> None:
    # Blank lines before the code: a traceback names the docs page's own line numbers.
    source = "\n" * line + code
    compiled = compile(source, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    if compiled.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(compiled, namespace))
    else:
        exec(compiled, namespace)


def run_pytest(code: str, folder: Path) -> None:
    import pytest

    module = folder / "test_docs_block.py"
    module.write_text(code, encoding="utf-8")
    args = [str(module), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    code_ = pytest.main(args)
    if code_ != 0:
        raise AssertionError(f"pytest exited {code_}")


def run_cli(argv: list[str]) -> None:
    from flux_tools.cli import main

    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    if status != 0:
        raise AssertionError(f"flux-tools {' '.join(argv)} exited {status}")


def run(job: dict[str, Any]) -> dict[str, Any]:
    folder = Path(job["folder"])
    saved_env = dict(os.environ)
    os.environ.update(job.get("env", {}))
    output = io.StringIO()
    ok = True
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            if job["kind"] == "python":
                run_python(job["code"], job["where"], job["line"])
            elif job["kind"] == "pytest":
                run_pytest(job["code"], folder)
            else:
                run_cli(job["argv"])
    except BaseException:  # a block's failure is a result, whatever it is
        ok = False
        output.write(traceback.format_exc())
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return {"where": job["where"], "ok": ok, "output": output.getvalue()[-6000:]}


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    results = [run(job) for job in jobs]
    Path(sys.argv[2]).write_text(json.dumps(results), encoding="utf-8")


if __name__ == "__main__":
    main()
