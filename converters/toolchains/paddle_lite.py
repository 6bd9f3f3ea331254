"""Paddle Lite's `opt` and x86 runtime, in a private venv: `edge toolchain install paddle-lite`.

PyPI's `paddlelite` is published only for CPython 3.7-3.10 on x86_64 Linux, while edge runs on 3.11+,
so the toolchain is a venv of its own. Its interpreter is a CPython 3.10/3.9/3.8 found on this machine
(PATH, then pyenv's folders), or else Debian bullseye's python3.9 unpacked without root
(converters/toolchains/bullseye.py). numpy is pinned below 2: numpy 2 silently corrupts
`Tensor.from_numpy` in paddlelite 2.13rc0 (measured: wrong inputs, wrong outputs, no error).

EDGE_PADDLE_LITE_ROUTE=found|debian forces one route (default: found, else debian).

Layout of the installed folder (toolchain_dir("paddle-lite")):
    venv/bin/python, venv/bin/paddle_lite_opt     the tools
    python/usr/bin/python3.9                      only on the Debian route
"""
from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from .base import Toolchain, ToolchainError, run_step
from .bullseye import unpack_bullseye_python

PADDLELITE = "paddlelite==2.13rc0"
NUMPY = "numpy<2"
PIP = "pip<25"                    # pip 25 dropped Python 3.8
VERSIONS = ("3.10", "3.9", "3.8")  # newest first: the wheels are the same release for all three
ROUTES = ("auto", "found", "debian")
CHECK = ("import sys, numpy, importlib.metadata as m, paddlelite.lite; "
         "major = int(numpy.__version__.split('.')[0]); "
         "print(m.version('paddlelite'), numpy.__version__, '%d.%d.%d' % sys.version_info[:3]); "
         "sys.exit(0 if major < 2 else 3)")


class PaddleLiteToolchain(Toolchain):
    name = "paddle-lite"
    summary = "Paddle Lite's opt (Paddle program -> .nb) and its x86 runtime, in a private Python venv"

    def __init__(self, progress=lambda message: None, route: str | None = None):
        super().__init__(progress)
        self.route = route or os.environ.get("EDGE_PADDLE_LITE_ROUTE") or "auto"
        if self.route not in ROUTES:
            raise ToolchainError(f"EDGE_PADDLE_LITE_ROUTE={self.route} is not one of: {', '.join(ROUTES)}")

    # --- building ---------------------------------------------------------------------------------
    def _build(self, staging: Path) -> dict:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            raise ToolchainError(f"{self.name}: PyPI's paddlelite (opt) exists only for x86_64 Linux; this machine "
                                 f"is {platform.machine()}: convert on an x86_64 machine")
        found = None if self.route == "debian" else find_python()
        if found is None and self.route == "found":
            raise ToolchainError(f"{self.name}: no working CPython {'/'.join(VERSIONS)} on this machine "
                                 "(EDGE_PADDLE_LITE_ROUTE=found)")
        if found:
            base, version = found
            source = f"found {base}"
            env: dict[str, str] = {}
            self.progress(f"{self.name}: using CPython {version} found at {base}")
        else:
            self.progress(f"{self.name}: no CPython {'/'.join(VERSIONS)} here; unpacking Debian bullseye's "
                          "python3.9 (no root needed)")
            base, libs, packages = unpack_bullseye_python(staging / "python", staging / "apt", self.name)
            version, source = "3.9", f"Debian bullseye {packages}"
            env = {"LD_LIBRARY_PATH": str(libs)}      # only _ssl/_ctypes need it (pip's https, ctypes)
        venv = staging / "venv"
        self._make_venv(base, venv, version, env, staging)
        self.progress(f"{self.name}: pip install {PADDLELITE} \"{NUMPY}\"")
        run_step([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", PADDLELITE, NUMPY],
                 f"pip install {PADDLELITE}", self.name, env=_child_env(env), timeout=1800)
        shutil.rmtree(staging / "apt", ignore_errors=True)
        relocate_venv(venv, staging, self.path)
        final_env = {k: v.replace(str(staging), str(self.path)) for k, v in env.items()}
        lite, numpy_version, python_version = self._probe(venv / "bin" / "python", env)
        return {"summary": f"paddlelite {lite}, numpy {numpy_version}, Python {python_version} ({source})",
                "python": str(self.path / "venv" / "bin" / "python"),
                "opt": str(self.path / "venv" / "bin" / "paddle_lite_opt"),
                "paddlelite": lite, "numpy": numpy_version, "python_version": python_version,
                "interpreter": source, "env": final_env}

    def _make_venv(self, base: Path, venv: Path, version: str, env: dict[str, str], staging: Path) -> None:
        """A venv without ensurepip (Debian splits it out), pip installed from its own wheel."""
        self.progress(f"{self.name}: creating the venv")
        run_step([str(base), "-m", "venv", "--without-pip", str(venv)], "creating the venv", self.name,
                 env=_child_env(env))
        wheels = staging / "wheels"
        run_step([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                  "--python-version", version, "-d", str(wheels), PIP], f"downloading {PIP} for Python {version}",
                 self.name)
        wheel = next(wheels.glob("pip-*.whl"), None)
        if wheel is None:
            raise ToolchainError(f"{self.name}: pip download wrote no pip wheel into {wheels}")
        run_step([str(venv / "bin" / "python"), f"{wheel}/pip", "install", "--quiet", "--no-index", str(wheel)],
                 "installing pip into the venv", self.name, env=_child_env(env))
        shutil.rmtree(wheels, ignore_errors=True)

    def _probe(self, python: Path, env: dict[str, str]) -> tuple[str, str, str]:
        out = run_step([str(python), "-c", CHECK], "importing paddlelite in the venv", self.name,
                       env=_child_env(env), timeout=120)
        lite, numpy_version, python_version = out.split()
        return lite, numpy_version, python_version

    # --- checking ---------------------------------------------------------------------------------
    def _check(self, root: Path, info: dict) -> str | None:
        python, opt = root / "venv" / "bin" / "python", root / "venv" / "bin" / "paddle_lite_opt"
        if not python.exists():
            return f"its Python {python} is missing (was its base interpreter removed?)"
        if not opt.is_file():
            return f"{opt} is missing"
        try:
            proc = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=120,
                                  env=_child_env(info.get("env") or {}))
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"its Python does not run: {err}"
        if proc.returncode == 3:
            return "numpy 2 is installed in it (paddlelite needs numpy<2)"
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            return f"its Python cannot import paddlelite: {lines[-1] if lines else f'exit {proc.returncode}'}"
        return None


