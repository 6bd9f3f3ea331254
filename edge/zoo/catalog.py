"""The model zoo table (`models.yaml` beside this file): names -> official download URLs, read once, typed."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtimes.errors import ConfigError

HERE = Path(__file__).resolve().parent
TABLE = HERE / "models.yaml"
METADATA_DIR = HERE / "metadata"
BASE_URL_ENV = "EDGE_ZOO_URL"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExtraFile(Strict):
    url: str
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ZooModel(Strict):
    family: str
    summary: str
    url: str
    docs: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")   # when the publisher gives one
    metadata: str | None = None          # file in metadata/ written when the archive has no metadata file
    files: list[ExtraFile] = Field(default_factory=list)
    fixture: str | None = None           # the matching export in ../shared/models (tests)

    @property
    def file_name(self) -> str:
        return url_file_name(self.url)


class Catalog(Strict):
    models: dict[str, ZooModel]
    groups: dict[str, list[str]] = Field(default_factory=dict)

    def expand(self, name: str) -> list[str] | None:
        """The model names NAME stands for (itself, or a group's members); None when unknown."""
        if name in self.models:
            return [name]
        return list(self.groups[name]) if name in self.groups else None


def url_file_name(url: str) -> str:
    return Path(urlsplit(url).path).name


def effective_url(url: str, base_url: str | None = None) -> str:
    """`url`, or the same file name under the mirror `base_url` / EDGE_ZOO_URL when one is set."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{url_file_name(url)}" if base else url


@lru_cache(maxsize=1)
def load() -> Catalog:
    import yaml

    try:
        catalog = Catalog.model_validate(yaml.safe_load(TABLE.read_text(encoding="utf-8")))
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(first["msg"], path=str(TABLE), field=".".join(map(str, first["loc"]))) from None
    for group, members in catalog.groups.items():
        unknown = [m for m in members if m not in catalog.models]
        if unknown:
            raise ConfigError(f"group '{group}' names unknown models {unknown}", path=str(TABLE), field="groups")
    return catalog
