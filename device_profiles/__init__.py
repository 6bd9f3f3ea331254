"""Device profiles: YAML files beside this module, loaded into typed `Profile` models.

`load(name_or_path)` takes a shipped profile's name or a path to a user's own file; `detect()`
picks the shipped profile that fits this machine.
"""
from __future__ import annotations

from pathlib import Path

from runtimes.errors import ConfigError
from runtimes.yamlconfig import load_model

from .schema import ArtifactChoice, Profile, QuantScheme

PROFILE_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def path_of(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    shipped = PROFILE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown profile '{name_or_path}' (shipped: {', '.join(names())}; "
                      "or give the path of a profile YAML file)")


def load(name_or_path: str | Path) -> Profile:
    path = path_of(name_or_path)
    profile = load_model(Profile, path)
    if path.parent == PROFILE_DIR and profile.name != path.stem:
        raise ConfigError(f"name '{profile.name}' differs from the file name", path=str(path), field="name")
    if profile.members:
        _check_family(profile, path)
    return profile


def _check_family(profile: Profile, path: Path) -> None:
    """A family profile (`--profile rpi`) builds only what every member device can load."""
    for name in profile.members:
        member = load(name)
        if member.members:
            raise ConfigError(f"member '{name}' is itself a family", path=str(path), field="members")
        if member.arch != profile.arch or member.accelerator != profile.accelerator:
            raise ConfigError(f"member '{name}' is {member.arch}/{member.accelerator}, the family "
                              f"{profile.arch}/{profile.accelerator}", path=str(path), field="members")
        formats = {a.format for a in member.artifacts}
        foreign = [a.label() for a in profile.artifacts if a.format not in formats]
        if foreign:
            raise ConfigError(f"member '{name}' cannot load {', '.join(foreign)}", path=str(path), field="artifacts")


def families() -> dict[str, list[str]]:
    """Family profile name -> its member profiles."""
    return {p.name: p.members for p in load_all() if p.members}


def load_all() -> list[Profile]:
    return [load(name) for name in names()]


# Imported after load/load_all exist (detect.py loads the profiles through them at call time). This
# binds the submodule as the attribute `detect`; the function below takes the name back, so
# `device_profiles.detect()` stays the Profile callers always had.
from .detect import Detection, detect_profile  # noqa: E402


def detect() -> Profile:
    """The shipped profile that fits the machine this runs on (`detect_profile()` also says why)."""
    return load(detect_profile().profile)


__all__ = ["Profile", "ArtifactChoice", "QuantScheme", "load", "load_all", "names", "detect", "detect_profile",
           "Detection", "path_of", "families"]
