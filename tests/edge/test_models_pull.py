"""`edge models pull` against a local HTTP server with Range support that serves archives built here from
../shared/models, laid out like the publishers' archives: resumed after an interruption, a wrong checksum
refused, a server that is gone reported in one line, hostile archives refused. No test reaches the internet
(EDGE_ZOO_URL points every download at the local server)."""
from __future__ import annotations

import io
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge.zoo import BASE_URL_ENV, DownloadError, ZooError, download, load, pull, resolve_sources
from edge.zoo.catalog import url_file_name

from ..conftest import run_cli

SKIP_IN_ARCHIVE = ("model.onnx", "ppocr_keys_v1.txt")   # the trained ONNX original; the rec dict is served apart


class ArchiveServer:
    """http.server in a thread: whole files (200), `Range: bytes=N-` (206, 416), and cut-off answers."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests, self.cut = dict(files), [], {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start, status = int(match.group(1)), 206
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.cut.pop(name, None)
                self.wfile.write(data[start:start + cut] if cut is not None else data[start:])
                if cut is not None:                      # drop the connection in the middle of the body
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/zoo"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def asked(self, name: str) -> list[str | None]:
        return [rng for got, rng in self.requests if got == name]


def _archive(fixture: Path, top: str, as_zip: bool, drop: tuple[str, ...]) -> bytes:
    """The fixture export as the publisher packs it: one top folder, legacy program + weights + metadata."""
    files = [p for p in sorted(fixture.iterdir()) if p.is_file() and p.name not in SKIP_IN_ARCHIVE + drop]
    buffer = io.BytesIO()
    if as_zip:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, f"{top}/{path.name}")
    else:
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in files:
                tar.add(path, f"{top}/{path.name}")
    return buffer.getvalue()


def zoo_files(shared_dir: Path) -> dict[str, bytes]:
    """Every zoo entry's archive from its fixture; where the zoo ships a metadata template, the archive leaves
    the metadata file out, as the publishers' older archives do."""
    files = {}
    for name, model in load().models.items():
        file_name = model.file_name
        top = re.sub(r"\.(tar|zip|tgz)$", "", file_name)
        drop = ("inference.yml",) if model.metadata else ()
        files[file_name] = _archive(shared_dir / "models" / model.fixture, top, file_name.endswith(".zip"), drop)
        for extra in model.files:
            files[extra.name] = (shared_dir / "models" / model.fixture / extra.name).read_bytes()
    return files


@pytest.fixture
def zoo(shared_dir, tmp_path, monkeypatch):
    server = ArchiveServer(zoo_files(shared_dir))
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(BASE_URL_ENV, server.url)
    yield server
    server.stop()



