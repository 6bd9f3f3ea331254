"""Every `edge` subcommand under hostile arguments: missing files, a folder where a file is expected and the
reverse, unwritable outputs, an existing non-bundle output folder, bad enum values.

Each must end with exit code 2 and one clear line on stderr (after argparse's usage, for what argparse
refuses itself): no traceback, nothing logged with one. The commands run in this process through
`edge.cli.main`, so an exception that escapes is a failure here too.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main

REPO = Path(__file__).resolve().parents[2]
LCNET = "models/PP-LCNet/PPLCNet_x1_0_text_image_orientation"
UNWRITABLE = "/proc/edge-hostile-out"          # not even root may create anything in /proc

# (case id, argv with {placeholders}); see `places` for what each placeholder is.
CASES = [
    ("profiles show a folder", "profiles show {folder}"),
    ("profiles show missing", "profiles show {missing}.yaml"),
    ("profiles validate a folder", "profiles validate {folder}"),
    ("profiles validate a picture", "profiles validate {image}"),
    ("profiles detect root missing", "profiles detect --root {missing}"),
    ("profiles detect root is a file", "profiles detect --root {file}"),
    ("profiles detect bad machine", "profiles detect --machine pdp11"),
    ("convert source missing", "convert {missing} --profile x86-vnni --calib {pictures} -o {out}"),
    ("convert source is a file", "convert {file} --profile x86-vnni --calib {pictures} -o {out}"),
    ("convert source is an empty folder", "convert {folder} --profile x86-vnni --calib {pictures} -o {out}"),
    ("convert unknown profile", "convert {lcnet} --profile x86-quantum --calib {pictures} -o {out}"),
    ("convert profile is a folder", "convert {lcnet} --profile {folder} --calib {pictures} -o {out}"),
    ("convert calib missing", "convert {lcnet} --profile x86-vnni --calib {missing} -o {out}"),
    ("convert calib is a file", "convert {lcnet} --profile x86-vnni --calib {image} -o {out}"),
    ("convert out is a file", "convert {lcnet} --profile x86-vnni --calib {pictures} -o {file}"),
    ("convert out under a file", "convert {lcnet} --profile x86-vnni --calib {pictures} -o {file}/bundle"),
    ("convert out unwritable", "convert {lcnet} --profile x86-vnni --calib {pictures} -o {unwritable}"),
    ("convert out is not a bundle", "convert {lcnet} --profile x86-vnni --calib {pictures} -o {notbundle}"),
    ("convert workdir is a file", "convert {lcnet} --profile x86-vnni --calib {pictures} -o {out} --workdir {file}"),
    ("inspect missing", "inspect {missing}"),
    ("inspect a file", "inspect {file}"),
    ("inspect not a bundle", "inspect {notbundle}"),
    ("infer bundle missing", "infer {missing} {image}"),
    ("infer bundle is a picture", "infer {image} {image}"),
    ("infer image missing", "infer {bundle} {missing}.jpg"),
    ("infer image is a folder", "infer {bundle} {folder}"),
    ("infer image is not a picture", "infer {bundle} {file}"),
    ("infer draw under a file", "infer {bundle} {image} --draw {file}/drawn.jpg"),
    ("infer draw unwritable", "infer {bundle} {image} --draw {unwritable}/drawn.jpg"),
    ("infer draw not a picture name", "infer {bundle} {image} --draw {tmp}/drawn.txt"),
    ("infer draw folder is a file", "infer {bundle} {image} {image} --draw {file}"),
    ("infer bad precision", "infer {bundle} {image} --precision fp8"),
    ("infer precision not in bundle", "infer {bundle} {image} --precision fp16"),
    ("bench bundle missing", "bench {missing}"),
    ("bench zero frames", "bench {bundle} --frames 0"),
    ("bench threads not a number", "bench {bundle} --threads many"),
    ("bench images missing", "bench {bundle} --images {missing} --state-dir {tmp}/state"),
    ("bench images is a file", "bench {bundle} --images {image} --state-dir {tmp}/state"),
    ("bench state dir is a file", "bench {bundle} --state-dir {file}"),
    ("bench state dir unwritable", "bench {bundle} --state-dir {unwritable}"),
    ("bench out under a file", "bench {bundle} --state-dir {tmp}/state --out {file}/report"),
    ("run config missing", "run {missing}.yaml --check"),
    ("run config is a picture", "run {image} --check"),
    ("run config is not yaml mapping", "run {file} --check"),
    ("run folder is not a bundle", "run {folder} --source {folder} --mqtt mqtt://127.0.0.1:1 --device-id d --check"),
    ("run bad qos", "run {bundle} --source {folder} --mqtt mqtt://127.0.0.1:1 --device-id d --qos 7 --check"),
    ("run bad transport", "run {bundle} --source rtsp://x/ --mqtt mqtt://127.0.0.1:1 --device-id d "
                          "--transport pigeon --check"),
    ("run bad broker url", "run {bundle} --source {folder} --mqtt http://x --device-id d --check"),
    ("run state dir is a file", "run {bundle} --source {folder} --mqtt mqtt://127.0.0.1:1 --device-id d "
                                "--state-dir {file} --check"),
    ("service config missing", "service install --config {missing}.yaml --root {root}"),
    ("service config is a folder", "service install --config {folder} --root {root}"),
    ("service root missing", "service install --config {config} --root {missing}"),
    ("service root is a file", "service install --config {config} --root {file}"),
    ("service root unwritable", "service install --config {config} --root /proc"),
    ("service etc is a file", "service install --config {config} --root {root_with_etc_file}"),
    ("service bad watchdog", "service install --config {config} --root {root} --watchdog-sec 0"),
    ("service relative python", "service install --config {config} --root {root} --python python3"),
    ("service bad action", "service start"),
    ("toolchain unknown", "toolchain install compiler-of-doom"),
    ("toolchain remove unknown", "toolchain remove compiler-of-doom"),
    ("demo workdir is a file", "demo --workdir {file}"),
    ("demo workdir unwritable", "demo --workdir {unwritable}"),
    ("no such command", "teleport"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory, shared_dir, ocr_bundle_dir) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "folder").mkdir()
    (tmp / "notes.txt").write_text("not a picture, not a bundle, not YAML mapping\n")
    (tmp / "notbundle").mkdir()
    (tmp / "notbundle" / "holiday.txt").write_text("someone's files\n")
    (tmp / "pictures").mkdir()
    shutil.copy(shared_dir / "images" / "cls_img_rot0_demo.jpg", tmp / "pictures")
    (tmp / "root").mkdir()
    (tmp / "root_etc").mkdir()
    (tmp / "root_etc" / "etc").write_text("a file where the folder /etc must be\n")
    config = tmp / "edge.yaml"
    config.write_text(f"device_id: cam\nbroker: {{url: 'mqtt://127.0.0.1:1883'}}\nstate_dir: /var/lib/edge\n"
                      f"pipelines:\n  - {{bundle: {ocr_bundle_dir}, source: /srv/incoming}}\n")
    return {"tmp": str(tmp), "folder": str(tmp / "folder"), "file": str(tmp / "notes.txt"),
            "missing": str(tmp / "missing"), "notbundle": str(tmp / "notbundle"), "out": str(tmp / "out"),
            "pictures": str(tmp / "pictures"), "image": str(shared_dir / "images" / "cls_img_rot0_demo.jpg"),
            "lcnet": str(shared_dir / LCNET), "bundle": str(ocr_bundle_dir), "unwritable": UNWRITABLE,
            "root": str(tmp / "root"), "root_with_etc_file": str(tmp / "root_etc"), "config": str(config)}


def run_edge(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:          # argparse's own refusals
        code = stop.code
    return code, capsys.readouterr().err


PROGRESS = re.compile(r"^\[\s*\d+\.\ds\] ")      # a long command's progress lines (edge/commands/progress.py)


def the_error_line(stderr: str) -> str:
    """The one line besides argparse's usage block (a 'usage:' line and its indented continuation) and
    the progress lines a command printed before it stopped."""
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    if lines and lines[0].startswith("usage:"):
        lines = [lines[0]] + [line for line in lines[1:] if not line.startswith(" ")]
        lines = lines[1:]
    assert len(lines) == 1, f"wanted one line, got:\n{stderr}"
    return lines[0]


@pytest.mark.parametrize("argv", [argv for _, argv in CASES], ids=[case for case, _ in CASES])
def test_hostile_arguments_end_in_one_clear_line_and_exit_2(argv, places, capsys, caplog):
    args = [word.format(**places) for word in argv.split()]
    with caplog.at_level(logging.INFO):
        code, stderr = run_edge(args, capsys)
    assert "Traceback" not in stderr
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert code == 2, stderr
    line = the_error_line(stderr)
    assert re.match(r"(edge|usage: edge)[\w -]*: error: \S", line), line
    assert len(line) < 400, line


def test_hostile_arguments_leave_nothing_behind(places, capsys):
    """The non-bundle folder keeps its files; nothing appears in /proc or where a file stood."""
    assert sorted(p.name for p in Path(places["notbundle"]).iterdir()) == ["holiday.txt"]
    assert Path(places["file"]).is_file() and not Path(places["out"]).exists()
    assert not Path(places["root"], "etc").exists()


def test_infer_draw_into_an_existing_folder_with_one_image(places, tmp_path):
    """The reported bug: one IMAGE and --draw FOLDER ended in cv2.error; the help says a folder is fine."""
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    proc = subprocess.run([sys.executable, "-m", "edge", "infer", places["bundle"], places["image"], "--draw",
                           str(drawn)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert [p.name for p in drawn.iterdir()] == ["cls_img_rot0_demo.jpg"]
