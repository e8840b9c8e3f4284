"""The product version, read from the installed distribution's metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("pvesphere-templates")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0.0.0+unknown"
