"""PP-OCR at conversion time: det pages, cls/rec text lines, judged against the FP32 pipeline.

Inputs are made exactly as the device pipeline makes them (runtimes.tasks.ocr_*): det sees the
page through its manifest pre-processing; cls and rec see the text lines that the *FP32* detector
finds, cropped and batched as OcrTask does, so every candidate is judged on the same lines.

With only a handful of real pictures, calibration and evaluation use the same pictures at
*different scales*, never the same tensor: calibration at 1/2 and 3/4 of the size the device would
run, evaluation at that size itself (see VIEW_SCALES). Give disjoint image lists when you have them.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtimes.errors import ConversionError
from runtimes.image import read_image
from runtimes.tasks.ocr import ClsParams, CtcParams, LineInput
from runtimes.tasks.ocr_db import DbParams, db_boxes
from runtimes.tasks.ocr_text import crop_text, ctc_decode, load_charset, sort_boxes
from runtimes.tasks.preprocess import Preprocess

from ..latency import session
from ..metrics import BoxMatch, cer, match_boxes, top1_agreement
from ..spec import ModelSpec
from .base import Evaluation, Family, Feeds

# purpose -> scales relative to the size the device runs the page at (its resize_limit size)
VIEW_SCALES = {"calibration": (0.5, 0.75), "evaluation": (1.0,)}
MIN_VIEW_SIDE = 32          # smaller views are below the detector's stride: nothing to learn from
BUDGETS = {"det": 0.99, "cls": 0.99, "rec": 0.02}   # box F1 >=, top-1 agreement >=, CER <=
METRICS = {"det": "box_f1@0.5 vs fp32", "cls": "top1_agreement vs fp32", "rec": "cer vs fp32"}
# det is also judged by what a user reads: page text through the FP32 recognizer, CER vs FP32 det's. Box F1 at
# IoU 0.5 alone let a det INT8 through that changed 2.2% of the text rapidocr reads (bench/ocr_vs_rapidocr.py).
# The mean over pages, not pooled characters: pooled, one dense page (det_layout, 4747 characters) hid a sign
# that lost 2 of its 4 lines (ocr_en_img623: page CER 15%, pooled 0.3%).
DET_TEXT_METRIC = "page_text_cer vs fp32"

# Small-input policy per det model: resize_limit parameters added to the export's own (PaddleOCR 2.x exports: long
# side at most 960, never enlarged). A small picture (short side under small_side_len) is enlarged until its short
# side is min_side_len or its long side the export's limit, whichever comes first; bigger pictures stay as they were
# (enlarged, a shop sign's big letters got lost) and no picture costs more than a large page. Without it, small photos
# of small print lose many lines: mean line recall 0.75 against rapidocr_onnxruntime's 0.93 at its defaults (which
# enlarges every picture to a 736 px short side); with min_side_len 768, 0.93, at or above the peer at every short
# side from 240 to 480 px (bench/ocr_small_print.py, FP32; 736 and 800 came within a line or two). Unlisted DB
# detectors get DEFAULT_SMALL_INPUT_POLICY, unmeasured for them; the daemon config can override it per pipeline.
SMALL_INPUT_POLICY: dict[str, dict[str, int]] = {"PP-OCRv4_mobile_det": {"min_side_len": 768, "small_side_len": 500}}
DEFAULT_SMALL_INPUT_POLICY: dict[str, int] = {"min_side_len": 768, "small_side_len": 500}


def with_small_input_policy(spec: ModelSpec) -> list[dict]:
    """The det pre-processing with the model's small-input policy added to a long-side (max) resize_limit; what
    the export or an earlier conversion already states wins, so applying it twice changes nothing."""
    policy = SMALL_INPUT_POLICY.get(spec.name, DEFAULT_SMALL_INPUT_POLICY)
    return [{**op, **{key: value for key, value in policy.items() if key not in op}}
            if op.get("op") == "resize_limit" and op.get("limit_type", "max") == "max" else op
            for op in spec.preprocess]


def charset(source: str | Path, use_space_char: bool) -> list[str]:
    """Recognition classes from the dictionary: a file (Path), or its text as metadata readers keep it."""
    if isinstance(source, Path):
        return load_charset(source, use_space_char)
    lines = [line.strip("\r\n") for line in source.split("\n")]   # as load_charset splits the file
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ConversionError("rec model: its character dictionary is empty")
    return ["<blank>"] + lines + ([" "] if use_space_char else [])


class OcrFamily(Family):
    task = "ocr"
    roles = ("det", "rec")       # cls is optional, as in the device pipeline

    def __init__(self, specs, threads: int = 0):
        super().__init__(specs, threads)
        # The bundle's det pre-processing is the spec's (converters/package.py): the policy is written there.
        self.spec("det").preprocess = with_small_input_policy(self.spec("det"))
        self.det_pre = Preprocess(self.spec("det").preprocess)
        self.db = DbParams.model_validate(self.spec("det").postprocess)
        rec = self.spec("rec")
        self.ctc = CtcParams.model_validate(rec.postprocess)
        if self.ctc.character_dict not in rec.files:
            raise ConversionError(f"rec model: character dictionary '{self.ctc.character_dict}' is not among "
                                  f"its files ({', '.join(rec.files) or 'none'})")
        self.charset = charset(rec.files[self.ctc.character_dict], self.ctc.use_space_char)
        self.line_inputs = {role: LineInput.from_entry(self.specs[role]) for role in ("cls", "rec")
                            if role in self.specs}
        self._cache: dict[tuple, object] = {}

    # ---- inputs -------------------------------------------------------------------------------
    def _views(self, images: list[Path], purpose: str) -> list[np.ndarray]:
        key = ("views", tuple(images), purpose)
        if key not in self._cache:
            limit = next((op.get("limit_side_len", 960) for op in self.spec("det").preprocess
                          if op.get("op") == "resize_limit"), None)
            views = []
            for path in images:
                image = read_image(path)
                long_side = max(image.shape[:2])
                deploy = min(long_side, limit) if limit else long_side
                for scale in VIEW_SCALES[purpose]:
                    factor = scale * deploy / long_side
                    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
                    if min(size) >= MIN_VIEW_SIDE:
                        views.append(image if factor == 1.0 else
                                     cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            self._cache[key] = views
        return self._cache[key]

    def _det_feed(self, view: np.ndarray) -> tuple[Feeds, object]:
        tensor, frame = self.det_pre(view)
        return {self.spec("det").input.name: tensor}, frame

    def _boxes(self, model: Path, view: np.ndarray, sess=None) -> list[np.ndarray]:
        feed, frame = self._det_feed(view)
        prob = (sess or session(model, self.threads)).run(None, feed)[0]
        return sort_boxes([box for box, _ in db_boxes(prob[0, 0], frame, self.db)])

    def _crops(self, fp32: dict[str, Path], images: list[Path], purpose: str) -> list[list[np.ndarray]]:
        """Per view, the text lines the FP32 detector finds, cropped as the device pipeline crops them."""
        key = ("crops", str(fp32["det"]), tuple(images), purpose)
        if key not in self._cache:
            sess = session(fp32["det"], self.threads)
            self._cache[key] = [[crop_text(view, box) for box in self._boxes(fp32["det"], view, sess)]
                                for view in self._views(images, purpose)]
        return self._cache[key]

    def _line_batches(self, role: str, per_view: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Each view's lines batched as OcrTask batches one picture's lines: rec as LineInput.batches
        groups them, cls in reading order and, to judge upside-down text too, once more turned 180
        degrees. Per picture, not pooled over pictures, where lines of one width end up together."""
        size = (ClsParams if role == "cls" else CtcParams).model_validate(self.spec(role).postprocess).batch_size
        line_input, batches = self.line_inputs[role], []
        for crops in per_view:
            if role == "cls":
                turned = [cv2.rotate(crop, cv2.ROTATE_180) for crop in crops]
                groups = [group[s:s + size] for group in (crops, turned) for s in range(0, len(group), size)]
            else:
                groups = [[crops[i] for i in members] for members in line_input.batches(crops, size)]
            batches += [line_input.batch(group) for group in groups]
        return batches

    def _feeds(self, role: str, fp32: dict[str, Path], images: list[Path], purpose: str) -> list[Feeds]:
        name = self.spec(role).input.name
        if role == "det":
            return [self._det_feed(view)[0] for view in self._views(images, purpose)]
        if role in self.line_inputs:
            return [{name: batch} for batch in self._line_batches(role, self._crops(fp32, images, purpose))]
        raise ConversionError(f"ocr: unknown role '{role}' (known: det, cls, rec)")

    def calibration_feeds(self, role, fp32, images, limit):
        feeds = self._feeds(role, fp32, images, "calibration")
        if len(feeds) > limit:   # spread the picks over all pictures instead of taking the first ones
            feeds = [feeds[i] for i in np.linspace(0, len(feeds) - 1, limit).round().astype(int)]
        return feeds

    def latency_feeds(self, role, fp32, images, limit):
        """The device's own input sizes (evaluation views: full deploy size)."""
        feeds = self._feeds(role, fp32, images, "evaluation")
        if len(feeds) > limit:
            feeds = [feeds[i] for i in np.linspace(0, len(feeds) - 1, limit).round().astype(int)]
        return feeds

    # ---- judging ------------------------------------------------------------------------------
    def evaluate(self, role, fp32, candidate, images):
        """det: box F1 (IoU >= 0.5) vs FP32 boxes and page text CER (mean per page); cls: top-1 agreement on lines and
        their 180-degree turns; rec: CER vs FP32 readings on the lines FP32 reads with score >= drop_score,
        a line the candidate reads below drop_score counting as not read."""
        if role == "det":
            return self._evaluate_det(fp32, candidate, images)
        feeds = self._feeds(role, fp32, images, "evaluation")
        ref = self._reference(role, fp32, images, feeds)
        cand_sess = session(candidate, self.threads)
        outs = [cand_sess.run(None, feed)[0] for feed in feeds]
        if role == "cls":
            got = np.concatenate([o.argmax(axis=1) for o in outs]) if outs else np.zeros(0, int)
            value = top1_agreement(got, ref)
            return Evaluation(METRICS[role], value, BUDGETS[role], ref.size > 0 and value >= BUDGETS[role],
                              int(ref.size))
        texts, keep = ref
        # as the pipeline does: a line the candidate reads below drop_score is not shown at all
        got = [text if score >= self.ctc.drop_score else "" for out in outs
               for text, score in ctc_decode(out, self.charset)]
        value = cer([got[i] for i in keep], [texts[i] for i in keep])
        return Evaluation(METRICS[role], value, BUDGETS[role], len(keep) > 0 and value <= BUDGETS[role],
                          len(keep), lower_is_better=True)

    def _reference(self, role: str, fp32: dict[str, Path], images: list[Path], feeds: list[Feeds]):
        """FP32 answers on the evaluation inputs, computed once per model and image list."""
        key = ("reference", role, str(fp32[role]), str(fp32["det"]), tuple(images))
        if key not in self._cache:
            sess = session(fp32[role], self.threads)
            outs = [sess.run(None, feed)[0] for feed in feeds]
            if role == "cls":
                self._cache[key] = np.concatenate([o.argmax(axis=1) for o in outs]) if outs else np.zeros(0, int)
            else:
                decoded = [item for out in outs for item in ctc_decode(out, self.charset)]
                # Judge the lines a user would see: FP32 readings at or above the pipeline's drop_score.
                keep = [i for i, (_, score) in enumerate(decoded) if score >= self.ctc.drop_score]
                self._cache[key] = ([text for text, _ in decoded], keep)
        return self._cache[key]

    def _page_text(self, view: np.ndarray, boxes: list[np.ndarray], rec) -> str:
        """What the device would print for the page: its lines read by the FP32 recognizer in the device's
        batches, low scores dropped."""
        crops = [crop_text(view, box) for box in boxes]
        name, line_input = self.spec("rec").input.name, self.line_inputs["rec"]
        readings: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for members in line_input.batches(crops, self.ctc.batch_size):      # as OcrTask.recognize reads them
            batch = line_input.batch([crops[i] for i in members])
            for i, reading in zip(members, ctc_decode(rec.run(None, {name: batch})[0], self.charset)):
                readings[i] = reading
        return "".join(text for text, score in readings if score >= self.ctc.drop_score)

    def _evaluate_det(self, fp32, candidate, images) -> Evaluation:
        views = self._views(images, "evaluation")
        rec = session(fp32["rec"], self.threads)
        key = ("reference", "det", str(fp32["det"]), str(fp32["rec"]), tuple(images))
        if key not in self._cache:
            sess = session(fp32["det"], self.threads)
            boxes = [self._boxes(fp32["det"], view, sess) for view in views]
            self._cache[key] = boxes, [self._page_text(v, b, rec) for v, b in zip(views, boxes)]
        ref_boxes, ref_texts = self._cache[key]
        cand_sess = session(candidate, self.threads)
        total, texts = BoxMatch(), []
        for view, expected in zip(views, ref_boxes):
            found = self._boxes(candidate, view, cand_sess)
            total = total + match_boxes(found, expected, 0.5)
            texts.append(self._page_text(view, found, rec))
        samples = total.tp + total.fn
        text_cer = float(np.mean([cer([text], [ref]) for text, ref in zip(texts, ref_texts)])) if texts else 0.0
        # Nothing to compare (no text found by FP32) proves nothing: refuse rather than accept blind.
        passed = samples > 0 and total.f1 >= BUDGETS["det"] and text_cer <= BUDGETS["rec"]
        return Evaluation(METRICS["det"], total.f1, BUDGETS["det"], passed, samples,
                          extras={DET_TEXT_METRIC: text_cer})
