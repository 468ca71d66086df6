"""Training data → one `datasets.Dataset` of TRL-form records (``messages``, ``images``), read by the project's one
record loader and validator, `ocr_mllm.data.load_training_dataset` (LLaVA / TRL JSON(L), generator folders,
save_to_disk folders, Hub datasets; bad records are logged with their reason, skipped and counted)."""

from __future__ import annotations

import datasets

from ocr_mllm.data import load_training_dataset


def load_datasets(
    sources: list[str] | None, image_root: str | None = None, split: str = "train", hub_config: str | None = None
) -> datasets.Dataset | None:
    """Each source through `load_training_dataset`, concatenated; None without sources."""
    if not sources:
        return None
    parts = [
        load_training_dataset(source, image_folder=image_root, split=split, hub_config=hub_config)
        for source in sources
    ]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
