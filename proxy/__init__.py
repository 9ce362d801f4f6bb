"""jargate: JAR, PAR and JARM in front of a legacy OAuth 2.0 / OpenID Connect server."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The version in pyproject.toml, as the installed package's metadata has it.
    __version__ = version("jargate")
except PackageNotFoundError:  # pragma: no cover - a source tree never installed
    __version__ = "0+unknown"
