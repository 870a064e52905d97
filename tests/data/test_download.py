"""``cncnn data download`` and ``cncnn data verify`` against a local HTTP server: resume, checksums, safe extraction."""
from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from cncnn_cli.cli.main import main
from cncnn_cli.data.dataset import dataset_class
from cncnn_cli.data.download import Archive
from tests.helpers import datasets as fixtures
from tests.helpers.configs import TINY

#: The real socket functions, saved before conftest's fixture refuses every connection.
REAL_CONNECT = socket.socket.connect
REAL_CREATE_CONNECTION = socket.create_connection
NAME = "CUB_200_2011.tgz"


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (URL path -> bytes) with Range support; records each request's Range header.

    ``cut_after``: the first response stops after that many bytes and closes the connection.
    ``ignore_range``: always answer 200 with the whole file, as some mirrors do.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files
        self.ranges: list[str | None] = []
        self.cut_after: int | None = None
        self.ignore_range = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        data = self.server.files.get(self.path.split("?")[0])
        wanted = self.headers.get("Range")
        self.server.ranges.append(wanted)
        if data is None:
            self.send_error(404)
            return
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted and not self.server.ignore_range else 0
        if start >= len(data) > 0:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            body, self.server.cut_after = body[: self.server.cut_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def loopback(monkeypatch, _seed_and_no_network):
    """Allow connections to 127.0.0.1 only; every other address is still refused."""

    def allowed(address) -> bool:
        return isinstance(address, tuple) and address[0] == "127.0.0.1"

    def connect(sock, address):
        if not allowed(address):
            raise OSError("tests must not touch the network")
        return REAL_CONNECT(sock, address)

    def create_connection(address, *args, **kwargs):
        if not allowed(address):
            raise OSError("tests must not touch the network")
        return REAL_CREATE_CONNECTION(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)


def _tgz(members: list[tuple[tarfile.TarInfo, bytes | None]] | None = None, tree: Path | None = None) -> bytes:
    """A gzipped tar of ``tree`` (under its own name) and/or the hand-made ``members``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if tree is not None:
            tar.add(tree, arcname=tree.name)
        for info, data in members or []:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _sum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def cub_tgz(tmp_path_factory) -> bytes:
    """A tiny CUB-200-2011 in its published layout, as CUB_200_2011.tgz."""
    return _tgz(tree=fixtures.make_cub(tmp_path_factory.mktemp("cub")))


@pytest.fixture
def server(loopback, cub_tgz):
    server = Server({f"/{NAME}": cub_tgz})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def published(monkeypatch, server, cub_tgz):
    """CUB's published archive pointed at the local server, with the tiny archive's sum."""
    archive = Archive(NAME, server.url(f"/{NAME}"), len(cub_tgz), _sum(cub_tgz))
    monkeypatch.setattr(dataset_class("cub"), "archives", (archive,))
    return archive


def _download(root: Path, *extra: str) -> int:
    return main(["data", "download", "cub", "--root", str(root), *extra])


def test_a_verified_download_is_extracted_and_checked(tmp_path, published, server, capsys):
    assert _download(tmp_path / "data") == 0
    captured = capsys.readouterr()
    assert (tmp_path / "data" / "CUB_200_2011" / "images.txt").is_file()
    assert "cub" in captured.out and "OK" in captured.out  # the data check summary, on stdout
    assert NAME not in captured.out  # stdout holds the summary only; progress is on stderr
    assert not list((tmp_path / "data").glob("*.part")) and not list((tmp_path / "data").glob("*.extracting"))
    assert server.ranges == [None]


def test_an_interrupted_download_resumes_from_the_part_file(tmp_path, published, server, cub_tgz, capsys):
    server.cut_after = 1000
    assert _download(tmp_path / "data") == 1
    err = capsys.readouterr().err
    assert "interrupted at 1,000" in err and "again to resume" in err
    assert (tmp_path / "data" / f"{NAME}.part").stat().st_size == 1000
    assert not (tmp_path / "data" / "CUB_200_2011").exists()
    assert _download(tmp_path / "data") == 0
    assert server.ranges == [None, "bytes=1000-"]
    assert (tmp_path / "data" / NAME).read_bytes() == cub_tgz
    assert (tmp_path / "data" / "CUB_200_2011" / "images.txt").is_file()


def test_a_server_that_ignores_range_gets_a_clean_restart(tmp_path, published, server, cub_tgz, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / f"{NAME}.part").write_bytes(b"stale bytes from another file")
    server.ignore_range = True
    assert _download(tmp_path / "data") == 0
    assert "starting over" in capsys.readouterr().err
    assert server.ranges == ["bytes=29-"]
    assert (tmp_path / "data" / NAME).read_bytes() == cub_tgz


def test_a_part_file_that_is_already_whole_is_kept(tmp_path, published, server, cub_tgz):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / f"{NAME}.part").write_bytes(cub_tgz)
    assert _download(tmp_path / "data") == 0
    assert server.ranges == [f"bytes={len(cub_tgz)}-"]  # answered 416: nothing left to send
    assert (tmp_path / "data" / "CUB_200_2011" / "images.txt").is_file()


def test_a_truncated_archive_is_refused_naming_both_sums(tmp_path, published, server, cub_tgz, capsys):
    truncated = cub_tgz[: len(cub_tgz) // 2]
    server.files[f"/{NAME}"] = truncated
    assert _download(tmp_path / "data") == 1
    err = capsys.readouterr().err
    assert f"sha256 {_sum(truncated)}, expected {published.sha256}" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []  # deleted, nothing extracted


@pytest.mark.parametrize("member", ["dotdot", "symlink"])
def test_members_escaping_the_root_are_refused(tmp_path, server, member, capsys):
    if member == "dotdot":
        info = tarfile.TarInfo("CUB_200_2011/../../../escaped.txt")
        info.size = 4
        evil = _tgz([(info, b"evil")])
    else:
        info = tarfile.TarInfo("CUB_200_2011/link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../escaped.txt"
        evil = _tgz([(info, None)])
    server.files[f"/{NAME}"] = evil
    assert _download(tmp_path / "data", "--from", server.url(f"/{NAME}"), "--sha256", _sum(evil)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and f"refused to extract, its member {info.name!r} " in error
    assert f"outside {tmp_path / 'data'};" in error and ".extracting" not in error  # the user's root, not the temporary one
    assert not (tmp_path / "escaped.txt").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == [NAME]  # no folder, no temporary folder


def test_a_file_that_is_not_a_tar_archive_is_bad_input_in_one_line(tmp_path, server, capsys):
    local = tmp_path / NAME
    local.write_bytes(b"<html>a mirror's error page</html>")
    assert _download(tmp_path / "data", "--from", str(local), "--sha256", _sum(local.read_bytes())) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == (f"error: {local}: not a tar archive (.tar, .tgz, .tar.gz, .tar.bz2 or .tar.xz); "
                                    "pass the dataset's published archive; nothing was extracted")
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_from_a_local_file_is_verified_and_used_in_place(tmp_path, published, server, cub_tgz, capsys):
    local = tmp_path / "Downloads" / NAME
    local.parent.mkdir()
    local.write_bytes(cub_tgz)
    assert _download(tmp_path / "data", "--from", str(local)) == 0
    assert (tmp_path / "data" / "CUB_200_2011" / "classes.txt").is_file()
    assert server.ranges == [] and not (tmp_path / "data" / NAME).exists()
    local.write_bytes(cub_tgz[:-10])
    assert _download(tmp_path / "other", "--from", str(local)) == 2
    assert f"expected {published.sha256}" in capsys.readouterr().err and local.exists()


def test_already_downloaded_fetches_nothing(tmp_path, published, server, capsys):
    assert _download(tmp_path / "data") == 0
    assert _download(tmp_path / "data") == 0
    assert "already downloaded, verified and extracted" in capsys.readouterr().err
    assert server.ranges == [None]


def test_sha256_overrides_the_published_sum_and_says_so(tmp_path, server, cub_tgz, capsys):
    url = server.url(f"/{NAME}")
    assert _download(tmp_path / "data", "--from", url) == 1  # CUB's real sum is not the tiny archive's
    assert dataset_class("cub").archives[0].sha256 in capsys.readouterr().err
    assert _download(tmp_path / "data", "--from", url, "--sha256", _sum(cub_tgz).upper()) == 0
    err = capsys.readouterr().err
    assert f"checking {NAME} against {_sum(cub_tgz)}, not the published" in err
    assert (tmp_path / "data" / "CUB_200_2011" / "images.txt").is_file()
    assert _download(tmp_path / "data", "--sha256", "abc") == 2
    assert "64 hexadecimal digits" in capsys.readouterr().err


def test_cars_has_no_download_but_its_files_can_be_verified(tmp_path, monkeypatch, capsys):
    assert main(["data", "download", "cars"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Stanford Cars has no official download") and len(err.strip().splitlines()) == 2
    assert "cncnn data verify cars" in err
    good, bad, other = tmp_path / "cars_devkit_copy.tgz", tmp_path / "car_devkit.tgz", tmp_path / "x.mat"
    good.write_bytes(b"devkit")
    bad.write_bytes(b"altered devkit")
    other.write_bytes(b"other")
    published = (Archive("car_devkit.tgz", None, 6, _sum(b"devkit")),)
    monkeypatch.setattr(dataset_class("cars"), "archives", published)
    assert main(["data", "verify", "cars", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"OK        {good}: car_devkit.tgz")
    assert main(["data", "verify", "cars", str(good), str(bad), str(other)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (f"MISMATCH  {bad}: sha256 {_sum(b'altered devkit')}, published {_sum(b'devkit')} "
                      "for car_devkit.tgz; 14 bytes, published 6")
    assert out[2].startswith(f"UNKNOWN   {other}")
    assert main(["data", "verify", "cars", str(tmp_path / "missing.tgz")]) == 2


def test_the_published_cars_sums_are_tfds_ones():
    archives = {archive.name: archive for archive in dataset_class("cars").archives}
    assert archives["car_devkit.tgz"].sha256 == "b97deb463af7d58b6bfaa18b2a4de9829f0f79e8ce663dfa9261bf7810e9accd"
    assert set(archives) == {"cars_train.tgz", "cars_test.tgz", "car_devkit.tgz", "cars_test_annos_withlabels.mat"}
    assert all(archive.url is None for archive in archives.values())


@pytest.mark.slow
def test_download_then_train(tmp_path, server, cub_tgz, capsys):
    url = server.url(f"/{NAME}")
    assert _download(tmp_path / "data", "--from", url, "--sha256", _sum(cub_tgz)) == 0
    assert main(["train", "cub", "--data-root", str(tmp_path / "data"), "--work-dir", str(tmp_path / "run"),
                 *TINY, "--epochs", "1", "--batch-size", "2"]) == 0
    assert (tmp_path / "run" / "last.safetensors").is_file()
