"""The only code that touches disk: workspace, SQLite label store, artifacts, images, ingest, export."""
