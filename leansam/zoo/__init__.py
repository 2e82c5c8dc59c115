"""Family modules, one per model family (``MODELS: tuple[ModelInfo, ...]``), found by the registry.

Every module here whose name does not start with ``_`` is a family module; ``_*.py`` are helpers
shared by families. docs/ADDING_A_MODEL.md walks through one.
"""
