"""Tests for data/download.py. No internet: archives are built here and served from a loopback
HTTP server on 127.0.0.1 (or as file:// URLs)."""
from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from data import download
from data.download import DATASETS, DownloadError, fetch, resolve_data_dir

U_DATA = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n"


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


OMIT = -1
GOOD_ZIP = make_zip({"ml-100k/u.data": U_DATA, "ml-100k/README": b"readme\n"})


class Server:
    """Loopback HTTP server. routes: path -> (status, body, declared Content-Length or None).
    A declared length of OMIT sends no Content-Length (the body ends when the connection
    closes)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, int | None]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                status, body, declared = outer.routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                if declared != OMIT:
                    self.send_header("Content-Length",
                                     str(len(body) if declared is None else declared))
                self.end_headers()
                self.wfile.write(body)  # shorter than declared => truncated; then the socket closes

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def closed_port_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more: connecting is refused
    return f"http://127.0.0.1:{port}/ml-100k.zip"


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# ---------------------------------------------------------------------------------------------


def test_download_verify_extract_then_cache(server, tmp_path):
    server.routes["/ml-100k.zip"] = (200, GOOD_ZIP, None)
    cache = tmp_path / "cache"

    path = fetch("ml-100k", cache, url=server.url("/ml-100k.zip"), sha256=sha(GOOD_ZIP),
                 progress=False)

    assert path == cache / "ml-100k"
    assert (path / "u.data").read_bytes() == U_DATA
    assert (path / "README").read_bytes() == b"readme\n"
    assert (path / download.MARKER_NAME).read_text().strip() == sha(GOOD_ZIP)
    # only the dataset folder is left in the cache: no zip, no temp file
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]
    assert server.requests == ["/ml-100k.zip"]

    again = fetch("ml-100k", cache, url=server.url("/ml-100k.zip"), sha256=sha(GOOD_ZIP),
                  progress=False)
    assert again == path
    assert server.requests == ["/ml-100k.zip"]  # served from the cache, no second request


def test_cached_dataset_needs_no_network(tmp_path, closed_port_url):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(GOOD_ZIP)
    cache = tmp_path / "cache"
    first = fetch("ml-100k", cache, url=archive.as_uri(), sha256=sha(GOOD_ZIP), progress=False)
    assert (first / "u.data").read_bytes() == U_DATA
    # the URL is now unreachable, the cached copy is still returned
    again = fetch("ml-100k", cache, url=closed_port_url, sha256=sha(GOOD_ZIP), progress=False)
    assert again == first


def test_folder_without_marker_is_never_replaced(server, tmp_path):
    cache = tmp_path / "cache"
    mine = cache / "ml-100k"
    mine.mkdir(parents=True)
    (mine / "u.data").write_bytes(b"my own edited ratings")  # e.g. a manual unzip, no marker
    server.routes["/z"] = (200, GOOD_ZIP, None)

    with pytest.raises(DownloadError, match=r"refusing to replace .*nothing was changed"):
        fetch("ml-100k", cache, url=server.url("/z"), sha256=sha(GOOD_ZIP), progress=False)

    assert (mine / "u.data").read_bytes() == b"my own edited ratings"
    assert listing(cache) == ["ml-100k", "ml-100k/u.data"]
    assert server.requests == []  # refused before downloading anything
    (cache / "other").write_bytes(b"x")  # a file or a symlink in the way: the same
    with pytest.raises(DownloadError, match="is a file"):
        fetch("other", cache, url=server.url("/z"), sha256=sha(GOOD_ZIP), progress=False)
    assert (cache / "other").read_bytes() == b"x"


def test_folder_this_tool_made_or_empty_is_replaced(server, tmp_path):
    cache = tmp_path / "cache"
    old = cache / "ml-100k"
    old.mkdir(parents=True)
    (old / download.MARKER_NAME).write_text("0" * 64 + "\n")  # an older download
    (old / "u.data").write_bytes(b"old")
    (cache / "empty").mkdir()
    server.routes["/z"] = (200, GOOD_ZIP, None)

    for name in ("ml-100k", "empty"):
        path = fetch(name, cache, url=server.url("/z"), sha256=sha(GOOD_ZIP), progress=False)
        assert (path / "u.data").read_bytes() == U_DATA
    assert sorted(p.name for p in cache.iterdir()) == ["empty", "ml-100k"]


def test_response_without_length_is_capped_at_the_registry_size(server, tmp_path, monkeypatch):
    body = GOOD_ZIP + b"\0" * 50_000  # a server streaming more than the archive
    entry = DATASETS["ml-100k"]
    monkeypatch.setitem(DATASETS, "ml-100k", download.Dataset(
        entry.name, server.url("/registry.zip"), sha(GOOD_ZIP), entry.folder, len(GOOD_ZIP)))
    server.routes["/registry.zip"] = (200, body, OMIT)
    server.routes["/mirror.zip"] = (200, body, OMIT)
    cache = tmp_path / "cache"
    for url in (None, server.url("/mirror.zip")):  # a mirror of the same digest: same cap
        with pytest.raises(DownloadError, match=f"larger than the {len(GOOD_ZIP):,} bytes"):
            fetch("ml-100k", cache, url=url, progress=False)
        assert listing(cache) == []
    server.routes["/registry.zip"] = (200, GOOD_ZIP, OMIT)  # the right size: fine
    assert (fetch("ml-100k", cache, progress=False) / "u.data").read_bytes() == U_DATA


def test_response_longer_than_its_content_length_is_cut(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "MAX_ARCHIVE_BYTES", 10_000)
    server.routes["/z"] = (200, b"x" * 20_000, OMIT)  # unknown archive, no length: the cap
    with pytest.raises(DownloadError, match="larger than the 10,000 bytes"):
        fetch("other", tmp_path, url=server.url("/z"), sha256="0" * 64, progress=False)
    assert listing(tmp_path) == []


def test_zip_bomb_is_refused(tmp_path, monkeypatch):
    assert download.extraction_limit(285_000) < 201_000_000  # the 285 KB -> 201 MB
    monkeypatch.setattr(download, "MIN_EXTRACTION_LIMIT", 1 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ml-100k/u.data", U_DATA)
        archive.writestr("ml-100k/zeros", b"\0" * (3 << 20))
    payload = buffer.getvalue()
    assert len(payload) < 20_000  # 3 MiB of zeros deflate to a few KB
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(payload)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="zip bomb"):
        fetch("ml-100k", cache, url=archive.as_uri(), sha256=sha(payload), progress=False)
    assert listing(cache) == []


def test_progress_reports_bytes_and_total(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, "CHUNK_SIZE", 16)  # many chunks => intermediate reports
    server.routes["/z"] = (200, GOOD_ZIP, None)
    fetch("ml-100k", tmp_path, url=server.url("/z"), sha256=sha(GOOD_ZIP), progress=True)
    lines = capsys.readouterr().err.splitlines()
    total = f"{len(GOOD_ZIP):,}"
    assert lines[-1] == f"ml-100k: {total}/{total} bytes (100%)"
    pattern = rf"ml-100k: [\d,]+/{total} bytes \([1-9]\d?%\)"
    partial = [line for line in lines if re.fullmatch(pattern, line)]
    assert partial, lines  # streamed: progress was reported before the end


def test_checksum_mismatch_names_both_digests_and_leaves_nothing(server, tmp_path):
    server.routes["/ml-100k.zip"] = (200, GOOD_ZIP, None)
    cache = tmp_path / "cache"
    wrong = "0" * 64

    with pytest.raises(DownloadError) as info:
        fetch("ml-100k", cache, url=server.url("/ml-100k.zip"), sha256=wrong, progress=False)

    message = str(info.value)
    assert wrong in message and sha(GOOD_ZIP) in message
    assert info.value.expected == wrong and info.value.actual == sha(GOOD_ZIP)
    assert listing(cache) == []


def test_registry_digest_is_enforced_by_default(server, tmp_path):
    # No sha256 override: the registry digest applies and our fake archive must be rejected.
    server.routes["/ml-1m.zip"] = (200, GOOD_ZIP, None)
    with pytest.raises(DownloadError, match=DATASETS["ml-1m"].sha256):
        fetch("ml-1m", tmp_path, url=server.url("/ml-1m.zip"), progress=False)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "route, pattern",
    [
        ((404, b"nope", None), r"HTTP 404"),
        ((500, b"boom", None), r"HTTP 500"),
        ((200, GOOD_ZIP[: len(GOOD_ZIP) // 2], len(GOOD_ZIP)), r"truncated"),
    ],
    ids=["404", "500", "truncated"],
)
def test_http_failures_leave_nothing(server, tmp_path, route, pattern):
    server.routes["/ml-100k.zip"] = route
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=pattern):
        fetch("ml-100k", cache, url=server.url("/ml-100k.zip"), sha256=sha(GOOD_ZIP),
              progress=False)
    assert listing(cache) == []


def test_connection_refused_leaves_nothing(tmp_path, closed_port_url):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="cannot reach") as info:
        fetch("ml-100k", cache, url=closed_port_url, sha256=sha(GOOD_ZIP), progress=False)
    assert info.value.network is True
    assert listing(cache) == []


@pytest.mark.parametrize(
    "entries, symlinks, pattern",
    [
        ({"ml-100k/u.data": U_DATA, "../evil.txt": b"pwned"}, None, "escapes"),
        ({"ml-100k/u.data": U_DATA, "ml-100k/../../evil.txt": b"pwned"}, None, "escapes"),
        ({"ml-100k/u.data": U_DATA, "{ABS}": b"pwned"}, None, "absolute"),
        ({"ml-100k/u.data": U_DATA}, {"ml-100k/link": "../../evil.txt"}, "symlink"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink"],
)
def test_unsafe_zip_entries_are_refused(tmp_path, entries, symlinks, pattern):
    absolute_target = tmp_path / "abs-evil.txt"  # "{ABS}" entry: an absolute path under tmp_path
    entries = {(str(absolute_target) if k == "{ABS}" else k): v for k, v in entries.items()}
    payload = make_zip(entries, symlinks)
    archive = tmp_path / "src" / "ml-100k.zip"
    archive.parent.mkdir()
    archive.write_bytes(payload)
    work = tmp_path / "work"
    cache = work / "cache"

    with pytest.raises(DownloadError, match=pattern):
        fetch("ml-100k", cache, url=archive.as_uri(), sha256=sha(payload), progress=False)

    assert listing(cache) == []  # no zip, no temp, not even u.data from the safe entry
    assert listing(work) == ["cache"]  # nothing escaped next to the cache either
    assert not (tmp_path / "evil.txt").exists()
    assert not absolute_target.exists()


def test_corrupt_zip_is_refused(tmp_path):
    payload = b"PK\x03\x04 definitely not a zip"
    archive = tmp_path / "bad.zip"
    archive.write_bytes(payload)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="not a valid zip"):
        fetch("ml-100k", cache, url=archive.as_uri(), sha256=sha(payload), progress=False)
    assert listing(cache) == []


# ---------------------------------------------------------------------------------------------


def test_registry_entries():
    assert set(DATASETS) == {"ml-100k", "ml-1m", "ml-latest-small", "ml-25m"}
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert spec.sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", spec.sha256), name
        assert spec.folder == name
    assert len({spec.sha256 for spec in DATASETS.values()}) == len(DATASETS)


def test_missing_digest_refuses_without_override(server, tmp_path, monkeypatch):
    server.routes["/ml-100k.zip"] = (200, GOOD_ZIP, None)
    entry = DATASETS["ml-100k"]
    monkeypatch.setitem(DATASETS, "ml-100k", download.Dataset(
        entry.name, entry.url, None, entry.folder, entry.size))

    with pytest.raises(DownloadError, match="--sha256"):
        fetch("ml-100k", tmp_path / "cache", url=server.url("/ml-100k.zip"), progress=False)
    assert server.requests == []  # refused before any network access
    assert listing(tmp_path / "cache") == []

    path = fetch("ml-100k", tmp_path / "cache", url=server.url("/ml-100k.zip"),
                 sha256=sha(GOOD_ZIP), progress=False)
    assert (path / "u.data").read_bytes() == U_DATA


def test_bad_names_and_digests_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown MovieLens dataset"):
        fetch("ml-999k", tmp_path, progress=False)
    with pytest.raises(ValueError, match="invalid dataset name"):
        fetch("../ml-100k", tmp_path, url="file:///nonexistent", sha256="0" * 64)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        fetch("ml-100k", tmp_path, sha256="abc")
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------------


def test_resolve_data_dir_prefers_existing_dir(tmp_path):
    assert resolve_data_dir(tmp_path, dataset="ml-100k") == tmp_path
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        resolve_data_dir(tmp_path / "missing")
    with pytest.raises(ValueError, match="--data-dir"):
        resolve_data_dir()


def test_resolve_data_dir_without_network_names_data_dir(tmp_path, closed_port_url):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        resolve_data_dir(dataset="ml-100k", cache_dir=cache, url=closed_port_url,
                         sha256=sha(GOOD_ZIP), progress=False)
    message = str(info.value)
    assert "--data-dir" in message
    assert "failed" in message and closed_port_url in message
    assert "offline" in message
    assert listing(cache) == []


def test_resolve_data_dir_downloads_dataset(server, tmp_path):
    server.routes["/z"] = (200, GOOD_ZIP, None)
    path = resolve_data_dir(dataset="ml-100k", cache_dir=tmp_path, url=server.url("/z"),
                            sha256=sha(GOOD_ZIP), progress=False)
    assert (path / "u.data").read_bytes() == U_DATA


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MOVIELENS_CACHE", str(tmp_path / "mlc"))
    assert download.default_cache_dir() == tmp_path / "mlc"
    monkeypatch.delenv("MOVIELENS_CACHE")
    assert download.default_cache_dir() == Path.home() / ".cache" / "movielens"


def test_cli_prints_extracted_path(tmp_path, capsys):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(GOOD_ZIP)
    cache = tmp_path / "cache"
    rc = download.main(["ml-100k", "--cache-dir", str(cache), "--url", archive.as_uri(),
                        "--sha256", sha(GOOD_ZIP), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out.strip() == str(cache / "ml-100k")
    assert err == ""

    rc = download.main(["ml-1m", "--cache-dir", str(cache), "--url", archive.as_uri(), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert "expected " + DATASETS["ml-1m"].sha256 in err
