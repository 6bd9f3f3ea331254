"""Keys, signed `.edgepkg` packages and their safe installation, on a real bundle (PP-HumanSeg-Lite converted
to FP32 ONNX here). Every refused package (tampered, truncated, unsigned, untrusted, wrongly signed, hostile
paths, archive bombs) gives one line and leaves what is installed exactly as it was."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from edge.packaging import (Limits, PackageError, UnsafeArchive, build_package, extract_archive, generate,
                            install_package, verify_package)
from edge.packaging.keys import load_trusted
from edge.packaging.package import BUNDLE_PREFIX, MANIFEST_MEMBER, PackageFile, PackageManifest, Signature
from runtimes.bundle import Bundle

from ..conftest import convert_bundle, run_cli, write_fp32_profile


@pytest.fixture(scope="module")
def bundle(shared_dir, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("seg")
    calib = work / "calib"
    calib.mkdir()
    for image in ("seg_humanseg_demo.jpg", "seg_web_human.png", "lite_human.jpg"):
        (calib / image).write_bytes((shared_dir / "images" / image).read_bytes())
    export = shared_dir / "models" / "PP-HumanSeg-Lite" / "pp_humanseg_lite_portrait_398x224"
    return convert_bundle(work / "bundle", [export], write_fp32_profile(work), calib)


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    return generate("operator", folder), generate("stranger", tmp_path / "other-keys"), folder



def tree(root: Path) -> dict[str, str]:
    """Every path under root with the sha256 of files: what 'nothing changed' is checked against."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def members(pkg: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(pkg, "r:gz") as tar:
        return [(info, tar.extractfile(info).read() if info.isreg() else b"") for info in tar]


