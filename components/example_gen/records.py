"""Examples as gzipped TFRecord files: tf.Example encoding, TFRecord framing, the sink;
and the small one-element outputs (vocabularies, statistics) as single text files.

Each user's examples are encoded (tfx-bsl's C++ encoder) and framed into one blob of
whole TFRecords on the worker that built them, so the sink only appends bytes: no
per-record Python call happens at write time.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterable, List, Mapping

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import filebasedsink
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


class _FramedTFRecordSink(filebasedsink.FileBasedSink):
    """Writes elements that already hold TFRecord-framed bytes, one write per element."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str):
        super().__init__(
            file_path_prefix, coder=beam.coders.BytesCoder(), file_name_suffix=file_name_suffix,
            num_shards=0, shard_name_template=None, mime_type="application/octet-stream",
            compression_type=CompressionTypes.AUTO)

    def write_encoded_record(self, file_handle, value):
        file_handle.write(value)


class WriteFramedTFRecords(beam.PTransform):
    """Writes blobs of framed TFRecords as gzipped TFRecord files (``.gz`` suffix)."""

    def __init__(self, file_path_prefix: str):
        super().__init__()
        self._sink = _FramedTFRecordSink(file_path_prefix, ".gz")

    def expand(self, pcoll):
        return pcoll | beam.io.Write(self._sink)


def write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path``, whole, through Beam's ``FileSystems``."""
    with FileSystems.create(path, mime_type="text/plain") as handle:
        handle.write(text.encode("utf-8"))
