"""Signed packages: ed25519 keys, the `.edgepkg` archive, verification and safe installation on a device.

What the deploy and OTA code calls: `install_package(pkg, dest_root, trusted_keys) -> installed folder`
and `verify_package(pkg, trusted_keys)`; both raise `PackageError` (one line) and change nothing on refusal.
"""
from .install import VerifiedPackage, install_package, verify_package
from .keys import DEVICE_TRUSTED_DIR, KeyFileError, KeyPair, generate, keys_dir, load_private, load_trusted
from .package import PackageError, PackageManifest, build_package
from .safe_extract import Limits, UnsafeArchive, extract_archive

__all__ = ["DEVICE_TRUSTED_DIR", "KeyFileError", "KeyPair", "Limits", "PackageError", "PackageManifest",
           "UnsafeArchive", "VerifiedPackage", "build_package", "extract_archive", "generate", "install_package",
           "keys_dir", "load_private", "load_trusted", "verify_package"]
