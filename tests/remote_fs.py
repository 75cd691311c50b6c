"""A stand-in for an object store (gs://, s3://) in tests: the ``remote://`` scheme.

Paths ``remote://<rest>`` live under a local directory, but only code that goes through
a file-system layer can reach them: Apache Beam's ``FileSystems`` (what Beam workers
use) and TFX's ``fileio`` (what executors use). Builtin ``open``, ``os`` and ``pathlib``
see no such path, so a component that runs on ``remote://`` data would also run on
``gs://`` data, where the same two layers dispatch to Google Cloud Storage.

TensorFlow's own C++ file systems (``tf.data``, ``tf.saved_model``) cannot see this
scheme: code under test that needs TensorFlow to read or write must stage through a
local directory, as it must for any scheme TensorFlow was not built with.

Usage::

    root = remote_fs.install(tmp_path)       # returns "remote://"
    remote_fs.local_path("remote://data/u.data")  # where that object lives on disk
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, Callable, Iterable, List, Optional, Tuple

from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem
from tfx.dsl.io import filesystem, filesystem_registry
from tfx.dsl.io.plugins import local as tfx_local

SCHEME = "remote"
PREFIX = f"{SCHEME}://"
_state = {"root": None}


def install(root) -> str:
    """Maps ``remote://`` to the local directory ``root`` (created) and returns the
    scheme's prefix. Registration is process-wide; the root can be changed by calling
    again."""
    os.makedirs(root, exist_ok=True)
    _state["root"] = str(root)
    filesystem_registry.DEFAULT_FILESYSTEM_REGISTRY.register(RemoteTfxFilesystem, 100)
    return PREFIX


def local_path(path: str) -> str:
    """The local file behind ``remote://...``; refuses any other path, so a test
    cannot pass a local path where a remote one is meant."""
    path = str(path)
    if not path.startswith(PREFIX):
        raise ValueError(f"not a {PREFIX} path: {path!r}")
    if _state["root"] is None:
        raise RuntimeError("remote_fs.install() was not called")
    return os.path.join(_state["root"], path[len(PREFIX):])


def remote_path(local: str) -> str:
    rel = os.path.relpath(local, _state["root"])
    return PREFIX + ("" if rel == "." else rel)


class RemoteBeamFileSystem(FileSystem):
    """Beam's view of ``remote://``: a LocalFileSystem behind a path translation."""

    def __init__(self, pipeline_options=None):
        super().__init__(pipeline_options)
        self._local = LocalFileSystem(pipeline_options)

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def has_dirs(self):
        return True

    def _url_dirname(self, url_or_path):
        parent = posixpath.dirname(url_or_path)
        return parent if len(parent) > len(PREFIX) else PREFIX

    def mkdirs(self, path):
        self._local.mkdirs(local_path(path))

    def _list(self, dir_or_prefix):
        for directory, _, files in os.walk(local_path(dir_or_prefix)):
            for name in files:
                path = os.path.join(directory, name)
                yield FileMetadata(remote_path(path), os.path.getsize(path),
                                   os.path.getmtime(path))

    def create(self, path, *args, **kwargs):
        return self._local.create(local_path(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return self._local.open(local_path(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        self._local.copy([local_path(p) for p in source_file_names],
                         [local_path(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        self._local.rename([local_path(p) for p in source_file_names],
                           [local_path(p) for p in destination_file_names])

    def exists(self, path):
        return self._local.exists(local_path(path))

    def size(self, path):
        return self._local.size(local_path(path))

    def last_updated(self, path):
        return self._local.last_updated(local_path(path))

    def checksum(self, path):
        return self._local.checksum(local_path(path))

    def metadata(self, path):
        meta = self._local.metadata(local_path(path))
        return FileMetadata(path, meta.size_in_bytes, meta.last_updated_in_seconds)

    def delete(self, paths):
        self._local.delete([local_path(p) for p in paths])


class RemoteTfxFilesystem(filesystem.Filesystem):
    """TFX fileio's view of ``remote://``: TFX's local plugin behind a translation."""

    SUPPORTED_SCHEMES = [PREFIX]

    @staticmethod
    def open(name, mode: str = "r") -> Any:
        return tfx_local.LocalFilesystem.open(local_path(name), mode)

    @staticmethod
    def copy(src, dst, overwrite: bool = False) -> None:
        tfx_local.LocalFilesystem.copy(local_path(src), local_path(dst), overwrite)

    @staticmethod
    def exists(path) -> bool:
        return os.path.exists(local_path(path))

    @staticmethod
    def glob(pattern) -> List[str]:
        return [remote_path(p) for p in tfx_local.LocalFilesystem.glob(local_path(pattern))]

    @staticmethod
    def isdir(path) -> bool:
        return os.path.isdir(local_path(path))

    @staticmethod
    def listdir(path) -> List[str]:
        return tfx_local.LocalFilesystem.listdir(local_path(path))

    @staticmethod
    def makedirs(path) -> None:
        os.makedirs(local_path(path), exist_ok=True)

    @staticmethod
    def mkdir(path) -> None:
        tfx_local.LocalFilesystem.mkdir(local_path(path))

    @staticmethod
    def remove(path) -> None:
        tfx_local.LocalFilesystem.remove(local_path(path))

    @staticmethod
    def rename(src, dst, overwrite: bool = False) -> None:
        tfx_local.LocalFilesystem.rename(local_path(src), local_path(dst), overwrite)

    @staticmethod
    def rmtree(path) -> None:
        tfx_local.LocalFilesystem.rmtree(local_path(path))

    @staticmethod
    def stat(path) -> Any:
        return tfx_local.LocalFilesystem.stat(local_path(path))

    @staticmethod
    def walk(top, topdown: bool = True, onerror: Optional[Callable[..., None]] = None
             ) -> Iterable[Tuple[str, List[str], List[str]]]:
        for directory, dirs, files in tfx_local.LocalFilesystem.walk(
                local_path(top), topdown, onerror):
            yield remote_path(directory), dirs, files
