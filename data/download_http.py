"""Streaming one archive from a URL into a file, hashing it and capping its size.

Used by :func:`data.download.fetch`, which owns the caps (:data:`data.download.CHUNK_SIZE`,
:data:`data.download.MAX_ARCHIVE_BYTES`) and passes them on every call.
"""
from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

from data.download_errors import DownloadError


def stream_archive(
    url: str,
    out,
    *,
    name: str,
    size: Optional[int],
    progress: bool,
    timeout: float,
    chunk_size: int,
    max_bytes: int,
) -> tuple[str, int]:
    """Stream ``url`` into ``out``; return (sha256 hex, byte count).

    Never reads more than the response's Content-Length, nor, when it declares none, more
    than ``size`` (the archive's size, if known) or else ``max_bytes``. ``name`` is the
    dataset's, for messages and progress."""
    request = urllib.request.Request(url, headers={"User-Agent": "movielens-download/1.0"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (URL is ours)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}", url=url) from exc
    except urllib.error.URLError as exc:
        remote = not url.lower().startswith("file:")
        raise DownloadError(f"cannot reach {url}: {exc.reason}", url=url, network=remote) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad status line
        raise DownloadError(f"cannot reach {url}: {exc}", url=url, network=True) from exc
    except ValueError as exc:  # malformed / unsupported URL
        raise DownloadError(f"invalid URL {url!r}: {exc}", url=url) from exc

    hasher = hashlib.sha256()
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        # Never read more than announced, nor, unannounced, more than the archive's size.
        cap = declared if declared is not None else (size or max_bytes)
        reporter = _Progress(name, declared or size) if progress else None
        try:
            while True:
                chunk = response.read(min(chunk_size, cap + 1 - received))
                if not chunk:
                    break
                if received + len(chunk) > cap:
                    raise DownloadError(
                        f"download from {url} is larger than the {cap:,} bytes expected"
                        f"{'' if declared is not None else ' of ' + name}; stopped and "
                        "deleted", url=url)
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                if reporter:
                    reporter.update(received)
        except http.client.IncompleteRead as exc:
            raise DownloadError(
                f"truncated download from {url}: connection closed after "
                f"{received + len(exc.partial)} of {declared} bytes",
                url=url,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"download from {url} failed after {received} bytes: {exc}", url=url,
                network=isinstance(exc, (TimeoutError, ConnectionError)),
            ) from exc
        finally:
            if reporter:
                reporter.done(received)
    if declared is not None and received != declared:
        raise DownloadError(
            f"truncated download from {url}: received {received} of {declared} bytes", url=url
        )
    return hasher.hexdigest(), received


class _Progress:
    """``name: 1,234,567/4,924,029 bytes (25%)`` on stderr; redrawn in place on a terminal,
    otherwise one line per 10%."""

    def __init__(self, name: str, total: Optional[int]) -> None:
        self.name = name
        self.total = total
        self.tty = sys.stderr.isatty()
        self.last_time = 0.0
        self.last_decile = -1

    def _line(self, received: int) -> str:
        if self.total:
            pct = min(100, received * 100 // self.total)
            return f"{self.name}: {received:,}/{self.total:,} bytes ({pct}%)"
        return f"{self.name}: {received:,} bytes"

    def update(self, received: int) -> None:
        if self.tty:
            now = time.monotonic()
            if now - self.last_time >= 0.2:
                self.last_time = now
                sys.stderr.write("\r" + self._line(received))
                sys.stderr.flush()
        elif self.total:
            decile = min(10, received * 10 // self.total)
            if decile > self.last_decile and decile < 10:
                self.last_decile = decile
                sys.stderr.write(self._line(received) + "\n")

    def done(self, received: int) -> None:
        sys.stderr.write(("\r" if self.tty else "") + self._line(received) + "\n")
        sys.stderr.flush()
