"""The curated schemas ExampleValidator checks each run's examples against.

``<kind>/schema.pbtxt``, kind: ``sequence`` or ``rating`` (MovieLensExampleGen's two
example outputs). See README.md for how they were made and how to change them.
"""

from __future__ import annotations

import os

KINDS = ("sequence", "rating")
_HERE = os.path.dirname(os.path.abspath(__file__))


def schema_file(kind: str) -> str:
    """Absolute path of the curated schema of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown example kind {kind!r}; known: {KINDS}")
    return os.path.join(_HERE, kind, "schema.pbtxt")
