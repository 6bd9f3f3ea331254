"""Task registry: the manifest's `task` names the module whose Task subclass runs the bundle.

Modules are imported when a bundle asks for them, so loading one pipeline never pays for the others.
"""
from __future__ import annotations

import importlib

from ..bundle import Bundle
from ..errors import BundleError
from ..run_context import RunContext
from .base import ModelRunner, Task, TaskOutput, Timings

TASK_MODULES = {"ocr": "ocr", "detection": "detection", "classification": "classification",
                "keypoints": "keypoints", "segmentation": "segmentation"}


def task_class(name: str) -> type[Task]:
    if name not in TASK_MODULES:
        raise BundleError(f"bundle task '{name}' is not known to this edge (known: {', '.join(TASK_MODULES)})")
    module = importlib.import_module(f"{__name__}.{TASK_MODULES[name]}")
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Task) and obj.name == name:
            return obj
    raise BundleError(f"task module '{TASK_MODULES[name]}' defines no task named '{name}'")


def load_task(bundle: Bundle, context: RunContext | None = None) -> Task:
    """The bundle's pipeline, its models opened as this device's `context` says (bench choice, state folder)."""
    return task_class(bundle.manifest.task)(bundle, context)


__all__ = ["RunContext", "TASK_MODULES", "task_class", "load_task", "Task", "TaskOutput", "Timings", "ModelRunner"]
