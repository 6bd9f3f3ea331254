"""PaddleSeg deploy.yaml: what the real export says, and errors that name the file, line and key."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from converters import metadata
from converters.metadata import paddleseg, read_spec
from runtimes.errors import MetadataError
from runtimes.image import read_image
from runtimes.tasks.preprocess import Preprocess

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
EXPORT = SHARED / "models" / "PP-HumanSeg-Lite" / "pp_humanseg_lite_portrait_398x224"
pytestmark = pytest.mark.skipif(not EXPORT.is_dir(), reason=f"needs the shared models folder {SHARED}")


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The reader as the lead registers it in READERS (a no-op once merged)."""
    if paddleseg not in metadata.READERS:
        monkeypatch.setattr(metadata, "READERS", [*metadata.READERS, paddleseg])


def export_copy(tmp_path: Path, edit=None) -> Path:
    folder = tmp_path / EXPORT.name
    folder.mkdir()
    meta = folder / "deploy.yaml"
    shutil.copy(EXPORT / "deploy.yaml", meta)
    meta.chmod(0o644)
    if edit:
        meta.write_text(edit(meta.read_text()))
    return meta


def test_humanseg_export_reads_as_a_person_segmenter():
    spec = read_spec(EXPORT / "deploy.yaml")
    assert (spec.role, spec.task, spec.name) == ("segmenter", "segmentation", EXPORT.name)
    assert spec.input.name == "x" and spec.input.shape == [None, 3, 224, 398]
    assert spec.labels == ["background", "person"]
    assert spec.postprocess["output"] == "softmax" and spec.postprocess["mask"] is True
    ops = [op["op"] for op in spec.preprocess]
    assert ops == ["color", "resize", "normalize", "to_chw"]
    resize, normalize = spec.preprocess[1], spec.preprocess[2]
    assert (resize["width"], resize["height"], resize["keep_ratio"]) == (398, 224, False)
    assert normalize["mean"] == normalize["std"] == [0.5, 0.5, 0.5]


def test_the_chain_gives_the_models_input_in_minus_one_to_one():
    spec = read_spec(EXPORT / "deploy.yaml")
    tensor, _ = Preprocess(spec.preprocess)(read_image(SHARED / "images" / "seg_humanseg_demo.jpg"))
    assert tensor.shape == (1, 3, 224, 398) and tensor.dtype.name == "float32"
    assert -1.0 <= tensor.min() < -0.5 and 0.5 < tensor.max() <= 1.0


def test_the_pir_copy_is_named_after_its_export():
    spec = read_spec(EXPORT / "pir" / "deploy.yaml")
    assert spec.name == EXPORT.name and spec.labels == ["background", "person"]


def test_old_exports_without_output_op_are_argmax(tmp_path):
    meta = export_copy(tmp_path, lambda text: text.replace("  output_op: softmax\n", ""))
    assert read_spec(meta).postprocess["output"] == "argmax"


def test_labels_beside_the_export_win_and_other_transforms_map(tmp_path):
    def edit(text):
        return text.replace("  - type: Normalize\n", "  - type: Normalize\n    mean: [0.485, 0.456, 0.406]\n"
                                                     "    std: [0.229, 0.224, 0.225]\n"
                                                     "  - type: ResizeByLong\n    long_size: 512\n")
    meta = export_copy(tmp_path, edit)
    (meta.parent / "labels.txt").write_text("background\nhair\n")
    spec = read_spec(meta)
    assert spec.labels == ["background", "hair"]
    assert spec.preprocess[2]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert spec.preprocess[3] == {"op": "resize", "width": 512, "height": 512, "keep_ratio": True,
                                  "interp": "linear"}


def test_unknown_transform_names_file_line_and_key(tmp_path):
    meta = export_copy(tmp_path, lambda text: text.replace("type: Normalize", "type: RandomBlur"))
    with pytest.raises(MetadataError) as err:
        read_spec(meta)
    message = str(err.value)
    assert message.startswith(f"{meta}:") and "Deploy.transforms.1" in message and "RandomBlur" in message
    line = meta.read_text().splitlines().index("  - type: RandomBlur") + 1
    assert f"{meta}:{line}:" in message    # the line of that transform in the file


def test_unknown_output_op_and_bad_input_shape_are_refused(tmp_path):
    meta = export_copy(tmp_path, lambda text: text.replace("output_op: softmax", "output_op: sigmoid"))
    with pytest.raises(MetadataError, match="output_op"):
        read_spec(meta)
    meta.write_text((EXPORT / "deploy.yaml").read_text().replace("  - 398\n", "", 1))
    with pytest.raises(MetadataError, match="input_shape"):
        read_spec(meta)


def test_other_metadata_is_not_claimed():
    ocr = SHARED / "models" / "PP-OCR" / "ch_PP-OCRv4_det" / "inference.yml"
    assert read_spec(ocr).task == "ocr"
