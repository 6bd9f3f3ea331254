"""Which shipped device profile fits a machine, and the evidence that says so.

Evidence comes from files under a root folder (default `/`; tests point it at a fixture tree, and
`edge profiles detect --root` at a mounted SD card):

- `/proc/cpuinfo`: x86 `flags` (AVX2, VNNI, AMX), ARM `CPU part` numbers and `Features`;
- `/proc/device-tree/model` and `/proc/device-tree/compatible`: NUL-terminated strings in which a
  Raspberry Pi or a Jetson names its board and SoC;
- `/etc/nv_tegra_release`: the L4T release line every JetPack install writes.

Every rule in `RULES` the evidence satisfies adds its weight to a profile; the heaviest profile wins
and its matched rules become the reasons. Without board-level evidence the answer is marked a guess.
An unreadable or garbled file never raises: a device always gets an answer.

This module is `device_profiles.detect`, and the package also exports the function `detect()` (the
Profile this machine gets), which shadows the module as a package attribute. Import from here with
`from device_profiles.detect import ...`; `import device_profiles.detect as m` yields the function.
"""
from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtimes.errors import ConfigError

from .schema import Profile

# /proc/cpuinfo of a 256-thread server is about 1 MB; reading stops here whatever the file is.
MAX_READ = 4 << 20
ARM_LTD = "0x41"  # `CPU implementer` of ARM's own cores; their part numbers are in the rules below

# Where each piece of evidence lives, relative to the root folder.
FILES = {"cpuinfo": "proc/cpuinfo", "model": "proc/device-tree/model",
         "compatible": "proc/device-tree/compatible", "tegra_release": "etc/nv_tegra_release"}

# platform.machine() spellings -> the `arch` of profiles, plus a note when the OS cannot run that
# arch's artifacts (a Pi 4 on 32-bit Raspberry Pi OS is still a Pi 4, but aarch64 builds need 64-bit).
_NEEDS_64 = "this OS is 32-bit ({machine}): the profile's aarch64 artifacts need a 64-bit OS on this board"
ARCHES = {"x86_64": ("x86_64", ""), "amd64": ("x86_64", ""), "aarch64": ("aarch64", ""),
          "arm64": ("aarch64", ""), "armv8l": ("aarch64", _NEEDS_64), "armv7l": ("aarch64", _NEEDS_64)}

# Profiles' `cpu_features` as cpuinfo spells them (aarch64 kernels call NEON "asimd").
FEATURE_SPELLINGS = {"neon": ("neon", "asimd")}


@dataclass(frozen=True)
class Facts:
    """What the files say; empty where a file is missing, unreadable or says nothing useful."""
    cpu_flags: frozenset[str] = frozenset()   # x86 `flags` / ARM `Features` every processor reports
    cpu_parts: tuple[str, ...] = ()           # ARM core part numbers, e.g. "0xd08"
    model: str = ""
    compatible: tuple[str, ...] = ()
    tegra_release: str = ""                   # first line of /etc/nv_tegra_release
    files: tuple[tuple[str, str], ...] = ()   # ("/proc/cpuinfo", "read" | "missing" | "unreadable (...)")


@dataclass(frozen=True)
class Rule:
    profile: str
    source: str               # a key of SOURCES
    match: tuple[str, ...]    # the rule holds when the source shows any of these
    weight: int
    meaning: str              # what the evidence means, for the reason


@dataclass(frozen=True)
class Detection:
    """The shipped profile that fits, and why (short human sentences naming the evidence)."""
    profile: str
    reasons: tuple[str, ...]
    guess: bool
    machine: str
    files: tuple[tuple[str, str], ...]

    def as_json(self) -> dict:
        return {"profile": self.profile, "guess": self.guess, "reasons": list(self.reasons),
                "machine": self.machine, "files": dict(self.files)}


@dataclass(frozen=True)
class Source:
    """How one kind of evidence is matched and quoted."""
    decisive: bool                                   # settles the profile alone (a CPU core could be any board)
    shows: Callable[[Facts, str], bool]
    quote: Callable[[Facts, list[str], str], str]   # (facts, matched values, rule meaning) -> reason


def _tegra_summary(line: str) -> str:
    fields = [part.strip() for part in line.lstrip("# ").split(",")]
    return ", ".join(f for f in fields if f.startswith(("R", "REVISION", "BOARD"))) or line


