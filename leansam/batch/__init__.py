"""Label a dataset: folders, globs or list files of images in, shards of JSON Lines and COCO out.

* :func:`run_dataset` / :class:`RunConfig` — a resumable run on the ``local`` engine (this
  process) or the ``ray`` engine (an actor pool on a Ray cluster); ``leansam everything`` and
  ``leansam segment`` call it when their image argument is a folder, a glob or a list file.
* :class:`JobSpec` / :class:`Labeler` — what each image gets, and one model applying it.
* :mod:`leansam.batch.shards` — the output folder: shards, resume, the merged COCO file.
* :mod:`leansam.batch.sources` — folders, globs and list files, read lazily.
* :mod:`leansam.batch.cli` — the commands' engine options and their dispatch to a dataset run.

docs/datasets.md describes the commands, the output and the scaling plan.
"""

from __future__ import annotations

from .engine import ENGINES, RunConfig, run_dataset
from .jobs import TASKS, JobSpec, Labeler
from .prompts import PromptTable, load_prompt_table
from .sources import ImageItem, is_dataset_input, iter_images

__all__ = [
    "ENGINES",
    "TASKS",
    "ImageItem",
    "JobSpec",
    "Labeler",
    "PromptTable",
    "RunConfig",
    "is_dataset_input",
    "iter_images",
    "load_prompt_table",
    "run_dataset",
]
