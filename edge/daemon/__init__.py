"""The on-device daemon behind `edge run`: sources -> task pipeline -> MQTT.

Entry points: `edge.daemon.service.run_daemon(DaemonConfig)` (built by
`edge.daemon.config.load_daemon_config` or `short_form_config`), and `python -m edge.daemon` with the
flags of `edge run`. Topic names and payloads live in `edge.daemon.contract` (importable without
loading any model runtime). Like `runtimes`, nothing here imports paddle, paddle2onnx or onnx.
"""
