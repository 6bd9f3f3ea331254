"""`edge deploy PKG --rootfs DIR | --image FILE.img | --ssh user@host[:port]`: a signed package onto a device.

One target per module, found through TARGETS (its command-line flag -> module). Each module offers
`FLAG`, `Options`, `options_from_args(args)` and `deploy(request, options, say) -> report lines`.
"""
from . import image, rootfs, ssh
from .request import DeployError, DeployRequest, default_trusted_key

TARGETS = {"rootfs": rootfs, "image": image, "ssh": ssh}

__all__ = ["DeployError", "DeployRequest", "TARGETS", "default_trusted_key"]
