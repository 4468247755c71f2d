"""The package version, read by pyproject.toml and reported by /v2/info."""

__version__ = "0.1.0"
# The Marathon release whose API this implementation speaks.
MARATHON_API_VERSION = "1.11.0"