SOURCES = {
    "model": Source(True, lambda facts, value: value in facts.model,
                    lambda facts, hits, meaning: f"/proc/device-tree/model: {facts.model}"),
    "compatible": Source(True, lambda facts, value: value in facts.compatible,
                         lambda facts, hits, meaning: f"/proc/device-tree/compatible: {', '.join(hits)} ({meaning})"),
    "tegra_release": Source(True, lambda facts, value: value in facts.tegra_release,
                            lambda facts, hits, meaning:
                            f"/etc/nv_tegra_release: {_tegra_summary(facts.tegra_release)} ({meaning})"),
    "cpu_part": Source(False, lambda facts, value: value in facts.cpu_parts,
                       lambda facts, hits, meaning: f"CPU part {', '.join(hits)} = {meaning}"),
    "cpu_flags": Source(True, lambda facts, value: value in facts.cpu_flags,
                        lambda facts, hits, meaning: f"/proc/cpuinfo flags: {', '.join(hits)} ({meaning})"),
}

RULES: tuple[Rule, ...] = (
    # The board's own name in its device tree. Orin first: "Jetson Orin Nano" is no Jetson Nano.
    Rule("jetson-orin", "model", ("Orin",), 3, "Jetson Orin"),
    Rule("jetson-nano", "model", ("Jetson Nano",), 3, "Jetson Nano"),
    Rule("rpi5", "model", ("Raspberry Pi 5",), 3, "Raspberry Pi 5"),
    Rule("rpi4", "model", ("Raspberry Pi 4",), 3, "Raspberry Pi 4"),
    # The SoC in the device tree's compatible list (also names Compute Modules and the Pi 400/500).
    Rule("jetson-orin", "compatible", ("nvidia,tegra234",), 3, "Tegra234, the Orin SoC"),
    Rule("jetson-nano", "compatible", ("nvidia,tegra210",), 3, "Tegra210, the Jetson Nano SoC"),
    Rule("rpi5", "compatible", ("brcm,bcm2712",), 3, "BCM2712, the Raspberry Pi 5 SoC"),
    Rule("rpi4", "compatible", ("brcm,bcm2711",), 3, "BCM2711, the Raspberry Pi 4 SoC"),
    # L4T's board family: t186ref covers TX2, Xavier and Orin alike (R35), so only t210ref decides.
    Rule("jetson-nano", "tegra_release", ("BOARD: t210ref",), 2, "L4T for Tegra210 boards"),
    # ARM Ltd core part numbers (arch/arm64/include/asm/cputype.h). A core alone names no board.
    Rule("rpi4", "cpu_part", ("0xd08",), 2, "Cortex-A72"),
    Rule("rpi5", "cpu_part", ("0xd0b",), 2, "Cortex-A76"),
    Rule("jetson-nano", "cpu_part", ("0xd07",), 2, "Cortex-A57"),
    Rule("jetson-orin", "cpu_part", ("0xd42",), 2, "Cortex-A78AE"),
    # x86 CPU flags; the richer feature set outweighs the ones it implies (every AMX CPU also has
    # AVX-512 VNNI and AVX2, every VNNI CPU AVX2). A rule whose profile is not among the candidates
    # counts for nothing, so without x86-amx an AMX CPU still gets x86-vnni from its VNNI flags.
    Rule("x86-amx", "cpu_flags", ("amx_tile", "amx_int8", "amx_bf16"), 4, "AMX int8/bf16 tile matrix units"),
    Rule("x86-vnni", "cpu_flags", ("avx512_vnni", "avx_vnni"), 3, "VNNI int8 dot products"),
    Rule("x86-avx2", "cpu_flags", ("avx2",), 2, "AVX2"),
)

GUESS_NOTE = ("no board name in /proc/device-tree or /etc/nv_tegra_release: "
              "a best guess from the CPU alone")


def detect_profile(root: str | Path = "/", machine: str | None = None,
                   profiles: list[Profile] | None = None) -> Detection:
    """The shipped profile that fits the machine whose files are under `root`."""
    machine = (machine or platform.machine()).lower()
    if machine not in ARCHES:
        raise ConfigError(f"no shipped profile is for a {machine} machine (profiles exist for "
                          f"{', '.join(sorted({arch for arch, _ in ARCHES.values()}))})")
    arch, note = ARCHES[machine]
    if not Path(root).is_dir():
        raise ConfigError(f"{root}: no such folder to read proc/ and etc/ from")
    if profiles is None:
        from . import load_all   # at call time: the package imports this module while it loads
        profiles = load_all()
    candidates = {p.name: p for p in profiles if p.arch == arch and not p.members}
    if not candidates:
        raise ConfigError(f"no device profile (other than families) is for {arch}")
    facts = read_facts(Path(root))
    name, reasons, guess = _best_by_rules(facts, candidates) or _best_by_features(facts, candidates, arch)
    if note:
        reasons.append(note.format(machine=machine))
    return Detection(profile=name, reasons=tuple(reasons), guess=guess, machine=machine, files=facts.files)


