"""Framing between a parent and a model worker process: one request or reply per frame.

Standalone on purpose (stdlib + numpy only): workers run under other interpreters than the parent
(Paddle Lite's CPython 3.10 with numpy<2, an emulated aarch64 CPython), so this file is loaded by
path there, not as part of the `runtimes` package. Arrays travel as .npz (a format numpy 1 and 2
both read), the rest as a JSON header.

Frame: 8-byte big-endian length of the JSON header, the header, 8-byte length of the npz, the npz.
"""
from __future__ import annotations

import io
import json
import struct

import numpy as np

_LEN = struct.Struct(">Q")


class ChannelClosed(EOFError):
    """The other side is gone (exited, crashed or closed the pipe)."""


def _read_exact(stream, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise ChannelClosed("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_frame(stream, header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    head = json.dumps(header).encode("utf-8")
    body = io.BytesIO()
    if arrays:
        np.savez(body, **arrays)
    data = body.getvalue()
    stream.write(_LEN.pack(len(head)) + head + _LEN.pack(len(data)) + data)
    stream.flush()


def read_frame(stream) -> tuple[dict, dict[str, np.ndarray]]:
    head = json.loads(_read_exact(stream, _LEN.unpack(_read_exact(stream, _LEN.size))[0]).decode("utf-8"))
    size = _LEN.unpack(_read_exact(stream, _LEN.size))[0]
    arrays = {}
    if size:
        with np.load(io.BytesIO(_read_exact(stream, size)), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    return head, arrays


def serve(load, run, commands: dict | None = None) -> None:
    """Worker main loop: `load(header) -> (model, info dict)` once, then `run(model, arrays) -> list of
    arrays` per request, or for a request {"op": name, ...} whose name is in `commands`,
    `commands[name](model, request) -> dict` (a JSON reply: work that is not one inference).
    Replies {"ok": false, "error": ...} on a Python-level failure and goes on; a native crash ends the
    process, which the parent notices as a closed channel."""
    import sys
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr          # a library that prints must not corrupt the channel
    header, _ = read_frame(stdin)
    try:
        model, info = load(header)
    except Exception as err:  # reported to the parent as one line
        write_frame(stdout, {"ok": False, "error": f"{type(err).__name__}: {err}"})
        return
    write_frame(stdout, {"ok": True, **info})
    while True:
        try:
            request, arrays = read_frame(stdin)
        except ChannelClosed:
            return
        if request.get("op") == "close":
            return
        command = (commands or {}).get(request.get("op"))
        try:
            if command is not None:
                write_frame(stdout, {"ok": True, **command(model, request)})
                continue
            outputs = run(model, arrays)
        except Exception as err:
            write_frame(stdout, {"ok": False, "error": f"{type(err).__name__}: {err}"})
            continue
        write_frame(stdout, {"ok": True, "outputs": len(outputs)},
                    {f"out{i}": np.asarray(o) for i, o in enumerate(outputs)})
