"""The foreign evaluation family: scans the training generator never drew (see `family`). Evaluation only.

Public: `write_dataset(out, n, seed)` (what `digitise foreign` calls), `render_scan(seed, i)`, `DEFAULT_SEED`.
"""
from foreign.family import DEFAULT_SEED, render_scan, write_dataset

__all__ = ["DEFAULT_SEED", "render_scan", "write_dataset"]
