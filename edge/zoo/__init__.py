"""The model zoo: the official inference exports of the five families by name (`models.yaml`), pulled into
the cache with resumable, verified downloads (`pull.py`, `download.py`)."""
from .catalog import BASE_URL_ENV, Catalog, ZooModel, effective_url, load
from .download import DownloadError, DownloadResult, download
from .pull import Pulled, ZooError, pull, resolve_sources, zoo_dir

__all__ = ["BASE_URL_ENV", "Catalog", "DownloadError", "DownloadResult", "Pulled", "ZooError", "ZooModel",
           "download", "effective_url", "load", "pull", "resolve_sources", "zoo_dir"]
