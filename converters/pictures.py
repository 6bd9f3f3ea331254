"""Which pictures calibrate and which judge: an INT8 artifact is never judged on pictures it was calibrated on.

Judged on its own calibration pictures, INT8 looks better than it is (the layout INT8 agreed with
FP32 at box F1 0.98 on them and 0.86 on other pages). So without `--val`, every second `--calib`
picture (in name order) is held out for judging; with `--val`, pictures that are also in `--calib`
(same bytes) are dropped from the judging set. A profile without INT8 calibrates nothing and judges
on every picture given.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtimes.bundle import sha256_of
from runtimes.errors import ConversionError
from runtimes.image import IMAGE_SUFFIXES


@dataclass(frozen=True)
class PictureSets:
    calib: list[Path]          # what INT8 ranges are calibrated on
    val: list[Path]            # what every artifact is judged on
    how: str                   # one line for the manifest and the progress log


def list_images(folder: Path | None, what: str) -> list[Path]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise ConversionError(f"{what} {folder}: not a folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ConversionError(f"{what} {folder}: no images in it ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def choose_pictures(calib_dir: Path | None, val_dir: Path | None, calibrates: bool) -> PictureSets:
    """`calibrates`: the profile asks for an INT8 artifact (so calibration pictures must be held out)."""
    calib, val = list_images(calib_dir, "--calib"), list_images(val_dir, "--val")
    if calibrates and not calib:
        raise ConversionError("the profile asks for int8 artifacts: give real images to calibrate with "
                              "(--calib DIR)")
    if not calibrates:
        judged = val or calib
        if not judged:
            raise ConversionError("give real images to check the artifacts against (--calib DIR or --val DIR)")
        return PictureSets(calib, judged, f"no calibration; judged on {len(judged)} pictures")
    if val:
        seen = {sha256_of(p) for p in calib}
        held = [p for p in val if sha256_of(p) not in seen]
        if not held:
            raise ConversionError(f"--val {val_dir}: every picture is also in --calib; judging INT8 on its own "
                                  "calibration pictures would flatter it: give other pictures")
        dropped = len(val) - len(held)
        note = f" ({dropped} also in --calib left out)" if dropped else ""
        return PictureSets(calib, held, f"calibrated on {len(calib)} --calib pictures, judged on {len(held)} "
                                        f"--val pictures{note}")
    if len(calib) < 2:
        raise ConversionError(f"--calib {calib_dir}: one picture cannot both calibrate INT8 and judge it; give "
                              "at least 2 pictures, or judging pictures with --val DIR")
    return PictureSets(calib[0::2], calib[1::2],
                       f"no --val: calibrated on {len(calib[0::2])} of the --calib pictures, judged on the "
                       f"other {len(calib[1::2])} (every second in name order)")
