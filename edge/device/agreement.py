"""How far a pipeline's results with one artifact stray from its results with the FP32 artifact, judged
on the device by the converter's family metric and budget, on what the pipeline publishes.

The converter judges one model's raw outputs (converters/families/); a device judges the results a user
sees: boxes with labels, text, top-1 labels, masks, keypoints. The budgets are the converter's
(tests/edge/test_bench.py keeps them equal). A device installs neither shapely nor the converters, so the
few measures needed are here: rectangle IoU in numpy, rotated text-box IoU with OpenCV.

Multi-model pipelines are judged per role, the role under test varied and the others at FP32:
  ocr det      box F1 (IoU 0.5) >= 0.99 and page text CER <= 0.02 (mean per page), as the converter, but over
               the published lines (the converter counts every detected box; a box INT8 shifts so that its line
               is read above or below drop_score shows here);
  ocr cls/rec  page text CER <= 0.02: the pipeline publishes no angle, so the angle classifier is judged by
               what it changes, the text (the converter holds the angle itself to top-1 0.99);
  keypoints    detector: person box F1 >= 0.95; pose: PCK@0.05 >= 0.95 on the joints FP32 shows.
A verdict over nothing (FP32 found no box, no person, no text) does not pass: it proves nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from runtimes.measures import BoxMatch, edit_distance
from runtimes.bundle import Manifest
from runtimes.tasks import rle
from runtimes.tasks.keypoints import pose_params

Results = list[list[dict[str, Any]]]          # per picture, the pipeline's results

# The converter's budgets (converters/families/*.py).
DETECTION_BOX_F1 = 0.95                        # detection.BUDGET
CLASSIFICATION_TOP1 = 1.0                      # classification.BUDGET
SEGMENTATION_MASK_IOU = 0.97                   # segmentation.BUDGET
KEYPOINTS_PCK = 0.95                           # keypoints.BUDGET
PCK_ALPHA = 0.05                               # keypoints.ALPHA
OCR_DET_BOX_F1 = 0.99                          # ocr.BUDGETS["det"]
OCR_TEXT_CER = 0.02                            # ocr.BUDGETS["rec"]
MATCH_IOU = 0.5


@dataclass
class Verdict:
    metric: str
    value: float
    budget: float
    passed: bool
    samples: int                               # boxes / pictures / joints / pages the value is over
    lower_is_better: bool = False
    extras: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        relation = "<=" if self.lower_is_better else ">="
        more = "".join(f", {name} {value:.4f}" for name, value in self.extras.items())
        if not self.samples:
            return f"{self.metric}: nothing to compare on these pictures (FP32 found nothing), so not judged"
        verdict = "within" if self.passed else "misses"
        return (f"{self.metric} {self.value:.4f}{more} {verdict} budget {relation} {self.budget:g} "
                f"({self.samples} samples)")


# --- measures ---------------------------------------------------------------------------------------

def rect_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two axis-aligned boxes [x1, y1, x2, y2]."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def quad_iou(a: Sequence, b: Sequence) -> float:
    """IoU of two text boxes ((4, 2) corner points; DB boxes are rotated rectangles, so convex)."""
    pa = cv2.convexHull(np.asarray(a, np.float32).reshape(-1, 1, 2))
    pb = cv2.convexHull(np.asarray(b, np.float32).reshape(-1, 1, 2))
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = cv2.contourArea(pa) + cv2.contourArea(pb) - inter
    return float(inter / union) if union > 0 else 0.0


def match(got: list[dict], ref: list[dict], iou: Callable[[Any, Any], float], same_label: bool) -> tuple[BoxMatch, list]:
    """Greedy one-to-one matching, highest IoU first (as converters.metrics.match_boxes); the matched pairs."""
    pairs = sorted(((iou(g["box"], r["box"]), i, j) for i, g in enumerate(got) for j, r in enumerate(ref)
                    if not same_label or g.get("label") == r.get("label")), reverse=True)
    used_g, used_r, matched = set(), set(), []
    for value, i, j in pairs:
        if value >= MATCH_IOU and i not in used_g and j not in used_r:
            used_g.add(i)
            used_r.add(j)
            matched.append((got[i], ref[j]))
    return BoxMatch(len(matched), len(got) - len(matched), len(ref) - len(matched)), matched


def text_cer(got: str, ref: str) -> float:
    if not ref:
        return 0.0 if not got else 1.0
    return edit_distance(got, ref) / len(ref)


def page_text(results: list[dict]) -> str:
    """What the pipeline prints for a page: its lines in reading order (as the converter's page text)."""
    return "".join(str(item.get("text", "")) for item in results)


# --- judges: (candidate results, FP32 results, manifest) -> Verdict -----------------------------------

def _box_f1(budget: float, iou: Callable[[Any, Any], float] = rect_iou, same_label: bool = True,
            metric: str = "box_f1@0.5 vs fp32") -> Callable[[Results, Results, Manifest], Verdict]:
    def judge(got: Results, ref: Results, manifest: Manifest) -> Verdict:
        total = BoxMatch()
        for g, r in zip(got, ref):
            total = total + match(g, r, iou, same_label)[0]
        samples = total.tp + total.fn
        return Verdict(metric, total.f1, budget, samples > 0 and total.f1 >= budget, samples)
    return judge


def _page_cer(got: Results, ref: Results, manifest: Manifest) -> Verdict:
    pages = [(page_text(g), page_text(r)) for g, r in zip(got, ref)]
    judged = [p for p in pages if p[1]]
    value = float(np.mean([text_cer(g, r) for g, r in pages])) if pages else 0.0
    return Verdict("page_text_cer vs fp32", value, OCR_TEXT_CER, bool(judged) and value <= OCR_TEXT_CER,
                   len(judged), lower_is_better=True)


def _ocr_det(got: Results, ref: Results, manifest: Manifest) -> Verdict:
    boxes = _box_f1(OCR_DET_BOX_F1, quad_iou, same_label=False)(got, ref, manifest)
    text = _page_cer(got, ref, manifest)
    boxes.extras[text.metric] = text.value
    boxes.passed = boxes.passed and text.passed
    return boxes


def _top1(got: Results, ref: Results, manifest: Manifest) -> Verdict:
    pairs = [(g[0]["label"] if g else None, r[0]["label"] if r else None) for g, r in zip(got, ref)]
    value = float(np.mean([a == b for a, b in pairs])) if pairs else 1.0
    return Verdict("top1_agreement vs fp32", value, CLASSIFICATION_TOP1, bool(pairs) and value >= CLASSIFICATION_TOP1,
                   len(pairs))


def _masks(results: list[dict]) -> dict[str, np.ndarray] | None:
    if any("mask" not in item for item in results):
        return None
    return {item["label"]: rle.decode(item["mask"]) for item in results}


def _mask_iou(got: Results, ref: Results, manifest: Manifest) -> Verdict:
    """Mean over pictures and classes found by either of the class mask IoU (as the converter's)."""
    ious = []
    for g, r in zip(got, ref):
        gm, rm = _masks(g), _masks(r)
        if gm is None or rm is None:       # the bundle's postprocess says mask: false
            return Verdict("mask_iou vs fp32 (results carry no masks)", 0.0, SEGMENTATION_MASK_IOU, False, 0)
        for label in sorted(set(gm) | set(rm)):
            a, b = gm.get(label), rm.get(label)
            if a is None or b is None:
                ious.append(0.0)
                continue
            union = np.logical_or(a, b).sum()
            ious.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    value = float(np.mean(ious)) if ious else 1.0
    # a picture where neither finds a foreground class agrees fully; the converter counts it the same way
    return Verdict("mask_iou vs fp32", value, SEGMENTATION_MASK_IOU, value >= SEGMENTATION_MASK_IOU, len(ious))


def _pck(got: Results, ref: Results, manifest: Manifest) -> Verdict:
    """Persons matched by box (IoU >= 0.5); the joints FP32 shows (score >= draw_threshold) count; a joint of a
    person the candidate lost counts as wrong. Yardstick: PCK_ALPHA x the FP32 person box diagonal."""
    shown_at = pose_params(manifest.model("pose")).draw_threshold
    right = counted = 0
    for g, r in zip(got, ref):
        _, pairs = match(g, r, rect_iou, same_label=True)
        paired = {id(b): a for a, b in pairs}
        for person in r:
            box = person["box"]
            limit = PCK_ALPHA * float(np.hypot(box[2] - box[0], box[3] - box[1]))
            mine = paired.get(id(person))
            for k, joint in enumerate(person.get("keypoints", [])):
                if joint["score"] < shown_at:
                    continue
                counted += 1
                if mine is not None and k < len(mine.get("keypoints", [])):
                    other = mine["keypoints"][k]
                    right += float(np.hypot(other["x"] - joint["x"], other["y"] - joint["y"])) <= limit
    value = right / counted if counted else 0.0
    return Verdict(f"pck@{PCK_ALPHA:g} vs fp32", value, KEYPOINTS_PCK, counted > 0 and value >= KEYPOINTS_PCK, counted)


Judge = Callable[[Results, Results, Manifest], Verdict]
JUDGES: dict[tuple[str, str], Judge] = {
    ("detection", "detector"): _box_f1(DETECTION_BOX_F1),
    ("classification", "classifier"): _top1,
    ("segmentation", "segmenter"): _mask_iou,
    ("keypoints", "detector"): _box_f1(DETECTION_BOX_F1, metric="person box_f1@0.5 vs fp32"),
    ("keypoints", "pose"): _pck,
    ("ocr", "det"): _ocr_det,
    ("ocr", "cls"): _page_cer,
    ("ocr", "rec"): _page_cer,
}


def judge(manifest: Manifest, role: str, got: Results, ref: Results) -> Verdict:
    """The family verdict on `role`'s artifact from the pipeline results on the same pictures."""
    try:
        how = JUDGES[(manifest.task, role)]
    except KeyError:
        return Verdict(f"no device-side metric for {manifest.task} {role}", 0.0, 1.0, False, 0)
    return how(got, ref, manifest)
