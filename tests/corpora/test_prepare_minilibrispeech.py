"""MiniLibriSpeech preparation on small local archives: layout, lists, resume, checksums, unsafe members."""
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpc.data.listing import findAllSeqs
from cpc.corpora import minilibrispeech as prep

SPEAKERS = {"train-clean-5": ("19", "32"), "dev-clean-2": ("84",)}


def flac_bytes(seed: int, n_samples: int = 1600) -> bytes:
    buffer = io.BytesIO()
    audio = np.random.default_rng(seed).uniform(-0.3, 0.3, n_samples).astype(np.float32)
    sf.write(buffer, audio, 16000, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def subset_tar(subset: str) -> bytes:
    members = {"LibriSpeech/README.TXT": b"mini\n"}
    for speaker in SPEAKERS[subset]:
        for utt in range(12):
            members[f"LibriSpeech/{subset}/{speaker}/100/{speaker}-100-{utt:04d}.flac"] = flac_bytes(utt)
    return make_tar(members)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A directory holding both archives, and their md5 table."""
    root = tmp_path_factory.mktemp("mirror")
    checksums = {}
    for subset in SPEAKERS:
        data = subset_tar(subset)
        (root / f"{subset}.tar.gz").write_bytes(data)
        checksums[f"{subset}.tar.gz"] = hashlib.md5(data).hexdigest()
    return root, checksums


def test_prepares_the_layout_and_lists(mirror, tmp_path, capsys, monkeypatch):
    root, checksums = mirror
    monkeypatch.setattr(prep, "MD5", checksums)
    assert prep.main([str(tmp_path / "out"), "--base-url", root.as_uri()]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "LibriSpeech").iterdir()) == ["19", "32", "84"]
    seqs, speakers = findAllSeqs(out / "LibriSpeech")
    assert sorted(speakers) == ["19", "32", "84"] and len(seqs) == 36
    train = (out / "train_split.txt").read_text().split()
    assert len(train) == 24 and train[0] == "19-100-0000" and not any(s.startswith("84-") for s in train)
    assert (out / "val_split.txt").read_text().split() == [f"84-100-{u:04d}" for u in range(12)]
    spk_train, spk_val = ((out / f"speaker_{x}_split.txt").read_text().split() for x in ("train", "val"))
    assert spk_val == ["19-100-0009", "32-100-0009"] and sorted(spk_train + spk_val) == sorted(train)
    printed = capsys.readouterr().out
    assert f"--pathDB {out / 'LibriSpeech'}" in printed and "train_split.txt" in printed
    assert not list(out.glob(".staging-*"))
    assert prep.prepare(out, root.as_uri(), checksums) == out / "LibriSpeech"  # a rerun is a no-op


def test_file_download_resumes_by_offset(mirror, tmp_path):
    root, checksums = mirror
    data = (root / "train-clean-5.tar.gz").read_bytes()
    target = tmp_path / "train-clean-5.tar.gz"
    (tmp_path / "train-clean-5.tar.gz.partial").write_bytes(data[:1000])
    fetched = prep.download((root / "train-clean-5.tar.gz").as_uri(), target, checksums["train-clean-5.tar.gz"])
    assert fetched == len(data) - 1000 and target.read_bytes() == data
    assert not (tmp_path / "train-clean-5.tar.gz.partial").exists()
    assert prep.download((root / "missing.tar.gz").as_uri(), target, checksums["train-clean-5.tar.gz"]) == 0


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes), honouring ``Range: bytes=N-`` unless ``ignore_range``."""

    files: dict[str, bytes] = {}
    ignore_range = False

    def do_GET(self):  # noqa: N802 (http.server's naming)
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range") and not self.ignore_range:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("ignore_range", [False, True])
def test_http_download_resumes_with_range_requests(mirror, tmp_path, ignore_range):
    root, checksums = mirror
    data = (root / "dev-clean-2.tar.gz").read_bytes()
    handler = type("Handler", (RangeHandler,), {"files": {"/dev-clean-2.tar.gz": data},
                                                "ignore_range": ignore_range})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dev-clean-2.tar.gz"
        target = tmp_path / "dev-clean-2.tar.gz"
        (tmp_path / "dev-clean-2.tar.gz.partial").write_bytes(data[:777])
        fetched = prep.download(url, target, checksums["dev-clean-2.tar.gz"])
        assert fetched == (len(data) if ignore_range else len(data) - 777) and target.read_bytes() == data
        target.rename(tmp_path / "dev-clean-2.tar.gz.partial")  # complete but not yet renamed: HTTP 416
        assert prep.download(url, target, checksums["dev-clean-2.tar.gz"]) == (len(data) if ignore_range else 0)
        with pytest.raises(prep.PrepareError, match="HTTP 404"):
            prep.download(url.replace("dev", "nope"), tmp_path / "x.tar.gz", "0" * 32)
    finally:
        server.shutdown()
        server.server_close()


def test_checksum_mismatch_deletes_the_download(mirror, tmp_path, monkeypatch):
    root, checksums = mirror
    monkeypatch.setattr(prep, "MD5", {**checksums, "train-clean-5.tar.gz": "0" * 32})
    with pytest.raises(prep.PrepareError, match="checksum mismatch .*expected 0000"):
        prep.prepare(tmp_path, root.as_uri())
    assert not list((tmp_path / "downloads").iterdir()) and not (tmp_path / "LibriSpeech").exists()
    assert prep.main([str(tmp_path), "--base-url", root.as_uri()]) == 2


@pytest.mark.parametrize("members,links", [
    ({"LibriSpeech/train-clean-5/../../../evil.txt": b"x"}, None),
    ({"/tmp/evil.txt": b"x"}, None),
    ({}, {"LibriSpeech/train-clean-5/19/link": "../../../../../evil.txt"}),
])
def test_members_escaping_the_output_are_refused(tmp_path, members, links):
    data = make_tar({"LibriSpeech/train-clean-5/19/100/19-100-0000.flac": flac_bytes(0), **members}, links)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "train-clean-5.tar.gz").write_bytes(data)
    checksums = {"train-clean-5.tar.gz": hashlib.md5(data).hexdigest(), "dev-clean-2.tar.gz": "0" * 32}
    with pytest.raises(prep.PrepareError, match="outside"):
        prep.prepare(tmp_path / "out", mirror.as_uri(), checksums)
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    # nothing unpacked, no empty staging folder left: only the verified download stays
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")) \
        == ["downloads", "downloads/train-clean-5.tar.gz"]


def test_refused_unpack_removes_only_the_folders_it_created(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(make_tar({"ok/a.txt": b"x", "../evil.txt": b"x"}))
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("mine\n")
    with pytest.raises(prep.PrepareError, match="outside"):
        prep.unpack(archive, tmp_path / "existing" / "new" / "deeper")
    assert sorted(p.name for p in (tmp_path / "existing").iterdir()) == ["keep.txt"]
    with pytest.raises(prep.PrepareError, match="outside"):
        prep.unpack(archive, tmp_path / "existing")
    assert sorted(p.name for p in (tmp_path / "existing").iterdir()) == ["keep.txt"]
