"""The one exception of :mod:`data.download` and the modules it is split into."""
from __future__ import annotations

from typing import Optional


class DownloadError(RuntimeError):
    """A MovieLens archive could not be downloaded, verified or extracted.

    ``network`` is True when the cause is that the server could not be reached at all
    (no route, DNS failure, connection refused, timeout) -- i.e. probably an offline machine.
    """

    def __init__(
        self,
        message: str,
        *,
        url: Optional[str] = None,
        expected: Optional[str] = None,
        actual: Optional[str] = None,
        network: bool = False,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.expected = expected
        self.actual = actual
        self.network = network
