"""INT8 is judged on pictures it was not calibrated on (issue: judged on its own calibration pictures,
the layout INT8 looked like box F1 0.98 and was 0.86 on other pages)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from converters.pictures import choose_pictures
from runtimes.errors import ConversionError


def folder(tmp_path: Path, shared_dir: Path, name: str, pictures: list[str]) -> Path:
    out = tmp_path / name
    out.mkdir()
    for picture in pictures:
        shutil.copyfile(shared_dir / "images" / picture, out / picture)
    return out


PEOPLE = ["coco_bus.jpg", "coco_dog.jpg", "coco_zidane.jpg", "det_000000014439.jpg", "lite_human.jpg"]


def test_without_val_every_second_picture_is_held_out(tmp_path, shared_dir):
    sets = choose_pictures(folder(tmp_path, shared_dir, "calib", PEOPLE), None, calibrates=True)
    assert [p.name for p in sets.calib] == ["coco_bus.jpg", "coco_zidane.jpg", "lite_human.jpg"]
    assert [p.name for p in sets.val] == ["coco_dog.jpg", "det_000000014439.jpg"]
    assert not {p.name for p in sets.calib} & {p.name for p in sets.val}
    assert "judged on the other 2" in sets.how


def test_val_pictures_that_are_also_calibration_pictures_are_left_out(tmp_path, shared_dir):
    calib = folder(tmp_path, shared_dir, "calib", PEOPLE[:3])
    val = folder(tmp_path, shared_dir, "val", PEOPLE[2:])
    sets = choose_pictures(calib, val, calibrates=True)
    assert [p.name for p in sets.val] == PEOPLE[3:] and len(sets.calib) == 3
    assert "1 also in --calib left out" in sets.how
    with pytest.raises(ConversionError, match="every picture is also in --calib"):
        choose_pictures(calib, folder(tmp_path, shared_dir, "same", PEOPLE[:2]), calibrates=True)


def test_one_picture_cannot_calibrate_and_judge(tmp_path, shared_dir):
    with pytest.raises(ConversionError, match="at least 2 pictures"):
        choose_pictures(folder(tmp_path, shared_dir, "one", PEOPLE[:1]), None, calibrates=True)
    with pytest.raises(ConversionError, match="--calib"):
        choose_pictures(None, folder(tmp_path, shared_dir, "val", PEOPLE[:2]), calibrates=True)


def test_without_int8_every_picture_judges(tmp_path, shared_dir):
    sets = choose_pictures(folder(tmp_path, shared_dir, "calib", PEOPLE[:2]), None, calibrates=False)
    assert len(sets.val) == 2