def write_members(pkg: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(pkg, "w:gz") as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return pkg


def signed(manifest: PackageManifest, pair) -> PackageManifest:
    value = base64.b64encode(pair.private.sign(manifest.signed_bytes())).decode()
    manifest.signature = Signature(key_id=pair.id, value=value)
    return manifest


def hostile_package(path: Path, pair, entries: list[tuple[tarfile.TarInfo, bytes]], listed=None) -> Path:
    """A package signed by a trusted key whose archive carries `entries` (what an attacker with a stolen key,
    or a buggy packer, could send): the installer must still refuse anything unsafe."""
    listed = listed if listed is not None else [
        PackageFile(path=i.name[len(BUNDLE_PREFIX):], bytes=len(d), sha256=hashlib.sha256(d).hexdigest())
        for i, d in entries if i.isreg()]
    manifest = signed(PackageManifest(name="evil", version="1", created="2026-01-01T00:00:00+00:00",
                                      pipeline="evil", task="segmentation", files=listed), pair)
    text = manifest.model_dump_json().encode()
    head = tarfile.TarInfo(MANIFEST_MEMBER)
    return write_members(path, [(head, text)] + entries)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def test_keys_generate_and_show(tmp_path, capsys):
    folder = tmp_path / "keys"
    code, out, err = run_cli(["keys", "generate", "--dir", str(folder)], capsys)
    assert code == 0, err
    private, public = folder / "default.key", folder / "default.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("ssh-ed25519 ") and public.read_text().rstrip().endswith(" edge:default")
    key_id = next(iter(load_trusted([public])))
    assert out.splitlines()[0] == f"key default: id {key_id} (new)"
    code, out, err = run_cli(["keys", "generate", "--dir", str(folder)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "already exists" in err
    code, out, err = run_cli(["keys", "show", "--dir", str(folder)], capsys)
    assert code == 0 and out.splitlines()[0] == f"key default: id {key_id}"
    assert public.read_text().strip() in out


def test_package_verify_and_install_a_real_bundle(bundle, keys, tmp_path, capsys):
    operator, _, trusted = keys
    pkg = tmp_path / "seg.edgepkg"
    code, out, err = run_cli(["package", str(bundle), "-o", str(pkg), "--key", str(operator.private_path)], capsys)
    assert code == 0, err
    assert out.startswith(f"package written: {pkg} (") and f"signed by key {operator.id})" in out
    code, out, err = run_cli(["verify", str(pkg), "--trusted", str(trusted)], capsys)
    assert code == 0 and out.startswith(f"ok: {pkg}: ") and f"signed by trusted key {operator.id}" in out

    root = tmp_path / "opt" / "bundles"
    installed = install_package(pkg, root, trusted)
    manifest = verify_package(pkg, trusted).manifest
    assert installed == root / manifest.name / manifest.version
    assert tree(installed) == tree(bundle)                            # byte for byte the bundle
    assert Bundle.open(installed, verify=True).manifest.pipeline == manifest.pipeline
    assert install_package(pkg, root, trusted) == installed          # again: the same folder, nothing redone
    assert sorted(os.listdir(installed.parent)) == [manifest.version]  # no staging folder left behind
    assert build_package(bundle, tmp_path / "again.edgepkg", operator).version == manifest.version


def refused_packages(bundle: Path, keys, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    operator, stranger, _ = keys
    good = tmp_path / "good.edgepkg"
    manifest = build_package(bundle, good, operator, version="2")
    entries = members(good)
    big = max(range(1, len(entries)), key=lambda i: len(entries[i][1]))

    tampered = [(i, d) for i, d in entries]
    data = bytearray(tampered[big][1])
    data[len(data) // 2] ^= 0x01
    tampered[big] = (tampered[big][0], bytes(data))

    changed = manifest.model_copy(deep=True)                          # a listed hash changed after signing
    changed.files[0].sha256 = "0" * 64
    unsigned = manifest.model_copy(deep=True)
    unsigned.signature = None
    spoofed = signed(manifest.model_copy(deep=True), stranger)        # stranger's signature, operator's key id
    spoofed.signature = Signature(key_id=operator.id, value=spoofed.signature.value)

    def with_manifest(name: str, m: PackageManifest) -> Path:
        return write_members(tmp_path / name, [(entries[0][0], m.model_dump_json().encode())] + entries[1:])

    raw = good.read_bytes()
    (tmp_path / "truncated.edgepkg").write_bytes(raw[: len(raw) // 2])
    return {
        "tampered file": (write_members(tmp_path / "t1.edgepkg", tampered), "does not match its signed sha256"),
        "tampered manifest": (with_manifest("t2.edgepkg", changed), "does not match the manifest"),
        "truncated": (tmp_path / "truncated.edgepkg", "truncated"),
        "unsigned": (with_manifest("u.edgepkg", unsigned), "unsigned package; refused"),
        "untrusted key": (build_package(bundle, tmp_path / "s.edgepkg", stranger) and tmp_path / "s.edgepkg",
                          f"signed by key {stranger.id}, which this device does not trust"),
        "wrong signature": (with_manifest("w.edgepkg", spoofed), "does not match the manifest"),
        "file left out": (write_members(tmp_path / "m.edgepkg", entries[:-1]), "missing from the archive"),
    }


def test_bad_packages_are_refused_in_one_line_and_nothing_installed_changes(bundle, keys, tmp_path, capsys):
    operator, _, trusted = keys
    root = tmp_path / "opt"
    installed = install_package(build_package(bundle, tmp_path / "v1.edgepkg", operator, version="1") and
                                tmp_path / "v1.edgepkg", root, trusted)
    before = tree(root)
    cases = refused_packages(bundle, keys, tmp_path / "bad")
    for case, (pkg, expected) in cases.items():
        with pytest.raises(PackageError) as refused:
            install_package(pkg, root, trusted)
        message = str(refused.value)
        assert expected in message and "\n" not in message, (case, message)
        assert tree(root) == before, case
        code, out, err = run_cli(["verify", str(pkg), "--trusted", str(trusted)], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("edge verify: error: "), case
    assert Bundle.open(installed, verify=True)


def test_hostile_archives_are_refused_even_when_signed(keys, tmp_path):
    operator, _, trusted = keys
    root = tmp_path / "opt"
    root.mkdir()
    ok = (member("bundle/manifest.json"), b"{}")
    cases = {
        "dotdot": ([ok, (member("bundle/../../escape.txt"), b"x")], "climbs out with '..'"),
        "absolute": ([ok, (member("/etc/escape.txt"), b"x")], "outside bundle/"),
        "symlink": ([ok, (member("bundle/link", tarfile.SYMTYPE, "/etc/passwd"), b"")], "a link, folder or special"),
        "device": ([ok, (member("bundle/dev", tarfile.CHRTYPE), b"")], "a link, folder or special"),
        "unlisted": ([ok, (member("bundle/extra.bin"), b"x")], None),
    }
    for case, (entries, expected) in cases.items():
        listed = [PackageFile(path="manifest.json", bytes=2, sha256=hashlib.sha256(b"{}").hexdigest())]
        if case == "dotdot":
            listed.append(PackageFile(path="../../escape.txt", bytes=1, sha256=hashlib.sha256(b"x").hexdigest()))
        pkg = hostile_package(tmp_path / f"{case}.edgepkg", operator, entries, listed)
        with pytest.raises(PackageError) as refused:
            install_package(pkg, root, trusted)
        assert expected is None or expected in str(refused.value), (case, refused.value)
        assert "not in the signed manifest" in str(refused.value) if case == "unlisted" else True
        assert list(root.iterdir()) == [] and not list(tmp_path.rglob("escape.txt")), case

    many = [(member(f"bundle/f{i}"), b"x") for i in range(5)]
    with pytest.raises(PackageError, match="more than 3 entries"):
        install_package(hostile_package(tmp_path / "many.edgepkg", operator, many), root, trusted,
                        Limits(max_files=3))
    bomb = [(member("bundle/zeros"), b"\0" * 200_000)]
    with pytest.raises(PackageError, match="unpacks to more than"):
        install_package(hostile_package(tmp_path / "bomb.edgepkg", operator, bomb), root, trusted,
                        Limits(max_bytes=100_000))
    assert list(root.iterdir()) == []


def tar_with(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def test_safe_extraction_of_untrusted_archives(tmp_path):
    good = tar_with(tmp_path / "good.tar", [(member("top/a.txt"), b"a"),
                                            (member("top/link", tarfile.SYMTYPE, "a.txt"), b""),
                                            (member("top/hard", tarfile.LNKTYPE, "top/a.txt"), b"")])
    written = extract_archive(good, tmp_path / "out")
    assert [p.as_posix() for p in written] == ["top/a.txt"]
    assert (tmp_path / "out/top/link").read_text() == "a" and (tmp_path / "out/top/hard").read_text() == "a"
    hostile = {
        "dotdot": ([(member("../x.txt"), b"x")], "climbs out"),
        "absolute": ([(member("/tmp/x.txt"), b"x")], "absolute"),
        "link out": ([(member("l", tarfile.SYMTYPE, "../../outside"), b"")], "leads out"),
        "absolute link": ([(member("l", tarfile.SYMTYPE, "/etc/passwd"), b"")], "absolute path"),
        "hard link out": ([(member("h", tarfile.LNKTYPE, "/etc/passwd"), b"")], "absolute or foreign"),
        "device": ([(member("d", tarfile.BLKTYPE), b"")], "device"),
        "fifo": ([(member("f", tarfile.FIFOTYPE), b"")], "FIFO"),
        "twice": ([(member("a"), b"1"), (member("a"), b"2")], "appears twice"),
    }
    for case, (entries, expected) in hostile.items():
        dest = tmp_path / f"dest-{case.replace(' ', '-')}"
        with pytest.raises(UnsafeArchive, match=expected):
            extract_archive(tar_with(tmp_path / f"{case}.tar", entries), dest)
        assert not dest.exists(), case
    bomb = tar_with(tmp_path / "bomb.tar", [(member(f"f{i}"), b"0" * 1000) for i in range(20)])
    with pytest.raises(UnsafeArchive, match="unpacks to more than"):
        extract_archive(bomb, tmp_path / "b1", Limits(max_bytes=10_000))
    with pytest.raises(UnsafeArchive, match="more than 10 entries"):
        extract_archive(bomb, tmp_path / "b2", Limits(max_files=10))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bomb.read_bytes()[:4000])              # ends inside the third file's data
    with pytest.raises(UnsafeArchive, match="truncated"):
        extract_archive(cut, tmp_path / "b3")
    assert not any((tmp_path / n).exists() for n in ("b1", "b2", "b3"))
