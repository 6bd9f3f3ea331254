"""PP-OCR: DB text detection -> (optional) 180-degree line classifier -> CTC line recognition.

Every parameter comes from the bundle manifest: pre-processing ops, `postprocess` dicts (kind db /
cls / ctc), the classifier's labels and the recognizer's character dictionary.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..bundle import Bundle, ModelEntry
from ..errors import BundleError
from ..run_context import RunContext
from .base import ModelRunner, Stopwatch, Task, TaskOutput, Timings
from .ocr_db import DbParams, add_margin, db_boxes, remove_margin
from .ocr_text import crop_text, ctc_decode, line_batches, load_charset, reading_order, rec_batch, rotate_upside_down

UPSIDE_DOWN_LABEL = "180"
NOT_ENLARGED = {"resize_limit": {"min_side_len": 0}}     # det pre-processing without the small-input policy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClsParams(_Strict):
    kind: Literal["cls"] = "cls"
    thresh: float = Field(0.9, ge=0.0, le=1.0)   # rotate only when this sure the line is upside down
    batch_size: int = Field(6, gt=0)


class CtcParams(_Strict):
    kind: Literal["ctc"] = "ctc"
    character_dict: str                           # bundle-relative path of the dictionary file
    use_space_char: bool = True
    batch_size: int = Field(6, gt=0)
    drop_score: float = Field(0.5, ge=0.0, le=1.0)  # readings scoring below this are left out


# role -> the postprocess kind and parameter model the pipeline needs for it
ROLE_PARAMS: dict[str, type[BaseModel]] = {"det": DbParams, "cls": ClsParams, "rec": CtcParams}


def postprocess_params(entry: ModelEntry) -> Any:
    model = ROLE_PARAMS[entry.role]
    wanted = model.model_fields["kind"].default
    kind = entry.postprocess.get("kind")
    if kind != wanted:
        raise BundleError(f"model '{entry.name}' ({entry.role}) has postprocess kind '{kind}'; "
                          f"the ocr task needs '{wanted}' for the {entry.role} model")
    try:
        return model.model_validate(entry.postprocess)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"model '{entry.name}' ({entry.role}) postprocess.{field}: {first['msg']}") from None


# manifest pre-processing op -> the LineInput fields it sets (to_chw / pad_width: rec_batch does them)
LINE_OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "rec_resize": lambda op: {"height": op.get("height"), "min_width": op.get("width")},
    "normalize": lambda op: {k: op[k] for k in ("scale", "mean", "std") if k in op},
    "color": lambda op: {"rgb": op.get("order", "rgb") == "rgb"},
    "to_chw": lambda op: {},
    "pad_width": lambda op: {},
}


class LineInput(_Strict):
    """How a text-line model (cls, rec) wants its batch, read from its manifest pre-processing ops."""
    height: int = Field(gt=0)
    min_width: int = Field(gt=0)
    max_width: int | None = None          # a fixed-width model input caps the batch width
    scale: float = 1 / 255
    mean: list[float] = [0.0, 0.0, 0.0]
    std: list[float] = [1.0, 1.0, 1.0]
    rgb: bool = False

    @classmethod
    def from_entry(cls, entry: ModelEntry) -> "LineInput":
        where = f"model '{entry.name}' ({entry.role})"
        found: dict[str, Any] = {}
        for spec in entry.preprocess:
            if spec.get("op") not in LINE_OPS:
                raise BundleError(f"{where}: pre-processing op '{spec.get('op')}' is not supported for text "
                                  f"lines (known: {', '.join(LINE_OPS)})")
            found.update(LINE_OPS[spec["op"]](spec))
        width = entry.input.shape[-1] if len(entry.input.shape) == 4 else None
        try:
            return cls(max_width=width, **found)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise BundleError(f"{where}: pre-processing gives no valid {field} ({first['msg']}); it needs a "
                              f"rec_resize op with height and width") from None

    def batches(self, crops: list[np.ndarray], size: int) -> list[list[int]]:
        """Crop indices in the batches this model reads them in (ocr_text.line_batches)."""
        return line_batches(crops, size, floor=self.min_width / self.height)

    def batch(self, crops: list[np.ndarray]) -> np.ndarray:
        return rec_batch(crops, self.height, self.min_width, self.max_width, scale=self.scale,
                         mean=self.mean, std=self.std, rgb=self.rgb)


class OcrTask(Task):
    name = "ocr"

    def __init__(self, bundle: Bundle, context: RunContext | None = None):
        super().__init__(bundle, context)
        manifest = bundle.manifest
        self.det_params: DbParams = postprocess_params(manifest.model("det"))
        self.rec_params: CtcParams = postprocess_params(manifest.model("rec"))
        self.rec_input = LineInput.from_entry(manifest.model("rec"))
        dictionary = bundle.path_of(self.rec_params.character_dict)
        if not dictionary.is_file():
            raise BundleError(f"{bundle.root}: character dictionary '{self.rec_params.character_dict}' "
                              f"is missing from the bundle; reconvert it")
        self.charset = load_charset(dictionary, self.rec_params.use_space_char)
        self.cls = None
        if any(m.role == "cls" for m in manifest.models):  # the angle classifier is optional
            entry = manifest.model("cls")
            self.cls_params: ClsParams = postprocess_params(entry)
            self.cls_input = LineInput.from_entry(entry)
            if not entry.labels or UPSIDE_DOWN_LABEL not in entry.labels:
                raise BundleError(f"model '{entry.name}' (cls) needs labels including '{UPSIDE_DOWN_LABEL}' "
                                  f"(it has {entry.labels})")
            self.upside_down = entry.labels.index(UPSIDE_DOWN_LABEL)
            self.cls = ModelRunner(bundle, "cls", self.context)
        self.det = ModelRunner(bundle, "det", self.context)
        self.rec = ModelRunner(bundle, "rec", self.context)

    def __call__(self, image: np.ndarray) -> TaskOutput:
        timings = Timings()
        watch = Stopwatch(timings)
        boxes = self.detect(image, watch)
        with watch("pre"):
            crops = [crop_text(image, box) for box in boxes]
        crops = self.classify(crops, watch)
        readings = self.recognize(crops, watch)
        with watch("post"):
            results = [{"text": text, "score": round(score, 5), "box": box.astype(int).tolist()}
                       for box, (text, score) in zip(boxes, readings)
                       if score >= self.rec_params.drop_score]
        return TaskOutput(results=results, timings=timings)

    def detect(self, image: np.ndarray, watch: Stopwatch | None = None) -> list[np.ndarray]:
        """BGR image -> text boxes ((4,2) float32 [tl,tr,br,bl], source pixels) in reading order."""
        watch = watch or Stopwatch(Timings())
        with watch("pre"):
            framed, margin = add_margin(image)
            # A tight crop's text fills it: not small print, so the small-input enlargement would only make its
            # letters too big for the detector (a 78 px word crop split in two).
            tensor, frame = self.det.preprocess(framed, **(NOT_ENLARGED if margin else {}))
            remove_margin(frame, margin, image.shape[:2])
        with watch("infer"):
            prob = self.det.infer(tensor)[0]
        with watch("post"):
            found = db_boxes(prob[0, 0], frame, self.det_params)
            boxes = [box for box, _ in found]
            return [boxes[i] for i in reading_order(boxes)]

    def classify(self, crops: list[np.ndarray], watch: Stopwatch | None = None) -> list[np.ndarray]:
        """Line crops -> the same crops, those the classifier finds upside down turned 180 degrees."""
        if self.cls is None or not crops:
            return crops
        watch = watch or Stopwatch(Timings())
        size = self.cls_params.batch_size
        turned: list[np.ndarray] = []
        for start in range(0, len(crops), size):
            chunk = crops[start:start + size]
            with watch("pre"):
                batch = self.cls_input.batch(chunk)
            with watch("infer"):
                probs = self.cls.infer(batch)[0]
            with watch("post"):
                labels = probs.argmax(axis=1)
                scores = probs[np.arange(len(labels)), labels]
                turned += rotate_upside_down(chunk, labels, scores, self.upside_down, self.cls_params.thresh)
        return turned

    def recognize(self, crops: list[np.ndarray], watch: Stopwatch | None = None) -> list[tuple[str, float]]:
        """Line crops -> [(text, score)] in the crops' order (drop_score is not applied here)."""
        watch = watch or Stopwatch(Timings())
        readings: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        with watch("pre"):
            batches = self.rec_input.batches(crops, self.rec_params.batch_size)
        for members in batches:
            with watch("pre"):
                batch = self.rec_input.batch([crops[i] for i in members])
            with watch("infer"):
                probs = self.rec.infer(batch)[0]
            with watch("post"):
                for i, reading in zip(members, ctc_decode(probs, self.charset)):
                    readings[i] = reading
        return readings