def test_every_zoo_model_pulls_into_an_export_the_converter_reads(zoo, shared_dir, capsys):
    from converters.sources import load_source

    code, out, err = run_cli(["models", "pull", "ppocrv4", "picodet-s-320-coco", "picodet-layout-cdla",
                              "pplcnet-doc-orientation", "tinypose-128x96", "humanseg-lite-portrait"], capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 8 and all(" pulled " in line for line in out.splitlines()), out
    assert "ch_PP-OCRv4_rec_infer.tar:" in err and "(100%)" in err        # progress on stderr
    expected = {"ppocrv4-det": ("det", None), "ppocr-cls-v2": ("cls", ["0", "180"]), "ppocrv4-rec": ("rec", None),
                "pplcnet-doc-orientation": ("classifier", ["0", "90", "180", "270"])}
    for name, model in load().models.items():
        folder = pull(name).folder                                # cached now: no new request
        fixture = shared_dir / "models" / model.fixture
        for weights in fixture.glob("*.pdiparams"):
            assert (folder / weights.name).read_bytes() == weights.read_bytes(), name
        spec = load_source(folder).spec                           # metadata found, parsed like any export
        if name in expected:
            role, labels = expected[name]
            assert (spec.role, spec.labels) == (role, labels), name
    rec = load_source(pull("ppocrv4-rec").folder).spec
    assert len(rec.files["rec_dict.txt"].splitlines()) == 6623       # the dictionary came as an extra file
    assert sum(1 for name, _ in zoo.requests if name.endswith((".tar", ".zip"))) == 8


def test_interrupted_download_resumes_with_a_range_request(zoo, tmp_path):
    name = "ch_PP-OCRv4_det_infer.tar"
    data = zoo.files[name]
    url, dest = f"{zoo.url}/{name}", tmp_path / "dl" / name
    zoo.cut[name] = 1_000_000
    with pytest.raises(DownloadError) as failed:
        download(url, dest, retries=0)
    assert re.fullmatch(rf"{re.escape(url)}: interrupted at 1\.0 MB of {len(data) / 1e6:.1f} MB \(.+\); "
                        r"run the same command again to resume", str(failed.value)), failed.value
    assert not dest.exists() and dest.with_name(name + ".part").stat().st_size == 1_000_000
    result = download(url, dest)
    assert result.resumed_from == 1_000_000 and dest.read_bytes() == data
    assert zoo.asked(name) == [None, "bytes=1000000-"]

    zoo.cut["ch_PP-OCRv4_rec_infer.tar"] = 3_000_000          # inside one pull: resumed on its own
    folder = pull("ppocrv4-rec").folder
    assert zoo.asked("ch_PP-OCRv4_rec_infer.tar") == [None, "bytes=3000000-"]
    assert (folder / "inference.pdiparams").stat().st_size == 10_766_823


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(zoo, tmp_path, shared_dir, capsys):
    name = "ch_ppocr_mobile_v2.0_cls_infer.tar"
    dest = tmp_path / "dl" / name
    with pytest.raises(DownloadError, match="does not match the published"):
        download(f"{zoo.url}/{name}", dest, sha256="0" * 64)
    assert not dest.exists() and not dest.with_name(name + ".part").exists()

    first = pull("ppocr-cls-v2")
    assert first.check == "sha256 pinned on this first download"
    data = bytearray(zoo.files[name])
    data[len(data) // 2] ^= 0xFF                                    # the publisher's file changes by one byte
    zoo.files[name] = bytes(data)
    code, out, err = run_cli(["models", "pull", "ppocr-cls-v2", "--force", "--quiet"], capsys)
    assert code == 2 and out == ""
    assert re.fullmatch(r"edge models: error: ppocr-cls-v2: the file from \S+ has sha256 \w+\.\.\., not the "
                        r"\w+\.\.\. pinned on .+; refused \(.+pins\.json\)\n", err), err
    assert (first.folder / "inference.pdmodel").is_file()                 # the unpacked export is untouched
    assert not (first.folder.parent.parent / "archives" / name).exists()  # the refused file is not cached


def test_server_gone_is_one_line(zoo, tmp_path, capsys):
    name = "tinypose_128x96.tar"
    dest = tmp_path / "dl" / name
    zoo.cut[name] = 500_000
    with pytest.raises(DownloadError):
        download(f"{zoo.url}/{name}", dest, retries=0)
    zoo.stop()
    with pytest.raises(DownloadError) as gone:
        download(f"{zoo.url}/{name}", dest)
    host = zoo.url.split("/")[2]
    assert str(gone.value) == (f"cannot reach {host} ([Errno 111] Connection refused): offline, or the server "
                               "is gone; the 0.5 MB already downloaded are kept and the next try resumes")
    code, out, err = run_cli(["models", "pull", "tinypose-128x96"], capsys)
    assert code == 2 and out == ""
    assert err == (f"edge models: error: cannot reach {host} ([Errno 111] Connection refused): offline, or the "
                   "server is gone\n")


def test_a_hostile_archive_from_the_server_is_refused(zoo, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("ch_PP-OCRv4_det_infer/../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    zoo.files["ch_PP-OCRv4_det_infer.tar"] = buffer.getvalue()
    with pytest.raises(Exception, match=r"climbs out with '\.\.'; refused"):
        pull("ppocrv4-det")
    cache = tmp_path / "cache"
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (cache / "zoo" / "models" / "ppocrv4-det").exists()


def test_convert_sources_resolve_zoo_names_and_keep_paths(zoo, tmp_path):
    folder = tmp_path / "my-export"
    folder.mkdir()
    resolved = resolve_sources(["ppocrv4", str(folder), "no-such-thing"])
    zoo_models = Path(resolved[0]).parent
    assert resolved == [str(zoo_models / "ppocrv4-det"), str(zoo_models / "ppocr-cls-v2"),
                        str(zoo_models / "ppocrv4-rec"), str(folder), "no-such-thing"]
    with pytest.raises(ZooError, match="no model 'nope' in the zoo"):
        pull("nope")


def test_zoo_table_names_real_upstream_files():
    catalog = load()
    assert {m.family for m in catalog.models.values()} == {"PP-PicoDet", "PP-LCNet", "PP-OCR", "PP-TinyPose",
                                                           "PP-HumanSeg-Lite"}
    for name, model in catalog.models.items():
        assert model.url.startswith("https://") and url_file_name(model.url).endswith((".tar", ".zip")), name
