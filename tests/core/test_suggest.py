"""The nearest known name to a typo: one definition for flags, tool arguments and columns."""

from __future__ import annotations

import pytest

from flux_tools._base.suggest import closest, did_you_mean
from flux_tools.kit import ArgumentParser

FIELDS = ["prompt", "aspect_ratio", "steps", "guidance", "seed", "output_format"]


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        ("stpes", "steps"),
        ("Seed", "seed"),
        ("aspect-ratio", "aspect_ratio"),
        ("guidence", "guidance"),
        ("output_fromat", "output_format"),
        ("colour", None),
        ("x", None),
    ],
)
def test_closest(typo: str, expected: str | None) -> None:
    assert closest(typo, FIELDS) == expected


def test_flags_are_compared_without_their_dashes() -> None:
    flags = ["--steps", "--seed", "--aspect-ratio", "--output-format"]
    assert closest("--stpes", flags) == "--steps"
    assert closest("--aspect_ratio", flags) == "--aspect-ratio"
    # flux-kontext-pro has no steps: its seed is not what was meant.
    assert closest("--steps", ["--seed", "--output-format"]) is None
    assert closest("steps", ["prompt", "seed", "aspect_ratio"]) is None


def test_did_you_mean_quotes_fields_and_not_flags() -> None:
    assert did_you_mean("stpes", FIELDS) == "did you mean 'steps'?"
    assert did_you_mean("--stpes", ["--steps"], quote=False) == "did you mean --steps?"
    assert did_you_mean("zzz", FIELDS) == ""


def test_the_parser_names_the_flag_of_the_chosen_subcommand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = ArgumentParser(prog="tool")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("generate").add_argument("--steps", type=int)
    commands.add_parser("resume").add_argument("--json", action="store_true")
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["generate", "--stpes", "3"])
    assert exited.value.code == 2
    assert "tool generate: error: unrecognized argument --stpes: did you mean --steps?" in (
        capsys.readouterr().err
    )
    # --steps is not a flag of resume: nothing is suggested there.
    with pytest.raises(SystemExit):
        parser.parse_args(["resume", "--stpes", "3"])
    err = capsys.readouterr().err
    assert "unrecognized argument --stpes (all flags: tool resume --help)" in err
    assert parser.parse_args(["generate", "--steps", "3"]).steps == 3