def find_python() -> tuple[Path, str] | None:
    """The newest CPython 3.8-3.10 that really runs here (pyenv shims on PATH exist for versions that
    are not selected and fail when run, so each candidate is tried)."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for version in VERSIONS:
        names = [shutil.which(f"python{version}"), f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                 *sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"), reverse=True)]
        for candidate in dict.fromkeys(n for n in names if n):
            if _runs_as(candidate, version):
                return Path(candidate), version
    return None


def _runs_as(python: str, version: str) -> bool:
    probe = "import sys, venv, platform; print('%d.%d' % sys.version_info[:2], platform.machine())"
    try:
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.split() == [version, "x86_64"]


def relocate_venv(venv: Path, old: Path, new: Path) -> None:
    """Make a venv built under `old` valid once `old` is renamed to `new`.

    venv writes absolute paths: `home` in pyvenv.cfg, the interpreter symlink, script shebangs and the
    activate scripts. We build in a staging folder so that a killed install never looks complete, so
    those paths are rewritten here: symlinks inside `old` become relative, text mentions become `new`."""
    old_text, new_text = str(old), str(new)
    cfg = venv / "pyvenv.cfg"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(old_text, new_text), encoding="utf-8")
    for entry in (venv / "bin").iterdir():
        if entry.is_symlink():
            target = os.readlink(entry)
            if target.startswith(old_text + os.sep):
                entry.unlink()
                entry.symlink_to(os.path.relpath(target, entry.parent))
            continue
        data = entry.read_bytes()
        if old_text.encode() in data and b"\0" not in data[:1024]:   # scripts only, never a binary
            entry.write_bytes(data.replace(old_text.encode(), new_text.encode()))


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(extra)
    if "LD_LIBRARY_PATH" in extra and os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = f"{extra['LD_LIBRARY_PATH']}:{os.environ['LD_LIBRARY_PATH']}"
    return {**os.environ, **env} if env else dict(os.environ)


# --- what other code uses -------------------------------------------------------------------------

def ready_info() -> dict:
    """READY.json of a working toolchain; ToolchainError saying how to install it otherwise."""
    status = PaddleLiteToolchain().status()
    if not status.installed:
        raise ToolchainError(f"paddle-lite is {status.detail}")
    return status.info


def paddle_lite_python() -> Path:
    """The toolchain's Python (has paddlelite and numpy<2); use it with paddle_lite_env()."""
    return Path(ready_info()["python"])


def paddle_lite_env() -> dict[str, str]:
    """The environment to run the toolchain's Python or opt with (os.environ plus what it needs)."""
    return _child_env(ready_info().get("env") or {})


def opt_command() -> list[str]:
    """argv prefix of Paddle Lite's opt, e.g. opt_command() + ["--model_file", ..., "--valid_targets", "x86"].
    Run it with env=paddle_lite_env(); it is the venv's Python running the script, so no shebang matters."""
    info = ready_info()
    return [info["python"], info["opt"]]
