"""A real RTSP camera on 127.0.0.1 for tests and benchmarks: GStreamer's RTSP server (Debian's
gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-plugins-good and -ugly; .ci/run installs them).

The server runs as its own process under the system Python (`/usr/bin/python3`, which has the `gi`
bindings; the project's Python need not). It streams real pictures, H.264 encoded live at a fixed
frame rate, looping over them, like a camera would:

    rtsp://127.0.0.1:PORT/live        open to anyone
    rtsp://127.0.0.1:AUTH_PORT/live   Digest auth (user `viewer`, password `secret`): 401 without
    any other path                    404

`RtspServer` (used from the test process) starts it, waits until it listens, and can stop it, start it
again on the same port, or freeze it with SIGSTOP (TCP connections stay open, nothing is sent: a
stalled camera). Run as a script it is the server itself:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --fps 15 frame0.jpg frame1.jpg
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("EDGE_TEST_GI_PYTHON", "/usr/bin/python3")
USER, PASSWORD = "viewer", "secret"
APT_PACKAGES = "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"


def missing_reason() -> str | None:
    """Why the server cannot run on this machine (None if it can): the packages .ci/run installs."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no {SYSTEM_PYTHON} (the system Python with GStreamer's bindings)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "missing = [e for e in ('multifilesrc', 'jpegdec', 'x264enc', 'rtph264pay')"
             " if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")
    done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or done.stdout.strip():
        what = done.stdout.strip() or done.stderr.strip().splitlines()[-1:]
        return f"GStreamer's RTSP server is not installed ({what}): apt-get install {APT_PACKAGES}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """The server process; `url(path)` names a stream, `stop`/`start`/`freeze`/`thaw` change its life."""

    def __init__(self, frames: list[Path], fps: int = 15, port: int | None = None):
        self.frames, self.fps = frames, fps
        self.port = port or free_port()
        self.auth_port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, path: str = "live", userinfo: str | None = None) -> str:
        """The open server's stream; with `userinfo` ("user:password@", may be "") the one asking for it."""
        if userinfo is None:
            return f"rtsp://127.0.0.1:{self.port}/{path}"
        return f"rtsp://{userinfo}127.0.0.1:{self.auth_port}/{path}"

    def start(self, timeout: float = 20.0) -> "RtspServer":
        argv = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--port", str(self.port),
                "--auth-port", str(self.auth_port), "--fps", str(self.fps),
                *map(str, self.frames)]
        # The system Python must not see the project's virtualenv or pyenv paths.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYENV", "VIRTUAL_ENV"))}
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        from edge.broker import wait_for_ports     # here: the server side runs under the system Python, without edge

        waited = wait_for_ports(self.process, "127.0.0.1", [self.port, self.auth_port], timeout)
        if waited is None:
            return self
        if self.process.poll() is not None:
            raise RuntimeError(f"RTSP server exited ({self.process.returncode}): {self.process.stderr.read()}")
        self.stop()
        raise RuntimeError(f"RTSP server did not listen on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        """The camera goes away: its connections close."""
        if self.process is None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """The camera hangs: the process stops, its TCP connections stay open and silent."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_frames(images: list[Path], folder: Path, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """The pictures as same-sized JPEGs named frame0.jpg, frame1.jpg, ... (the server loops over them)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"frame{index}.jpg"
        picture = cv2.imread(str(image))
        if picture is None:
            raise RuntimeError(f"cannot read {image}")
        cv2.imwrite(str(path), cv2.resize(picture, size), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


# --- the server itself (system Python, GStreamer) ---------------------------------------------------------

def _launch_line(frames: list[Path], fps: int) -> str:
    folder = frames[0].parent
    if any(f.parent != folder or f.name != f"frame{i}.jpg" for i, f in enumerate(frames)):
        raise SystemExit("frames must be frame0.jpg, frame1.jpg, ... in one folder (see write_frames)")
    # Each picture is shown for one second, then the next; x264 in zero-latency mode with a key frame
    # every second, as an IP camera sends it.
    return (f"( multifilesrc location={folder}/frame%d.jpg index=0 stop-index={len(frames) - 1} loop=true "
            f"caps=image/jpeg,framerate=1/1 ! jpegdec ! videoconvert ! videorate ! "
            f"video/x-raw,format=I420,framerate={fps}/1 ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bframes=0 threads=1 ! "
            f"video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )")


def serve(port: int, auth_port: int, fps: int, frames: list[Path]) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    launch = _launch_line(frames, fps)

    def server_on(listen_port: int, auth: object | None) -> None:
        server = GstRtspServer.RTSPServer()
        server.set_address("127.0.0.1")
        server.set_service(str(listen_port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        if auth is not None:
            server.set_auth(auth)
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_permission_for_role("viewer", "media.factory.access", True)
            permissions.add_permission_for_role("viewer", "media.factory.construct", True)
            factory.set_permissions(permissions)
        server.get_mount_points().add_factory("/live", factory)
        if server.attach(None) == 0:
            raise SystemExit(f"cannot listen on 127.0.0.1:{listen_port}")

    # The second server asks every client for credentials (no default token: 401 without them), by
    # Digest, as most IP cameras do.
    auth = GstRtspServer.RTSPAuth()
    viewer = GstRtspServer.RTSPToken()
    viewer.set_string("media.factory.role", "viewer")
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    auth.add_digest(USER, PASSWORD, viewer)
    server_on(port, None)
    server_on(auth_port, auth)

    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"listening on rtsp://127.0.0.1:{port}/live and (with credentials) :{auth_port}/live", flush=True)
    loop.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auth-port", type=int, required=True)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("frames", type=Path, nargs="+", help="frame0.jpg frame1.jpg ... (same size)")
    args = parser.parse_args()
    serve(args.port, args.auth_port, args.fps, [f.resolve() for f in args.frames])


if __name__ == "__main__":
    main()
