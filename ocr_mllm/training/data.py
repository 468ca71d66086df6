"""Training data → a `datasets.Dataset` of TRL-form records (``messages``, ``images``).

Uses the project's data loader (`ocr_mllm.data.load_training_dataset`: LLaVA / TRL JSON(L), generator folders,
save_to_disk folders, Hub datasets); without it, falls back to the plain formats below:

- a folder written by ``datasets.Dataset.save_to_disk``;
- a ``.json`` / ``.jsonl`` file (or a folder holding ``train.jsonl`` / ``data.jsonl`` / ``metadata.jsonl``) of
  TRL records ``{"messages": [...], "images": [path, ...]}`` or LLaVA records
  ``{"image": path, "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}``.

Relative image paths are resolved against ``image_root`` (default: the file's folder).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _resolve(path, root: Path):
    if not isinstance(path, str):
        return path
    return path if os.path.isabs(path) or root is None else str(root / path)


def convert_record(record: dict, root: Path | None = None) -> dict:
    """One JSON record (TRL or LLaVA form) → TRL form with resolved image paths."""
    if "messages" in record:
        images = record.get("images")
        if images is None:
            images = [record["image"]] if record.get("image") else []
        return {"messages": record["messages"], "images": [_resolve(p, root) for p in images]}
    if "conversations" in record:
        messages = []
        for turn in record["conversations"]:
            role = _ROLES.get(turn.get("from", turn.get("role")))
            if role is None:
                raise ValueError(f"unknown conversation role in {turn}")
            messages.append({"role": role, "content": turn.get("value", turn.get("content", ""))})
        image = record.get("image")
        images = image if isinstance(image, list) else ([image] if image else [])
        return {"messages": messages, "images": [_resolve(p, root) for p in images]}
    raise ValueError(f"record has neither 'messages' nor 'conversations': keys {sorted(record)}")


def _read_json_records(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in handle if line.strip()]
        data = json.load(handle)
    return data if isinstance(data, list) else data.get("data", [])


def _canonical(records: list[dict]) -> datasets.Dataset:
    """Messages with string contents, so records of different shapes fit one Arrow schema."""
    rows = []
    for record in records:
        messages = []
        for message in record["messages"]:
            content = message["content"]
            if not isinstance(content, str):
                text = ""
                for block in content:
                    if block.get("type") == "image":
                        text += "<image>\n"  # what the chat template renders for an image block
                    elif block.get("type") == "text":
                        text += block.get("text") or ""
                content = text
            messages.append({"role": message["role"], "content": content})
        rows.append({"messages": messages, "images": list(record.get("images") or [])})
    return datasets.Dataset.from_list(rows)


def load_one(source: str, image_root: str | None = None, split: str = "train") -> datasets.Dataset:
    """One source → TRL-form dataset: the project's loader (`ocr_mllm.data.load_training_dataset`, which validates
    records and images and logs what it skips); the plain formats of this module when it is not available."""
    try:
        from ocr_mllm.data import load_training_dataset
    except ImportError:
        load_training_dataset = None
    if load_training_dataset is not None:
        return load_training_dataset(source, image_folder=image_root, split=split)
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        return datasets.load_from_disk(str(path))
    candidates = [path] if path.is_file() else [path / f"{split}.jsonl", path / f"{split}.json", path / "data.jsonl"]
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix in (".json", ".jsonl"):
            root = Path(image_root) if image_root else candidate.parent
            return _canonical([convert_record(r, root) for r in _read_json_records(candidate)])
    raise FileNotFoundError(f"Cannot read training data from {source}: expected a JSON/JSONL file, a save_to_disk "
                            "folder or a folder with train.json(l)")


def load_datasets(sources: list[str] | None, image_root: str | None = None, split: str = "train") -> datasets.Dataset | None:
    if not sources:
        return None
    parts = [load_one(source, image_root, split) for source in sources]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
