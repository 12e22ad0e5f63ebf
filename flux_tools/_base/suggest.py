"""Did you mean: the nearest known name to a typo, for flags, tool arguments and batch columns.

One definition, used by :meth:`FluxInputError.from_validation_error` (so the client, the MCP
tools, the LangChain tools and the batch rows all suggest the same way) and by
:class:`ArgumentParser`, the parser of every command (``flux-tools`` and its subcommands,
``flux-mcp``, the emulator): ``unrecognized argument --stpes: did you mean --steps?``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from typing import NoReturn

#: How alike a typo and a known name must be (difflib's ratio): ``stpes``/``steps`` is 0.8,
#: ``16:8``/``16:9`` 0.75, ``steps``/``seed`` 0.67 (a model without steps must not be told to
#: set its seed); below this nothing is suggested rather than something unrelated.
CUTOFF = 0.75


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known name nearest to ``word``, or None when none is alike enough. Flags are
    compared without their dashes (``--`` would make every two flags look alike)."""
    import difflib  # only when a typo is being explained

    candidates = {_bare(k): k for k in known if k != word}
    # Case and - versus _ are the commonest slips: compare without them first.
    folded = {_fold(k): k for k in candidates.values()}
    if _fold(word) in folded:
        return folded[_fold(word)]
    found = difflib.get_close_matches(_bare(word), list(candidates), n=1, cutoff=CUTOFF)
    return candidates[found[0]] if found else None


def _bare(name: str) -> str:
    return name.lstrip("-")


def _fold(name: str) -> str:
    return _bare(name).lower().replace("-", "_")


def did_you_mean(word: str, known: Iterable[str], *, quote: bool = True) -> str:
    """``"did you mean 'steps'?"`` (or ``--steps`` unquoted), or ``""`` when nothing is near."""
    match = closest(word, known)
    if match is None:
        return ""
    return f"did you mean {match!r}?" if quote else f"did you mean {match}?"


_INVALID_CHOICE = re.compile(
    r"invalid choice: (?P<value>'.*?'|\S+) \(choose from (?P<choices>.*)\)"
)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that names the nearest known flag, subcommand or choice.

    ``flux-tools generate --stpes 30 "x"``: ``unrecognized argument --stpes: did you mean
    --steps?``, said by the subcommand that was chosen (its flags are the ones that count).
    Subparsers made with ``add_subparsers()`` are of this class too (argparse's default).
    """

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = _chosen(self, parsed)
            chosen.error(chosen.unrecognized(extras))
        return parsed

    def option_strings(self) -> list[str]:
        return [o for action in self._actions for o in action.option_strings]

    def unrecognized(self, extras: Sequence[str]) -> str:
        """The message for arguments no flag or positional took: each unknown flag with the
        nearest known one (the stray values after it are its, and not named)."""
        known = self.option_strings()
        lines = []
        for extra in extras:
            if not extra.startswith("-") or extra == "-":
                continue
            flag = extra.split("=", 1)[0]
            hint = did_you_mean(flag, known, quote=False)
            lines.append(f"unrecognized argument {flag}" + (f": {hint}" if hint else ""))
        if not lines:
            return "unrecognized arguments: " + " ".join(extras)
        helped = "did you mean" in lines[-1]
        return "; ".join(lines) + ("" if helped else f" (all flags: {self.prog} --help)")

    def error(self, message: str) -> NoReturn:
        match = _INVALID_CHOICE.search(message)
        if match and "did you mean" not in message:
            value = match.group("value").strip("'")
            choices = [c.strip().strip("'") for c in match.group("choices").split(",")]
            hint = did_you_mean(value, choices)
            if hint:
                message = f"{message}: {hint}"
        super().error(message)


def _chosen(parser: ArgumentParser, parsed: argparse.Namespace) -> ArgumentParser:
    """The deepest subcommand chosen (by its ``dest``), whose flags the unknown ones missed."""
    current: argparse.ArgumentParser = parser
    while True:
        subparsers = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(parsed, subparsers[0].dest, None) if subparsers else None
        if not subparsers or not isinstance(name, str) or name not in subparsers[0].choices:
            break
        current = subparsers[0].choices[name]
    return current if isinstance(current, ArgumentParser) else parser


__all__ = ["CUTOFF", "ArgumentParser", "closest", "did_you_mean"]
