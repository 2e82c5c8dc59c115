"""Registry entries, one module per family (each defines ``MODELS: tuple[ModelInfo, ...]``)."""
