"""Reading data files through Apache Beam's ``FileSystems``, local or on an object store.

The Beam workers read the ratings this way, so everything else that reads the data
(layout detection, catalogues, line numbers in messages) does too: a data directory may
be local or a URL of any scheme Beam has a file system for (``gs://...`` on Vertex AI).
Local paths are ``pathlib.Path`` objects; URLs stay strings, which pathlib would mangle
(``gs://b`` becomes ``gs:/b``).
"""

from __future__ import annotations

import os
import pathlib
from typing import BinaryIO, Dict, Iterable, Union

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# A file or directory: a pathlib.Path when local, the URL string otherwise.
DataPath = Union[pathlib.Path, str]


def is_url(path) -> bool:
    """True for ``scheme://...`` paths (``gs://``, ``s3://``), False for local ones."""
    return FileSystems.get_scheme(str(path)) is not None


def is_directory(path) -> bool:
    """Whether ``path`` is a directory.

    Object stores have no directories, only names sharing a prefix: a directory there
    exists while some object lies under it, so an empty one reads as absent. Beam's file
    systems cannot tell a local directory from a file, so local paths ask the OS.
    """
    if not is_url(path):
        return os.path.isdir(path)
    anything_below = FileSystems.join(str(path), "**")
    return bool(FileSystems.match([anything_below], limits=[1])[0].metadata_list)


def open_file(path) -> BinaryIO:
    """Opens a data file for binary reading through Beam's file systems.

    Never decompressed, whatever the name: byte offsets must be those of the file, as
    the ratings source reads it.
    """
    return FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED)


def data_path(path) -> DataPath:
    return str(path) if is_url(path) else pathlib.Path(path)


def join(root: DataPath, name: str) -> DataPath:
    return root / name if isinstance(root, pathlib.Path) else FileSystems.join(root, name)


def is_file(path: DataPath) -> bool:
    return FileSystems.exists(str(path))


def line_numbers_at(path, byte_offsets: Iterable[int]) -> Dict[int, int]:
    """The 1-based number of the line that starts at each of ``byte_offsets`` of ``path``.

    Beam reads files in byte ranges, so bad records are located by offset; error messages
    turn the few offsets they quote into line numbers with this, in one pass over the
    file up to the last offset (on an object store each pass is a download).
    """
    offsets = sorted(set(byte_offsets))
    if not offsets:
        return {}
    numbers: Dict[int, int] = {}
    newlines = position = 0
    with open_file(path) as handle:
        for offset in offsets:
            while position < offset:
                block = handle.read(min(offset - position, 1 << 20))
                if not block:
                    break
                newlines += block.count(b"\n")
                position += len(block)
            numbers[offset] = newlines + 1
    return numbers


def line_number_at(path, byte_offset: int) -> int:
    """The 1-based number of the line that starts at ``byte_offset`` of ``path``."""
    return line_numbers_at(path, [byte_offset])[byte_offset]
