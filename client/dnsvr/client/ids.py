"""The one rule for video ids: checked by the client before a request is sent and by the server before
anything is read or written (`dnsvr.serving.store.schema.check_video_id` is this function).

A video id is 1 to 256 bytes of UTF-8 made of
    letters, marks and digits of any script (Unicode categories L*, M*, N*: "vidéo-日本-٣"),
    punctuation and symbols (categories P*, S*: - _ . , : ; / @ # % & + = ~ ? ! ( ) [ ] { } < > | ^ $ *, emoji),
    and the plain space U+0020, not at the start or the end,
except the quotes ' " ` and the backslash \\ (they delimit and escape strings in query languages).
Control and format characters, other white space (tabs, line breaks, no-break spaces), surrogates, private-use
and unassigned code points are refused.  The message of the error names the id and the first offending
character.
"""

from __future__ import annotations

import unicodedata

from dnsvr.client.errors import InvalidVideo

MAX_VIDEO_ID_BYTES = 256
ALLOWED_CATEGORIES = ("L", "M", "N", "P", "S")
FORBIDDEN_CHARACTERS = frozenset("'\"`\\")


def _allowed(character: str) -> bool:
    if character == " ":
        return True
    return character not in FORBIDDEN_CHARACTERS and unicodedata.category(character)[0] in ALLOWED_CATEGORIES


def id_problem(video_id: object) -> str | None:
    """Why `video_id` is not a valid video id (module docstring), or None when it is one."""
    if not isinstance(video_id, str):
        return f"video_id must be a str, got {type(video_id).__name__}"
    if not video_id:
        return "video_id must not be empty"
    size = len(video_id.encode("utf-8", errors="surrogatepass"))
    if size > MAX_VIDEO_ID_BYTES:
        return f"video_id is {size} bytes of UTF-8, the maximum is {MAX_VIDEO_ID_BYTES}"
    bad = next((c for c in video_id if not _allowed(c)), None)
    if bad is not None:
        name = unicodedata.name(bad, f"U+{ord(bad):04X}")
        return f"video_id {video_id!r} contains the forbidden character {bad!r} ({name})"
    if video_id != video_id.strip(" "):
        return f"video_id {video_id!r} has leading or trailing spaces"
    return None


def check_video_id(video_id: object) -> str:
    """`video_id` when it is a valid video id; else InvalidVideo naming the problem."""
    problem = id_problem(video_id)
    if problem is not None:
        raise InvalidVideo(problem)
    return video_id
