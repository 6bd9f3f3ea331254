"""`edge toolchain install|status|remove` as a user types them: real installs in a temporary EDGE_CACHE_DIR,
one line per toolchain, one line and exit 2 when something fails (an unreachable registry, a name
this edge does not know)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

from converters.toolchains import TOOLCHAINS

from ..paddle_lite_support import REPO_ROOT, edge_cli, paddle_lite_root  # noqa: F401


def one_error_line(stderr: str) -> str:
    """The CLI's single error line; fails if there is a traceback or more than one."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("edge toolchain: error: ")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def test_status_lists_every_toolchain_one_line_each(paddle_lite_root):
    proc = edge_cli(["toolchain", "status"], paddle_lite_root)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(TOOLCHAINS)
    assert lines[0].startswith("paddle-lite    installed paddlelite 2.13rc0, numpy 1.")
    listed = json.loads(edge_cli(["toolchain", "status", "--json"], paddle_lite_root).stdout)
    assert [entry["name"] for entry in listed] == list(TOOLCHAINS)
    lite = listed[0]
    assert lite["installed"] and lite["info"]["opt"].endswith("/venv/bin/paddle_lite_opt")


STATUS_WITH_AN_UNSHIPPED_TOOLCHAIN = """
import sys
from converters.toolchains import TOOLCHAINS
from edge.cli import main
TOOLCHAINS["future-tool"] = "future_tool.FutureToolchain"   # registered, but its module is not in this edge
sys.exit(main(sys.argv[1:]))
"""


def test_a_registered_toolchain_without_its_module_is_listed_unavailable(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", STATUS_WITH_AN_UNSHIPPED_TOOLCHAIN, "toolchain", *args],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                              env={"EDGE_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})

    status = run("status")
    assert status.returncode == 0, status.stderr
    line = status.stdout.splitlines()[-1]
    assert line.startswith("future-tool    missing   unavailable: this edge has no installer for 'future-tool'")
    install = run("install", "future-tool")
    assert install.returncode == 2
    assert "no installer for 'future-tool'" in one_error_line(install.stderr)


def test_unknown_name_is_one_line(tmp_path):
    proc = edge_cli(["toolchain", "install", "paddle-light"], tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == ("edge toolchain: error: unknown toolchain 'paddle-light' "
                                           f"(known: {', '.join(TOOLCHAINS)})")


def test_remove_deletes_the_folder_and_says_so(tmp_path):
    folder = tmp_path / "toolchains" / "paddle-lite" / "venv"
    folder.mkdir(parents=True)                                  # even a half-finished one
    first = edge_cli(["toolchain", "remove", "paddle-lite"], tmp_path)
    assert first.returncode == 0 and first.stdout.startswith("paddle-lite: removed ")
    assert not folder.parent.exists()
    second = edge_cli(["toolchain", "remove", "paddle-lite"], tmp_path)
    assert second.returncode == 0 and second.stdout == "paddle-lite: was not installed\n"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_install_with_the_registry_unreachable_says_what_failed_in_one_line(tmp_path):
    # pip's own configuration (extra indexes, find-links) is set aside: the only index is a closed port,
    # and an empty pip cache cannot answer for it
    offline = {"PIP_INDEX_URL": f"http://127.0.0.1:{closed_port()}/simple", "PIP_CONFIG_FILE": "/dev/null",
               "PIP_FIND_LINKS": "", "PIP_CACHE_DIR": str(tmp_path / "pip-cache"), "PIP_RETRIES": "0"}
    cache = tmp_path / "cache"
    proc = edge_cli(["toolchain", "install", "paddle-lite"], cache, timeout=300, **offline)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_error_line(proc.stderr)
    assert line.startswith("edge toolchain: error: paddle-lite: ") and " failed: " in line, line
    assert "package registry cannot be reached" in line, line
    assert not (cache / "toolchains" / "paddle-lite").exists()
    assert not list((cache / "toolchains").glob(".paddle-lite.staging-*"))
