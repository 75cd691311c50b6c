"""How a served version is published, on a local file system or an object store.

File systems: the serving root and the Trainer's export may be local or on an object
store (``gs://`` on Kubeflow / Vertex AI), so every file here is read and written through
TFX's ``fileio`` (which hands ``gs://`` to ``tf.io.gfile``). TensorFlow itself saves the
SavedModels (and the ScaNN index) into local directories only: a variant is always built
locally, then moved to where it is served.

Publishing (:func:`publish`): a server must never see a half-written version, and a
version that exists is never overwritten (FileExistsError). Versions are integers (Unix
seconds, or one more than the highest present if that is larger).

* Local serving root -- atomic: every variant is written beside its final place (a hidden
  ``.tmp-*`` directory under the same base path, which TF Serving ignores), then renamed
  to ``<version>``; a rename within one file system is atomic.
* Object store -- ``saved_model.pb`` last: there is no atomic rename of a directory, so
  every variant is built in a local temporary directory, then uploaded file by file into
  ``<base>/<version>``, every variant's other files first and each ``saved_model.pb``
  last. TF Serving treats a version as loadable only once its ``saved_model.pb`` is there
  (a load before that fails and is retried), so it never loads a partial one. A failed
  upload removes what it wrote of this version, in every variant (best effort: an
  interrupted process leaves it), and raises. Nothing locks the root against a second
  Pusher of the same model at the same moment (a pipeline runs one at a time).

Which versions count: :func:`versions` lists the loadable ones, integer directories that
hold ``saved_model.pb`` (locally that is each of them: they appear by rename; on an
object store not one an interrupted upload left behind), so the latest version is one a
server can load. :func:`next_version` counts every integer directory, complete or not:
reusing the number of a leftover would mix its files into the new version.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
from absl import logging
from tfx.dsl.io import fileio

from components import contract

SAVED_MODEL_FILE = contract.SAVED_MODEL_FILE  # TF Serving loads a version once this is there


def is_local(path: str) -> bool:
    """A path of this machine's file system (no ``scheme://``)."""
    return "://" not in path


def _version_dirs(base: str) -> List[int]:
    """Every integer-named directory under ``base``, complete or not, ascending."""
    if not fileio.isdir(base):
        return []
    names = [name.rstrip("/") for name in fileio.listdir(base)]  # gs:// lists "1/"
    return sorted(int(name) for name in names
                  if name.isdigit() and fileio.isdir(os.path.join(base, name)))


def versions(base: str) -> List[int]:
    """The loadable versions under a base path (those holding ``saved_model.pb``; see
    the module docstring), ascending."""
    return [version for version in _version_dirs(base)
            if fileio.exists(os.path.join(base, str(version), SAVED_MODEL_FILE))]


def latest_version_dir(base: str) -> Optional[str]:
    found = versions(base)
    return os.path.join(base, str(found[-1])) if found else None


def next_version(bases: Iterable[str], now: Optional[float] = None) -> int:
    """Unix seconds, or one more than the highest version directory (loadable or left
    by an interrupted upload) under any of ``bases``."""
    highest = max((v for base in bases for v in _version_dirs(base)), default=0)
    return max(int(time.time() if now is None else now), highest + 1)


def publish(builders: Dict[str, Callable[[str], None]], version: int) -> Dict[str, str]:
    """Builds each ``{base path: build(directory)}`` (``directory`` does not exist yet)
    and publishes them all as ``<base>/<version>``: by rename on a local file system, by
    upload with ``saved_model.pb`` last elsewhere (module docstring). Raises
    FileExistsError (leaving every existing version as it was) when a
    ``<base>/<version>`` exists. Returns ``{base: final directory}``."""
    for base in builders:
        _refuse_existing(base, version)
    if all(is_local(base) for base in builders):
        return _publish_by_rename(builders, version)
    return _publish_by_upload(builders, version)


def _refuse_existing(base: str, version: int, when: str = "exists") -> str:
    final = os.path.join(base, str(version))
    if fileio.exists(final):
        raise FileExistsError(f"version {version} {when} under {base}")
    return final


def _publish_by_rename(builders: Dict[str, Callable[[str], None]],
                       version: int) -> Dict[str, str]:
    staged: Dict[str, str] = {}
    try:
        for base, build in builders.items():
            os.makedirs(base, exist_ok=True)
            staged[base] = os.path.join(base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
            build(staged[base])
        published = {}
        for base, tmp in staged.items():
            final = _refuse_existing(base, version, "appeared")
            os.rename(tmp, final)
            published[base] = final
        return published
    finally:
        for tmp in staged.values():
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)


def _publish_by_upload(builders: Dict[str, Callable[[str], None]],
                       version: int) -> Dict[str, str]:
    staging = tempfile.mkdtemp(prefix=f"publish-{version}-")
    try:
        built = {}
        for number, (base, build) in enumerate(builders.items()):
            built[base] = os.path.join(staging, str(number))
            build(built[base])
        uploaded: List[str] = []
        try:
            for base, local in built.items():         # everything but saved_model.pb ...
                final = _refuse_existing(base, version, "appeared")
                uploaded.append(final)
                copy_tree(local, final, skip=(SAVED_MODEL_FILE,))
            for local, final in zip(built.values(), uploaded):  # ... then it: loadable
                fileio.copy(os.path.join(local, SAVED_MODEL_FILE),
                            os.path.join(final, SAVED_MODEL_FILE))
        except BaseException:
            for final in uploaded:
                _remove_quietly(final)
            raise
        logging.info("Uploaded version %d: %s", version, uploaded)
        return dict(zip(built, uploaded))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_quietly(directory: str) -> None:
    """Best effort: the error that made us clean up is the one to raise."""
    try:
        if fileio.exists(directory):
            fileio.rmtree(directory)
    except Exception as error:  # pylint: disable=broad-except
        logging.warning("Could not remove the partial upload %s: %s", directory, error)


def copy_tree(source: str, target: str, skip: Sequence[str] = ()) -> None:
    """Copies the directory ``source`` into ``target`` (created; each on any file system
    ``fileio`` knows) file by file, leaving out the top-level files named in ``skip``."""
    source = source.rstrip("/")
    for directory, _, files in fileio.walk(source):
        relative = directory[len(source):].strip("/")
        into = os.path.join(target, relative) if relative else target
        fileio.makedirs(into)
        for name in files:
            if not (relative == "" and name in skip):
                fileio.copy(os.path.join(directory, name), os.path.join(into, name))


def read_text(path: str) -> str:
    """A UTF-8 text file on any file system (``fileio``'s text mode would decode with
    the locale's encoding on some)."""
    with fileio.open(path, "rb") as handle:
        return handle.read().decode("utf-8")


def load_npz(path: str) -> Dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file on any file system."""
    with fileio.open(path, "rb") as handle:
        with np.load(io.BytesIO(handle.read())) as data:
            return {name: data[name] for name in data.files}
