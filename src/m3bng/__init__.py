"""m3bng: a self-hosted integration service between Infor M3 and BNG."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("m3bng")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
