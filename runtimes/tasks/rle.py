"""COCO run-length encoding of binary masks, in the compressed-string form pycocotools writes.

A mask is read column by column (Fortran order, as pycocotools does), and its runs are counted
starting with a run of zeros (0 when the first pixel is set). Results carry the *compressed
string* rather than the list of ints: a person mask at 1080p is tens of thousands of runs, and
the string form is 3-5x smaller in a JSON payload; it is also what COCO result files hold, so
`pycocotools.mask.decode({"size": [h, w], "counts": s.encode()})` reads it as it is.

String form: each count (from the third on, as a difference to the count two places earlier,
which makes the alternating run lengths small) is written as 5-bit groups, low bits first, each
group + 48 as one ASCII character; bit 0x20 says "more groups follow", and in the last group bit
0x10 carries the sign.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EdgeError

CHAR_OFFSET = 48     # '0': keeps every character printable
GROUP_BITS = 5
MORE = 0x20          # another group follows
SIGN = 0x10          # highest payload bit of the last group: the value is negative


class RleError(EdgeError):
    """An RLE dict that cannot be decoded (wrong size, corrupt counts)."""


def run_lengths(mask: np.ndarray) -> list[int]:
    """Binary (H, W) mask -> run lengths in column-major order, first run of zeros (possibly 0)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] else runs


def counts_to_string(counts: list[int]) -> str:
    out = []
    for index, count in enumerate(counts):
        value = int(count) - (int(counts[index - 2]) if index > 2 else 0)
        while True:
            group = value & 0x1F
            value >>= GROUP_BITS          # arithmetic shift: negative values end at -1
            done = value == -1 if group & SIGN else value == 0
            out.append(chr(group + (0 if done else MORE) + CHAR_OFFSET))
            if done:
                break
    return "".join(out)


def string_to_counts(text: str) -> list[int]:
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift = 0, 0
        while True:
            if pos >= len(text):
                raise RleError("RLE counts string ends in the middle of a number")
            group = ord(text[pos]) - CHAR_OFFSET
            if not 0 <= group < 64:
                raise RleError(f"RLE counts string has an invalid character {text[pos]!r}")
            pos += 1
            value |= (group & 0x1F) << shift
            shift += GROUP_BITS
            if not group & MORE:
                if group & SIGN:
                    value |= -1 << shift
                break
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Binary (H, W) mask -> {"size": [h, w], "counts": compressed string}."""
    height, width = np.asarray(mask).shape[:2]
    return {"size": [int(height), int(width)], "counts": counts_to_string(run_lengths(mask))}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """{"size": [h, w], "counts": string or list of ints} -> (H, W) bool mask."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise RleError("an RLE mask needs 'size': [h, w] and 'counts'") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = string_to_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        raise RleError(f"RLE counts cover {sum(runs)} pixels, size {height}x{width} has {height * width}")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((height, width), order="F")


def area(rle: dict[str, Any]) -> int:
    """Pixels set, without decoding the whole mask."""
    counts = rle["counts"]
    runs = string_to_counts(counts) if isinstance(counts, str) else list(counts)
    return int(sum(runs[1::2]))


def bbox(mask: np.ndarray) -> list[int] | None:
    """[x1, y1, x2, y2] of the set pixels (x2/y2 exclusive: one past the last set pixel), or None."""
    ys = np.flatnonzero(np.asarray(mask, bool).any(axis=1))
    xs = np.flatnonzero(np.asarray(mask, bool).any(axis=0))
    if ys.size == 0:
        return None
    return [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]
