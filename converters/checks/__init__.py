"""Checks of artifacts this host cannot run natively: each executes the artifact as closely to the
device as this machine allows and returns the family's verdict plus a record saying exactly how."""
from .emulated import NOT_EXECUTED, check_many, check_under_emulation, pictures_within

__all__ = ["NOT_EXECUTED", "check_many", "check_under_emulation", "pictures_within"]
