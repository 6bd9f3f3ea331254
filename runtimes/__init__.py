"""The device core of edge: bundle format, error root, backends and task pipelines.

Nothing here imports paddle, paddle2onnx or onnx: a device has none of them.
"""
from .errors import EdgeError

__version__ = "0.1.0"
__all__ = ["EdgeError", "__version__"]
