"""ed25519 signing keys: the operator's private key signs packages, devices trust public keys.

A key pair is two files in the keys folder (`EDGE_KEYS_DIR`, else `$XDG_CONFIG_HOME/edge/keys`, default
`~/.config/edge/keys`): `NAME.key`, the private key as PKCS#8 PEM readable by its owner only, and
`NAME.pub`, the public key as one OpenSSH line (`ssh-ed25519 AAAA... edge:NAME`) that can be pasted into a
device's trusted-keys folder. A key is named in messages by its id: the first 16 hex digits of the
sha256 of its 32 raw public bytes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runtimes.errors import EdgeError

DEFAULT_NAME = "default"
DEVICE_TRUSTED_DIR = Path("/etc/edge/trusted-keys")     # where a device keeps the keys it accepts


class KeyFileError(EdgeError):
    """A key is missing, unreadable or not an ed25519 key."""


def keys_dir() -> Path:
    if os.environ.get("EDGE_KEYS_DIR"):
        return Path(os.environ["EDGE_KEYS_DIR"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "edge" / "keys"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_line(public: Ed25519PublicKey, comment: str) -> str:
    text = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{text} {comment}".strip()


@dataclass
class KeyPair:
    name: str
    private_path: Path
    public_path: Path
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def id(self) -> str:
        return key_id(self.public)


def generate(name: str = DEFAULT_NAME, folder: Path | None = None, force: bool = False) -> KeyPair:
    """Create NAME.key and NAME.pub; an existing pair is never overwritten unless `force`."""
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"'{name}' is not a usable key name (letters, digits, '-', '_')")
    folder = folder or keys_dir()
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    if private_path.exists() and not force:
        raise KeyFileError(f"a key '{name}' already exists ({private_path}); keep it, or replace it with --force "
                        "(packages signed with it then no longer verify on devices that trust only it)")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    tmp = private_path.with_suffix(".key.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, private_path)
    public_path.write_text(public_line(private.public_key(), f"edge:{name}") + "\n", encoding="utf-8")
    return KeyPair(name, private_path, public_path, private)


def load_private(path: Path | None = None, name: str = DEFAULT_NAME) -> KeyPair:
    """The key pair at `path` (a .key file), else NAME in the keys folder."""
    path = Path(path) if path else keys_dir() / f"{name}.key"
    if not path.is_file():
        raise KeyFileError(f"no signing key at {path}; create one with: edge keys generate")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise KeyFileError(f"{path}: not a readable private key ({err})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(private).__name__}, not an ed25519 key")
    return KeyPair(path.stem, path, path.with_suffix(".pub"), private)


def parse_public(text: str, where: str) -> Ed25519PublicKey:
    try:
        public = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, UnsupportedAlgorithm) as err:
        raise KeyFileError(f"{where}: not an OpenSSH public key line ({err})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{where}: not an ed25519 key")
    return public


def load_trusted(sources: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """key id -> public key, from .pub files and folders of them (one OpenSSH line per key; '#' comments)."""
    trusted: dict[str, Ed25519PublicKey] = {}
    for source in sources:
        source = Path(source)
        files = sorted(source.glob("*.pub")) if source.is_dir() else [source] if source.is_file() else []
        for path in files:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    public = parse_public(line, f"{path}:{number}")
                    trusted[key_id(public)] = public
    return trusted


def default_trusted_sources() -> list[Path]:
    """What `edge verify` trusts without --trusted: EDGE_TRUSTED_KEYS, the device folder, this user's keys."""
    sources = [Path(p) for p in os.environ.get("EDGE_TRUSTED_KEYS", "").split(os.pathsep) if p]
    return sources + [DEVICE_TRUSTED_DIR, keys_dir()]
