"""Format adapters by family; ``pipeline.adapters`` is the registry the ingest stage uses."""
