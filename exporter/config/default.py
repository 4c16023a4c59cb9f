"""The commented default config, shipped inside the package for ``default-config``.

Package data rather than a path into the source tree, so that an installed exporter (a
wheel, a distro package) prints the same text as a checkout; ``config/exporter.yaml`` at the
top of the repository is a copy, and a test keeps the two identical.
"""

from __future__ import annotations

from importlib.resources import files


def default_config_text() -> str:
    """The text of the default ``exporter.yaml``: every key, its default and what it does."""
    return files(__package__).joinpath("exporter.yaml").read_text(encoding="utf-8")
