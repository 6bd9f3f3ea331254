"""The daemon config's `ota:` section (present: this device takes updates over the air)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..packaging.keys import DEVICE_TRUSTED_DIR


class OtaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # .pub files or folders of them: a package signed by any other key is refused, however it arrived
    trusted_keys: list[Path] = Field(default_factory=lambda: [DEVICE_TRUSTED_DIR])
    health_frames: int = Field(3, ge=0)           # frames without error the new bundle must give ...
    health_timeout: float = Field(60.0, gt=0)     # ... within this many seconds of the switch, else roll back
    chunk_timeout: float = Field(10.0, gt=0)      # a chunk asked for and not received by then is asked again
    window: int = Field(8, ge=1, le=256)          # chunks asked for at once
