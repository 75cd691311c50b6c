"""Examples as gzipped TFRecord files: tf.Example encoding, TFRecord framing, the sink;
and the small one-element outputs (vocabularies, statistics) as single text files.

Each user's examples are encoded (tfx-bsl's C++ encoder) and framed into one blob of
whole TFRecords on the worker that built them, so the sink only appends bytes: no
per-record Python call happens at write time.
"""

from __future__ import annotations

import struct
import uuid
from typing import Dict, Iterable, List, Mapping, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import iobase
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.filesystem import CompressionTypes


def encode_examples(columns: Mapping[str, pa.Array]) -> List[bytes]:
    """Arrow columns -> serialized tf.Examples (tfx-bsl's C++ encoder)."""
    from tfx_bsl.coders import example_coder  # pylint: disable=import-outside-toplevel

    batch = pa.RecordBatch.from_arrays(list(columns.values()), list(columns.keys()))
    return example_coder.RecordBatchToExamplesEncoder().encode(batch)


_PACK_U32 = struct.Struct("<I").pack
_PACK_U64 = struct.Struct("<Q").pack
# TFRecord length headers (8-byte length + its masked CRC) by record length: lengths
# repeat, so each header is computed once per worker.
_LENGTH_HEADERS: Dict[int, bytes] = {}


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c  # pylint: disable=import-outside-toplevel

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_tfrecords(records: Iterable[bytes]) -> bytes:
    """Records in TFRecord framing (length, its masked CRC32C, data, its masked CRC32C)."""
    from google_crc32c import value as crc32c  # pylint: disable=import-outside-toplevel

    parts = []
    append = parts.append
    for record in records:
        header = _LENGTH_HEADERS.get(len(record))
        if header is None:
            length = _PACK_U64(len(record))
            header = _LENGTH_HEADERS[len(record)] = length + _PACK_U32(_masked_crc32c(length))
        crc = crc32c(record)
        append(header)
        append(record)
        append(_PACK_U32((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF))
    return b"".join(parts)


class _FramedTFRecordsSink(iobase.Sink):
    """``(destination, blob of framed TFRecords)`` pairs -> gzipped files
    ``<prefix>-SSSSS-of-NNNNN.gz`` for each destination's ``prefix`` (the names a
    ``FileBasedSink`` gives), at least one file per destination (empty if it got nothing).

    One sink for every destination: each ``beam.io.Write`` adds its own initialization,
    bundle writes and finalization (eight transforms, four with side inputs), which cost
    more than the writing itself on small data. As with a ``FileBasedSink``, each bundle
    writes temporary files (here one per destination it meets), and only the successful
    bundles' files are renamed into place by the one finalization.
    """

    skip_if_empty = True  # finalize_write writes the empty destinations' files itself

    def __init__(self, prefixes: Sequence[str]):
        super().__init__()
        self._prefixes = tuple(prefixes)

    def initialize_write(self) -> List[str]:
        """The temporary directories, one per destination, beside its files."""
        run = uuid.uuid4().hex
        directories = [FileSystems.join(FileSystems.split(prefix)[0], f".temp-{run}")
                       for prefix in self._prefixes]
        for directory in directories:
            FileSystems.mkdirs(directory)
        return directories

    def open_writer(self, init_result: List[str], uid: str) -> "_FramedTFRecordsWriter":
        return _FramedTFRecordsWriter(init_result, uid)

    def pre_finalize(self, init_result, writer_results):
        return None

    def finalize_write(self, init_result: List[str], writer_results, pre_finalize_result):
        temporary: Dict[int, List[str]] = {index: [] for index in range(len(self._prefixes))}
        for written in writer_results:
            for index, path in written:
                temporary[index].append(path)
        for index, paths in temporary.items():
            if not paths:
                empty = FileSystems.join(init_result[index], f"{uuid.uuid4().hex}.gz")
                _create_gzip(empty).close()
                paths.append(empty)
            paths.sort()
            final = [f"{self._prefixes[index]}-{shard:05d}-of-{len(paths):05d}.gz"
                     for shard in range(len(paths))]
            # Idempotent, as a retried finalization must be: what was moved stays moved.
            pending = [(source, target) for source, target in zip(paths, final)
                       if FileSystems.exists(source)]
            if pending:
                FileSystems.rename(*map(list, zip(*pending)))
            yield from final
        FileSystems.delete([d for d in init_result if FileSystems.exists(d)])


class _FramedTFRecordsWriter(iobase.Writer):
    """One bundle's temporary files: one per destination it writes to."""

    def __init__(self, directories: List[str], uid: str):
        self._directories = directories
        self._uid = uid
        self._files: Dict[int, tuple] = {}

    def write(self, value) -> None:
        index, blob = value
        if index not in self._files:
            path = FileSystems.join(self._directories[index], f"{self._uid}.gz")
            self._files[index] = (path, _create_gzip(path))
        self._files[index][1].write(blob)

    def close(self) -> List[tuple]:
        for _, handle in self._files.values():
            handle.close()
        return [(index, path) for index, (path, _) in self._files.items()]


def _create_gzip(path: str):
    return FileSystems.create(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.GZIP)


class WriteFramedTFRecords(beam.PTransform):
    """Writes ``(destination index, blob of framed TFRecords)`` pairs as gzipped TFRecord
    files: destination ``i`` to ``prefixes[i]-SSSSS-of-NNNNN.gz``, one write for all."""

    def __init__(self, prefixes: Sequence[str]):
        super().__init__()
        self._sink = _FramedTFRecordsSink(prefixes)

    def expand(self, pcoll):
        return pcoll | beam.io.Write(self._sink)


def write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path``, whole, through Beam's ``FileSystems``."""
    with FileSystems.create(path, mime_type="text/plain") as handle:
        handle.write(text.encode("utf-8"))


def _write_line(text: str, path: str) -> None:
    write_text(path, text + "\n")


class WriteTextFile(beam.PTransform):
    """Writes the single string of a PCollection to ``path``, newline-terminated (one file,
    no shard suffix).

    One ParDo, where ``beam.io.WriteToText(num_shards=1)`` adds a sink's temporary files,
    finalization and side inputs (about ten transforms and four stages) to move one
    element: the same bytes, written again whole if a runner retries the bundle.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, pcoll):
        return pcoll | beam.Map(_write_line, self._path)
