"""Fuzzed and hostile command lines, run in-process (``flux_tools.cli.main``) against the emulator.

Flags and values come from the model's own input schema (the one the CLI derives its flags
from): valid values, and one flag made wrong. Properties: every run ends within a bound with
exit 0, 1 or 2 and no traceback; exit 2 (bad input) names the flag and creates nothing upstream;
output files only in ``--out``; nothing printed carries raw control characters. The hostile
values of the fuzz issue are fixed cases.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flux_tools import FluxProInput
from flux_tools.cli import main
from flux_tools.emulator import Emulator

from ..fuzz_schemas import BAD_DATA_URIS, BAD_URLS, hostile_paths, value_strategy, wrong_value

#: A bound on one run: refusals are immediate, generations take well under a second here.
RUN_BOUND = 30
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    # Reproducible in CI (CI=true): the same examples on every run; random elsewhere.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SCHEMA = FluxProInput.model_json_schema()
FLAGGED = {
    name: prop
    for name, prop in SCHEMA["properties"].items()
    # image_prompt takes a file or URL: the hostile cases below cover it.
    if name not in ("prompt", "image_prompt")
}


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class World:
    emulator: Emulator
    root: Path
    out: Path
    sentinel: Path

    def run(self, *argv: str) -> Run:
        """``main(argv)`` in a daemon thread, bounded: a hang fails the test, not the run."""
        out, err = io.StringIO(), io.StringIO()
        outcome: list[Any] = []

        def target() -> None:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    outcome.append(main(list(argv)))
                except SystemExit as exit_:  # argparse's usage errors
                    outcome.append(exit_.code)
                except BaseException as exc:
                    outcome.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(RUN_BOUND)
        assert not thread.is_alive(), f"no answer within {RUN_BOUND} s: {argv!r:.300}"
        [result] = outcome
        assert isinstance(result, int), f"{type(result).__name__}: {result}"
        return Run(result, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("cli-fuzz")
    out, outside = root / "out", root / "outside"
    out.mkdir()
    outside.mkdir()
    sentinel = outside / "sentinel.png"
    Image.new("RGB", (40, 30), (250, 0, 250)).save(sentinel)
    emulator = Emulator(latency=0.05, queue_time=0.01).start()
    with pytest.MonkeyPatch.context() as env:
        for name in ("REPLICATE_API_TOKEN", "REPLICATE_BASE_URL", "FLUX_IMAGE_DIRS"):
            env.delenv(name, raising=False)
        env.setenv("FLUX_BASE_URL", emulator.base_url)
        env.setenv("FLUX_API_TOKEN", "cli-fuzz-token")
        env.setenv("FLUX_MODEL", "flux-pro")
        try:
            yield World(emulator, root, out, sentinel)
        finally:
            emulator.stop()


def check(world: World, run: Run, created_before: int, flag: str | None = None) -> None:
    assert run.code in (0, 1, 2), run
    assert "Traceback" not in run.err, run.err[-2000:]
    assert not CONTROL.search(run.out + run.err), (run.out + run.err)[:500]
    if run.code == 2:
        assert world.emulator.stats.predictions_created == created_before, "billed for a refusal"
        if flag is not None:
            named = {flag.lower(), flag.lstrip("-").replace("-", "_").lower()}
            assert any(n in run.err.lower() for n in named), run.err
        assert len(run.err) < 8_000, run.err[:500]
    outside = [p for p in world.root.rglob("*") if p.is_file() and world.out not in p.parents]
    assert {p.name for p in outside} <= {"sentinel.png"}, outside


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argv(name: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [_flag(name) if value else "--no-" + _flag(name)[2:]]
    return [_flag(name), str(value)]


@st.composite
def valid_argv(draw: st.DrawFn) -> list[str]:
    names = draw(st.lists(st.sampled_from(sorted(FLAGGED)), unique=True, max_size=4))
    argv: list[str] = []
    for name in names:
        argv += _argv(name, draw(value_strategy(FLAGGED[name])))
    return argv


@st.composite
def broken_argv(draw: st.DrawFn) -> tuple[str, list[str]]:
    name = draw(st.sampled_from(sorted(n for n, p in FLAGGED.items() if not _is_boolean(p))))
    value = draw(wrong_value(FLAGGED[name]).filter(lambda v: not isinstance(v, (list, dict))))
    return _flag(name), [*draw(valid_argv()), _flag(name), str(value)]


def _is_boolean(prop: dict[str, Any]) -> bool:
    return "boolean" in {o.get("type") for o in [prop, *prop.get("anyOf", [])]}


def test_fuzzed_valid_flags_generate_or_fail_cleanly(world: World) -> None:
    codes: list[int] = []

    @settings(FUZZ, max_examples=12)
    @given(argv=valid_argv())
    def run(argv: list[str]) -> None:
        before = world.emulator.stats.predictions_created
        done = world.run("generate", "a small red boat", *argv, "--out", str(world.out))
        check(world, done, before)
        codes.append(done.code)

    run()
    assert 0 in codes, "no fuzzed command line made an image: the strategy is too narrow"


def test_fuzzed_wrong_flags_are_refused_naming_the_flag(world: World) -> None:
    @FUZZ
    @given(case=broken_argv())
    def run(case: tuple[str, list[str]]) -> None:
        flag, argv = case
        before = world.emulator.stats.predictions_created
        done = world.run("generate", "a small red boat", *argv, "--out", str(world.out))
        check(world, done, before, flag)
        assert done.code == 2, (argv, done)

    run()


def hostile_images(world: World) -> dict[str, str]:
    return {
        **hostile_paths(world.root, world.sentinel),
        **BAD_DATA_URIS,
        **BAD_URLS,
        "data-10mb": "data:image/png;base64," + "A" * 10_000_000,
    }


HOSTILE_IMAGES = [
    "traversal-long",
    "proc",
    "dev",
    "fifo",
    "file-uri",
    "nul-byte",
    "tilde-user",
    "too-long-name",
    *BAD_DATA_URIS,
    *BAD_URLS,
    "data-10mb",
]


@pytest.mark.parametrize("case", HOSTILE_IMAGES)
def test_a_hostile_image_is_refused_before_anything_is_sent(world: World, case: str) -> None:
    value = hostile_images(world)[case]
    before = world.emulator.stats.predictions_created
    done = world.run("edit", value, "make it red", "--out", str(world.out))
    check(world, done, before)
    assert done.code in (1, 2), done
    assert world.emulator.stats.predictions_created == before, done.err[:500]


@pytest.mark.parametrize(
    ("case", "argv", "flag"),
    [
        ("prompt-10mb", ["generate", "a cat " * 1_700_000], "prompt"),
        ("prompt-nul", ["generate", "a cat\x00"], "prompt"),
        ("seed-5000-digits", ["generate", "a cat", "--seed", "9" * 5000], "seed"),
        ("steps-huge", ["generate", "a cat", "--steps", "1" + "0" * 40], "steps"),
    ],
)
def test_a_hostile_value_is_refused_naming_it(
    world: World, case: str, argv: list[str], flag: str
) -> None:
    before = world.emulator.stats.predictions_created
    done = world.run(*argv, "--out", str(world.out))
    check(world, done, before, flag)
    assert done.code == 2, done
