"""Image features: encoders, embedding, nearest neighbours and the 2-D map."""

from curation.features import tuned  # noqa: F401  registers the ``finetuned:run-<id>`` encoders
