"""Task registry: the manifest's `task` names the pipeline class that runs the bundle."""
from __future__ import annotations

from ..bundle import Bundle
from ..errors import BundleError
from .base import ModelRunner, Task, TaskOutput, Timings
from .ocr import OcrTask

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (OcrTask,)}


def load_task(bundle: Bundle) -> Task:
    task = bundle.manifest.task
    if task not in TASKS:
        raise BundleError(f"bundle task '{task}' is not known to this edge (known: {', '.join(TASKS)})")
    return TASKS[task](bundle)


__all__ = ["TASKS", "load_task", "Task", "TaskOutput", "Timings", "ModelRunner"]
