"""What a model folder / training checkpoint holds, and cheap checks that it is whole.

The checks read JSON files and the 8-byte length + JSON header of each safetensors file (never the tensors), so a
missing or truncated weights file, a broken ``config.json`` or a half-written checkpoint is reported in one line that
names the file, before ``from_pretrained`` fails somewhere deep with a message that does not.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any


# The Python files a model folder made by this project carries (written next to the weights by save_pretrained)
MODEL_CODE_FILES = (
    "configuration_ocr_mllm.py",
    "modeling_ocr_mllm.py",
    "image_processing_ocr_mllm.py",
    "processing_ocr_mllm.py",
)
SAFETENSORS_INDEX = "model.safetensors.index.json"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")
OTHER_WEIGHT_FILES = ("pytorch_model.bin", "adapter_model.bin")
# safetensors refuses headers above 100 MB; a larger length field means the file is not safetensors
MAX_SAFETENSORS_HEADER = 100_000_000


class FolderError(ValueError):
    """A model folder or checkpoint is missing a file or holds a damaged one; the message names the file."""


def read_json_file(path: str | os.PathLike) -> Any:
    """``json.load`` with errors that name the file, the line and the column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FolderError(f"{path} is missing") from None
    except OSError as exc:
        raise FolderError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise FolderError(f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line})") from None
    except json.JSONDecodeError as exc:
        raise FolderError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise FolderError(f"{path} is not valid JSON: nested too deeply") from None


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Raise :class:`FolderError` unless ``path`` is a complete safetensors file (header parses, size matches)."""
    path = Path(path)
    if not path.is_file():
        raise FolderError(f"{path} is missing")
    size = path.stat().st_size
    if size < 8:
        raise FolderError(f"{path} is empty or truncated ({size} bytes)")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_SAFETENSORS_HEADER or 8 + header_len > size:
            raise FolderError(
                f"{path} is truncated or not a safetensors file (header of {header_len} bytes, file of {size} bytes)"
            )
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise FolderError(f"{path} is damaged: its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise FolderError(f"{path} is damaged: its safetensors header is not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise FolderError(f"{path} is damaged: tensor {name!r} has no data offsets in the header")
        end = max(end, offsets[1])
    expected = 8 + header_len + end
    if size < expected:
        raise FolderError(
            f"{path} is truncated: {size} bytes, its header describes {expected} (copy or download it again)"
        )


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of ``folder`` (safetensors shards from the index, or the single file); raises
    :class:`FolderError` when there are none or the index names a missing shard."""
    folder = Path(folder)
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        data = read_json_file(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise FolderError(f"{index} has no 'weight_map'")
        return [folder / name for name in sorted(set(map(str, weight_map.values())))]
    found = [folder / name for name in WEIGHT_FILES + OTHER_WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        raise FolderError(f"{folder} has no weights: no model.safetensors (or {SAFETENSORS_INDEX} with its shards)")
    return found


def check_weights(folder: str | os.PathLike) -> None:
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            check_safetensors_file(path)
        elif not path.is_file():
            raise FolderError(f"{path} is missing")


def check_model_folder(folder: str | os.PathLike) -> dict:
    """Check ``config.json`` and the weights of a model folder; returns the config. Raises :class:`FolderError`."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FolderError(f"{folder} is not a model folder: it has no config.json")
    config = read_json_file(config_path)
    if not isinstance(config, dict):
        raise FolderError(f"{config_path} is not a JSON object")
    check_weights(folder)
    return config


def foreign_code_files(folder: str | os.PathLike) -> list[str]:
    """Python files in ``folder`` that are not this project's model code (trust_remote_code would run them)."""
    return sorted(p.name for p in Path(folder).glob("*.py") if p.name not in MODEL_CODE_FILES)


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why a Trainer ``checkpoint-N`` folder cannot be resumed from (a crash during the save), or None if complete.

    The Trainer writes ``trainer_state.json`` after the weights, optimizer and RNG states; the weights must be whole.
    DeepSpeed checkpoints keep their weights under ``global_step*/``.
    """
    folder = Path(folder)
    try:
        state = read_json_file(folder / "trainer_state.json")
        if not isinstance(state, dict) or "global_step" not in state:
            return f"{folder / 'trainer_state.json'} has no global_step"
        if any(p.is_dir() for p in folder.glob("global_step*")):
            return None
        check_weights(folder)
    except FolderError as exc:
        return str(exc)
    return None
