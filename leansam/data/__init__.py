"""Data sets: procedural synthetic COCO data (``synth``) and COCO-format helpers (``coco``)."""
