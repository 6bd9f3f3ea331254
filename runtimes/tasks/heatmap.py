"""Top-down pose geometry: person box -> model crop, and heatmaps -> keypoints in the picture.

Follows PaddleDetection's top-down keypoint pipeline (TopDownEvalAffine + HRNetPostProcess):

- the box is grown to the model's aspect ratio around its centre, then by `padding` (1.25), so
  the whole person fits with some context. PaddleDetection keeps this size in units of
  `pixel_std` = 200 pixels and multiplies by 200 again when it builds the transform; the unit
  cancels out, so here it stays in pixels.
- the crop is one uniform scale + translation (no rotation at inference) mapping the grown box
  onto the model input, built from the widths (the heights agree, the box having the same aspect).
- each heatmap's peak is found by argmax and refined with DARK (Zhang et al., "Distribution-Aware
  Coordinate Representation", CVPR 2020): the heatmap is smoothed with a small Gaussian, its log is
  taken, and one Newton step of the second-order Taylor expansion around the peak moves the point
  to the maximum of the fitted Gaussian — sub-pixel precision from a 4x-downsampled map.
- heatmap coordinates go back to the picture through the inverse of the same box-to-map transform.
"""
from __future__ import annotations

import cv2
import numpy as np

PADDING = 1.25          # PaddleDetection's context margin around a person box
LOG_FLOOR = 1e-10       # smoothed heatmaps are clipped here before the log


def grow_box(box: np.ndarray | list[float], aspect: float, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """[x1, y1, x2, y2] -> (centre (2,), size (2,) in pixels) at `aspect` = width / height, padded."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    centre = np.array([x1 + (x2 - x1) / 2, y1 + (y2 - y1) / 2], np.float64)
    return centre, np.array([w, h], np.float64) * padding


def box_to_grid(centre: np.ndarray, size: np.ndarray, grid_w: int, grid_h: int) -> np.ndarray:
    """2x3 affine matrix: the grown box onto a grid_w x grid_h raster (model input or heatmap)."""
    k = grid_w / size[0]
    return np.array([[k, 0.0, grid_w / 2 - k * centre[0]],
                     [0.0, k, grid_h / 2 - k * centre[1]]], np.float64)


def grid_to_image(points: np.ndarray, centre: np.ndarray, size: np.ndarray, grid_w: int, grid_h: int) -> np.ndarray:
    """(K, 2) points on a grid_w x grid_h raster of the grown box -> picture pixels (box_to_grid inverted)."""
    k = grid_w / size[0]
    return (points - np.array([grid_w / 2, grid_h / 2])) / k + centre


def warp_person(image: np.ndarray, centre: np.ndarray, size: np.ndarray, width: int, height: int) -> np.ndarray:
    """The model's view of one person: the grown box warped to width x height (outside: black)."""
    matrix = box_to_grid(centre, size, width, height)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR)


def peaks(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) -> integer peak positions (N, K, 2) as (x, y) floats, and peak values (N, K).

    A map with no positive value has no peak: its point is (0, 0), as PaddleDetection reports it.
    """
    n, k, _, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    index = flat.argmax(axis=2)
    values = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.float64)
    coords[values <= 0] = 0.0
    return coords, values.astype(np.float64)


def smooth(heatmaps: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Gaussian blur of every map (zeros beyond the border), rescaled to keep each map's maximum."""
    taps = cv2.getGaussianKernel(kernel, 0).ravel()      # sigma from the size, as OpenCV picks it
    half = kernel // 2
    maps = heatmaps.astype(np.float64)
    padded = np.pad(maps, [(0, 0), (0, 0), (half, half), (half, half)])
    h, w = maps.shape[-2:]
    rows = sum(taps[i] * padded[..., i:i + h, :] for i in range(kernel))
    blurred = sum(taps[i] * rows[..., i:i + w] for i in range(kernel))
    before = maps.max(axis=(2, 3), keepdims=True)
    after = blurred.max(axis=(2, 3), keepdims=True)
    return blurred * np.divide(before, after, out=np.ones_like(before), where=after != 0)


def dark_refine(heatmaps: np.ndarray, coords: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Move integer peaks to the maximum of the Gaussian fitted to the log of the smoothed map.

    Peaks closer than two cells to the border keep their integer position (the second
    derivatives need two neighbours on each side).
    """
    logs = np.log(np.maximum(smooth(heatmaps, kernel), LOG_FLOOR))
    n, k, h, w = logs.shape
    refined = coords.copy()
    px, py = coords[..., 0].astype(int), coords[..., 1].astype(int)
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    if not inside.any():
        return refined
    b, j = np.nonzero(inside)
    x, y = px[inside], py[inside]
    m = logs[b, j]                                       # (P, H, W): the maps of the inside peaks
    p = np.arange(len(b))

    def at(dy: int, dx: int) -> np.ndarray:
        return m[p, y + dy, x + dx]

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = np.abs(det) > 1e-12
    safe = np.where(ok, det, 1.0)
    # offset = -H^-1 g with H = [[dxx, dxy], [dxy, dyy]], g = [dx, dy]
    off_x = -(dyy * dx - dxy * dy) / safe
    off_y = -(dxx * dy - dxy * dx) / safe
    refined[b[ok], j[ok], 0] += off_x[ok]
    refined[b[ok], j[ok], 1] += off_y[ok]
    return refined


def decode(heatmaps: np.ndarray, centres: np.ndarray, sizes: np.ndarray, use_dark: bool = True,
           kernel: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps of N grown boxes -> keypoints (N, K, 2) in picture pixels, scores (N, K)."""
    if heatmaps.shape[0] == 0 or heatmaps.shape[1] == 0:
        return np.zeros(heatmaps.shape[:2] + (2,)), np.zeros(heatmaps.shape[:2])
    coords, scores = peaks(heatmaps)
    if use_dark:
        coords = dark_refine(heatmaps, coords, kernel)
    grid_h, grid_w = heatmaps.shape[2:]
    points = np.stack([grid_to_image(coords[i], centres[i], sizes[i], grid_w, grid_h) for i in range(len(coords))])
    return points, scores