def _best_by_rules(facts: Facts, candidates: dict[str, Profile]) -> tuple[str, list[str], bool] | None:
    scores: dict[str, int] = {}
    reasons: dict[str, list[str]] = {}
    decisive: dict[str, bool] = {}
    for rule in RULES:
        source = SOURCES[rule.source]
        hits = [value for value in rule.match if source.shows(facts, value)]
        name = rule.profile
        if not hits or name not in candidates:
            continue
        scores[name] = scores.get(name, 0) + rule.weight   # dicts keep first-seen order for ties
        reasons.setdefault(name, []).append(source.quote(facts, hits, rule.meaning))
        decisive[name] = decisive.get(name, False) or source.decisive
    if not scores:
        return None
    winner = max(scores, key=scores.__getitem__)
    guess = not decisive[winner]
    return winner, reasons[winner] + ([GUESS_NOTE] if guess else []), guess


def _best_by_features(facts: Facts, candidates: dict[str, Profile], arch: str) -> tuple[str, list[str], bool]:
    """No rule matched: the CPU-only profile whose `cpu_features` this CPU has (a GPU needs evidence)."""
    pool = [p for p in candidates.values() if p.accelerator == "cpu"] or list(candidates.values())
    able = [p for p in pool if all(_has_feature(facts.cpu_flags, f) for f in p.cpu_features)]
    if able:
        pick = max(able, key=lambda p: len(p.cpu_features))
        why = (f"no board or CPU this detection knows; {pick.name} is the {arch} CPU profile with the most "
               f"features this CPU reports ({', '.join(pick.cpu_features)}): a guess")
    else:
        pick = min(pool, key=lambda p: len(p.cpu_features))
        cpuinfo = dict(facts.files).get("/proc/cpuinfo", "missing")
        seen = f"/proc/cpuinfo ({cpuinfo})" if cpuinfo != "read" else "/proc/cpuinfo"
        why = (f"{seen} confirms no profile's CPU features; {pick.name} asks the least of the CPU "
               f"({', '.join(pick.cpu_features) or 'nothing'}): a guess")
    return pick.name, [why], True


def _has_feature(flags: frozenset[str], feature: str) -> bool:
    return any(spelling in flags for spelling in FEATURE_SPELLINGS.get(feature, (feature,)))


def read_facts(root: Path) -> Facts:
    """Read and parse every evidence file under `root`; never raises for a bad or missing file."""
    raw, status = {}, []
    for key, relative in FILES.items():
        raw[key], state = _read(root / relative)
        status.append((f"/{relative}", state))
    flags, parts = parse_cpuinfo(_text(raw["cpuinfo"]))
    strings = [s.strip() for s in _text(raw["compatible"]).split("\0")]
    release = [line.strip() for line in _text(raw["tegra_release"]).splitlines() if line.strip()]
    return Facts(cpu_flags=flags, cpu_parts=parts, model=_text(raw["model"]).split("\0")[0].strip(),
                 compatible=tuple(s for s in strings if s), tegra_release=release[0] if release else "",
                 files=tuple(status))


def _read(path: Path) -> tuple[bytes, str]:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_READ), "read"
    except FileNotFoundError:
        return b"", "missing"
    except OSError as err:   # a directory, no permission, an I/O error: evidence we do not have
        return b"", f"unreadable ({err.strerror or type(err).__name__})"


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def parse_cpuinfo(text: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The features every processor reports (x86 `flags`, ARM `Features`) and the ARM core parts.

    Every processor, not any: work may land on any core, so a feature counts only if all have it.
    A part of another implementer than ARM keeps its implementer ("0x4e:0x004") so no rule takes it.
    """
    feature_sets: list[set[str]] = []
    parts: list[str] = []
    for block in re.split(r"\n[ \t\r]*\n", text):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        features = fields.get("flags", fields.get("features"))
        if features is not None:
            feature_sets.append(set(features.split()))
        if fields.get("cpu part"):
            implementer = fields.get("cpu implementer", ARM_LTD).lower()
            part = fields["cpu part"].lower()
            key = part if implementer == ARM_LTD else f"{implementer}:{part}"
            if key not in parts:
                parts.append(key)
    flags = frozenset(set.intersection(*feature_sets)) if feature_sets else frozenset()
    return flags, tuple(parts)
