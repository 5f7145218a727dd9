"""Milvus boolean expressions that carry our values: the one place they are written.

No value ever reaches an expression by string concatenation elsewhere: strings go through `string_literal`
(a double-quoted literal with `\\` and `"` escaped, any other character, non-ASCII included, as itself: the
Milvus parsers of Lite 3 and of the servers read UTF-8 literals, and neither accepts a \\uXXXX escape), integers
through `integer_literal` (an int, never a bool or a str).  Video ids are checked by the id rule
(`dnsvr.client.ids`) before they get here, which already keeps quotes, backslashes and control characters out.

    equals("video_id", "clip-1")                 -> 'video_id == "clip-1"'
    is_in("video_id", ["a", "b"])                -> 'video_id in ["a", "b"]'
    is_in("generation", [3, 4])                  -> 'generation in [3, 4]'
    greater("video_id", "clip-1")                -> 'video_id > "clip-1"'   (at_most: <=, less: <)
    both(e1, e2), either(e1, e2)                 -> '(e1) and (e2)', '(e1) or (e2)'
    checked_filter('metadata["a"] == 1')         -> the caller's filter, once its brackets are known to balance

A caller's filter (`search --filter`) is an expression by design; `checked_filter` makes sure that, put inside
`both(...)`, it stays one operand: its parentheses and brackets balance outside its string literals.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

Value = str | int


def string_literal(value: str) -> str:
    """`value` as a Milvus string literal; ValueError for control or surrogate characters (not representable)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {type(value).__name__}")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise ValueError(f"{value!r} holds the control character {bad!r}: not allowed in an expression")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def integer_literal(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {type(value).__name__}")
    return str(value)


def literal(value: Value) -> str:
    return string_literal(value) if isinstance(value, str) else integer_literal(value)


def _field(name: str) -> str:
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a field name")
    return name


def equals(field: str, value: Value) -> str:
    return f"{_field(field)} == {literal(value)}"


def greater(field: str, value: Value) -> str:
    return f"{_field(field)} > {literal(value)}"


def at_most(field: str, value: Value) -> str:
    return f"{_field(field)} <= {literal(value)}"


def less(field: str, value: Value) -> str:
    return f"{_field(field)} < {literal(value)}"


def is_in(field: str, values: Iterable[Value]) -> str:
    return f"{_field(field)} in [{', '.join(literal(v) for v in values)}]"


def is_not_in(field: str, values: Iterable[Value]) -> str:
    return f"{_field(field)} not in [{', '.join(literal(v) for v in values)}]"


def both(*expressions: str) -> str:
    return " and ".join(f"({e})" for e in expressions)


def either(*expressions: str) -> str:
    return " or ".join(f"({e})" for e in expressions)


_CLOSING = {")": "(", "]": "["}


def checked_filter(expression: str) -> str:
    """`expression` unchanged when its `(`/`[` balance outside string literals ('...' or "...", backslash escapes),
    so that `both(ours, expression)` cannot be re-grouped by it; ValueError naming the problem otherwise."""
    if not isinstance(expression, str):
        raise TypeError(f"expected a str, got {type(expression).__name__}")
    open_brackets: list[str] = []
    quote: str | None = None
    escaped = False
    for character in expression:
        if quote is not None:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == quote:
                quote = None
        elif character in "'\"":
            quote = character
        elif character in "([":
            open_brackets.append(character)
        elif character in _CLOSING:
            if not open_brackets or open_brackets.pop() != _CLOSING[character]:
                raise ValueError(f"filter {expression[:80]!r}: an unmatched {character!r}")
    if quote is not None:
        raise ValueError(f"filter {expression[:80]!r}: an unterminated string literal")
    if open_brackets:
        raise ValueError(f"filter {expression[:80]!r}: an unclosed {open_brackets[-1]!r}")
    return expression
