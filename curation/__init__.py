"""curation: an image-dataset curation studio (see docs/architecture.md)."""

__version__ = "0.1.0"
