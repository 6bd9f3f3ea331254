"""The walls between the floors: imports only point down, and a device needs no converter toolchain."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["edge", "converters", "device_profiles", "runtimes"]   # top to bottom
CONVERTER_TOOLCHAIN = {"paddle", "paddle2onnx", "onnx"}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_only_point_down():
    violations = []
    for index, floor in enumerate(FLOORS):
        above = set(FLOORS[:index])
        for path in (ROOT / floor).rglob("*.py"):
            wrong = imported_top_levels(path) & above
            if wrong:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert not violations, "\n".join(violations)


def test_device_code_never_imports_the_converter_toolchain():
    device_files = list((ROOT / "runtimes").rglob("*.py")) + list((ROOT / "edge" / "daemon").rglob("*.py"))
    offenders = [f"{p.relative_to(ROOT)}: {sorted(imported_top_levels(p) & CONVERTER_TOOLCHAIN)}"
                 for p in device_files if imported_top_levels(p) & CONVERTER_TOOLCHAIN]
    assert not offenders, "\n".join(offenders)


BLOCKER = """
import sys, importlib.abc
class HideToolchain(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'paddle', 'paddle2onnx', 'onnx', 'converters'}:
            raise ImportError(f'{name} is hidden: a device does not have it')
        return None
sys.meta_path.insert(0, HideToolchain())
import edge.cli, edge.daemon.service, edge.daemon.mqtt, runtimes.bundle, runtimes.backends, runtimes.tasks
from runtimes.tasks import task_class
for name in ('ocr', 'detection', 'classification', 'keypoints', 'segmentation'):
    task_class(name)
from runtimes.backends import BACKENDS
assert 'onnx' in BACKENDS, BACKENDS
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'paddle', 'paddle2onnx', 'onnx', 'converters'})
print('LOADED', loaded)
"""


def test_device_side_imports_with_paddle_and_onnx_hidden():
    proc = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout
