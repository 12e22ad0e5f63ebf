"""Text from outside (the API, a gateway, a caller) made safe to print, log or hand to a model.

It is here, in a module that imports nothing of the package, so that every layer can use it.
"""

from __future__ import annotations

import re

#: C0 and C1 controls (escape sequences, carriage returns, NUL), DEL, zero-width characters,
#: line and paragraph separators, bidirectional overrides and the byte-order mark; tab and
#: newline are added for text that must stay on one line.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff"
_CONTROL = re.compile(f"[{_UNSAFE}]")
_CONTROL_OR_BREAK = re.compile(f"[{_UNSAFE}\t\n]")
#: Longest piece of outside text (an id, a status, an error) quoted in a message.
DEFAULT_EXCERPT = 200


def safe_text(value: object, limit: int = DEFAULT_EXCERPT, *, newlines: bool = False) -> str:
    """``value`` as text that cannot fool a terminal, a log or a model: unsafe characters shown
    as ``\\xNN``/``\\uNNNN`` escapes (newlines and tabs too, unless ``newlines``), and cut to
    ``limit`` characters with a note of how many were left out."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - limit if len(text) > limit else 0
    if cut:
        text = text[:limit]
    pattern = _CONTROL if newlines else _CONTROL_OR_BREAK
    text = pattern.sub(lambda match: ascii(match.group())[1:-1], text)
    return f"{text}… ({cut} more characters)" if cut else text


def excerpt(value: str, limit: int = 40) -> str:
    """A short, printable quote of a (possibly huge or hostile) value for an error message."""
    head = value[:limit]
    shown = "".join(
        c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else repr(c)[1:-1] for c in head
    )
    more = f"... ({len(value)} characters)" if len(value) > limit else ""
    return f"'{shown}'{more}"
