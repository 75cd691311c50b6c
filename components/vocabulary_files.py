"""The one encoding of the vocabulary files' tab-separated lines (movies.tsv, users.tsv).

A MovieLens title may hold any character, a tab or a line break included (a quoted CSV
field can span lines), and a raw one would split a movies.tsv row into the wrong fields or
two lines: the Trainer would fail on it, or worse, read the wrong title. So every field
is escaped by :func:`encode_fields` when the example generator writes a line, and every
reader (components/trainer/vocabulary.py, components/pusher/serving.py) splits it with
:func:`decode_fields`:

* ``\\`` becomes ``\\\\``, tab ``\\t``, line feed ``\\n``, carriage return ``\\r``;
* every other character that ``str.splitlines`` treats as a line break (``\\x0b``,
  ``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85``, ``\\u2028``, ``\\u2029``) becomes ``\\uXXXX``,
  so that no reader, however it splits lines, sees a break inside a field.

Ids and numbers never contain these characters, so they are written as they are. Plain
Python, no TensorFlow: the Beam workers and the Trainer both import it.
"""

from __future__ import annotations

import re
from typing import Iterable, List

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ESCAPES.update({c: f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})
_NEEDS_ESCAPE = re.compile("[" + re.escape("".join(_ESCAPES)) + "]")
_UNESCAPES = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}
_ESCAPED = re.compile(r"\\(?:[\\tnr]|u[0-9a-fA-F]{4})")


def _unescape(match: "re.Match[str]") -> str:
    text = match.group(0)
    return _UNESCAPES.get(text) or chr(int(text[2:], 16))


def encode_fields(fields: Iterable[object]) -> str:
    """One line (without its line break) holding ``fields`` (each ``str()``-ed)."""
    return "\t".join(_NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], str(field))
                     for field in fields)


def decode_fields(line: str) -> List[str]:
    """The fields of one line written by :func:`encode_fields` (its line break removed)."""
    return [_ESCAPED.sub(_unescape, field) for field in line.split("\t")]
