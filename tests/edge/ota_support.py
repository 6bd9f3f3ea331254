"""What the OTA tests share: one real bundle (PP-HumanSeg-Lite, FP32 ONNX) packaged as versions 1 and 2, a
'bad' version 3 that verifies and loads but fails on every frame, version 2 signed by a key no device
trusts; and a device: bundles folder with version 1 in its slot, a daemon config with `ota:`, and a feeder
that drops a picture into the watched folder every few tenths of a second (the health check counts frames)."""
from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from edge.daemon import contract
from edge.ota.slots import Slots
from edge.packaging import build_package, generate, install_package

from ..conftest import convert_bundle, write_fp32_profile

PICTURES = ("seg_humanseg_demo.jpg", "lite_human.jpg", "seg_web_human.png")


def seg_bundle(shared_dir: Path, work: Path) -> Path:
    calib = work / "calib"
    calib.mkdir()
    for image in PICTURES:
        shutil.copy(shared_dir / "images" / image, calib / image)
    export = shared_dir / "models" / "PP-HumanSeg-Lite" / "pp_humanseg_lite_portrait_398x224"
    return convert_bundle(work / "bundle", [export], write_fp32_profile(work), calib)


def broken_on_frames(bundle: Path, out: Path) -> Path:
    """The same files, but the manifest resizes pictures to a size the model's fixed input refuses: the bundle
    verifies and loads, and every frame fails (what a bad model update looks like on a device)."""
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    for step in manifest["models"][0]["preprocess"]:
        if step["op"] == "resize":
            step["width"], step["height"] = 320, 200
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


@dataclass
class Packages:
    v1: Path
    v2: Path
    bad: Path
    untrusted: Path
    other_name: Path           # a package of a bundle no pipeline runs
    trusted_dir: Path          # what devices trust: the operator's public key
    name: str


def make_packages(bundle: Path, work: Path) -> Packages:
    operator = generate("operator", work / "keys")
    stranger = generate("stranger", work / "stranger-keys")
    trusted = work / "trusted"
    trusted.mkdir()
    shutil.copy(operator.public_path, trusted / "operator.pub")
    name = build_package(bundle, work / "v1.edgepkg", operator, version="1").name
    build_package(bundle, work / "v2.edgepkg", operator, version="2")
    build_package(broken_on_frames(bundle, work / "bad-bundle"), work / "bad.edgepkg", operator, version="3")
    build_package(bundle, work / "untrusted.edgepkg", stranger, version="2")
    build_package(bundle, work / "other.edgepkg", operator, name="other", version="1")
    return Packages(work / "v1.edgepkg", work / "v2.edgepkg", work / "bad.edgepkg", work / "untrusted.edgepkg",
                    work / "other.edgepkg", trusted, name)


class Feeder:
    """Copies a picture into `folder` every `every` s under a new name, until stopped."""

    def __init__(self, source: Path, folder: Path, every: float = 0.3):
        self.source, self.folder, self.every = source, folder, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every):
            n += 1
            tmp = self.folder / f".{n:06d}.jpg"
            shutil.copy(self.source, tmp)
            os.replace(tmp, self.folder / f"{n:06d}.jpg")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Device:
    """One device's folders and config; `start()` runs its daemon (a real process) through `edge_daemon`."""

    def __init__(self, root: Path, device_id: str, packages: Packages, broker_url: str, shared_dir: Path,
                 group: str | None = None, health_frames: int = 2, broker_extra: str = ""):
        self.root, self.id, self.packages = root, device_id, packages
        self.bundles, self.state, self.inbox = root / "bundles", root / "state", root / "in"
        self.inbox.mkdir(parents=True)
        # version 1 installed as `edge deploy` leaves it: <name>/1 and a `current` link
        install_package(packages.v1, self.bundles, packages.trusted_dir)
        self.slots = Slots(self.bundles, packages.name)
        self.slots.switch("1", None)
        self.config = root / "edge.yaml"
        self.config.write_text(
            f"device_id: {device_id}\n"
            f"broker: {{url: '{broker_url}'{broker_extra}}}\n"
            f"state_dir: {self.state}\n"
            f"bundles_dir: {self.bundles}\n"
            f"metrics_interval: 0\n"
            + (f"group: {group}\n" if group else "")
            + f"ota: {{trusted_keys: [{packages.trusted_dir}], health_frames: {health_frames}, "
              "health_timeout: 20, chunk_timeout: 2}\n"
            "pipelines:\n"
            f"  - {{name: seg, bundle: {self.slots.link}, source: {{type: folder, path: {self.inbox}}}, "
            "poll_interval: 0.1}\n", encoding="utf-8")
        self.feeder = Feeder(shared_dir / "images" / PICTURES[1], self.inbox)
        self.daemon = None

    def start(self, edge_daemon, crash_at: str | None = None):
        saved = os.environ.pop("EDGE_OTA_CRASH_AT", None)
        if crash_at:
            os.environ["EDGE_OTA_CRASH_AT"] = crash_at
        try:
            self.daemon = edge_daemon([str(self.config)])
        finally:
            os.environ.pop("EDGE_OTA_CRASH_AT", None)
            if saved is not None:
                os.environ["EDGE_OTA_CRASH_AT"] = saved
        return self.daemon

    def results_topic(self) -> str:
        return contract.results_topic(self.id, "seg")

    def stop(self) -> None:
        self.feeder.stop()
