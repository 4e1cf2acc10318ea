"""curation: an image-dataset curation studio (see docs/architecture.md).

``curation.open(path)`` and ``curation.show(data)`` (:mod:`curation.api`) are loaded on first use, so
``import curation`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["open", "show"]


def __getattr__(name: str) -> Any:
    if name in ("open", "show", "Project"):
        from curation import api

        return getattr(api, name)
    raise AttributeError(f"module 'curation' has no attribute {name!r}")
