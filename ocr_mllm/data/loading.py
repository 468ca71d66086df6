"""Loading training data into the TRL vision form used by both training scripts.

``load_training_dataset(source, image_folder=None, split="train", strict=False)`` returns a ``datasets.Dataset``
with two columns:

* ``messages``: ``[{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "..."}]},
  {"role": "assistant", "content": [{"type": "text", "text": "..."}]}, ...]`` (an optional ``system`` turn first),
* ``images``: a list of images (``datasets.Image``, decoded lazily to PIL), one per image block, in order;
  ``[]`` for text-only records.

``source`` may be

1. a LLaVA-format JSON file (a list of ``{"id", "image", "conversations": [{"from": "human"|"gpt"|"system",
   "value": ...}]}`` records; ``image`` is a path relative to ``image_folder``, default: the JSON file's folder; it may
   be missing for text-only records or a list for several images) or a JSON Lines file with one record per line,
2. the output folder of ``scripts/make_synthetic_data.py`` (``DIR/{split}.json`` + ``DIR/images``),
3. a dataset saved with ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``; ``split`` picks the split),
4. a dataset name on the Hugging Face Hub (loaded with ``datasets.load_dataset(source, split=split)``).

Every record is validated. A bad record is skipped with a reason (see :data:`REASONS`) naming the file and the record
id, counted in a :class:`LoadReport`, logged, and summarised at the end; with ``strict=True`` the first problem raises
``ValueError`` instead. Nothing is dropped silently, and a source with no valid record at all raises ``ValueError``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union


if TYPE_CHECKING:
    from datasets import Dataset


logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"

# Reasons a record can be skipped.
BAD_JSON = "bad_json"  # the file (or one record / JSON line) is not valid JSON
MALFORMED_RECORD = "malformed_record"  # not a dict, no conversations, wrong field types
MISSING_IMAGE = "missing_image"  # an image file does not exist
CORRUPT_IMAGE = "corrupt_image"  # an image file / bytes cannot be decoded
IMAGE_COUNT_MISMATCH = "image_count_mismatch"  # number of <image> placeholders != number of images
EMPTY_TURN = "empty_turn"  # a turn with no text (and no image)
UNKNOWN_ROLE = "unknown_role"  # a "from"/"role" that is not human/user, gpt/assistant or system
WRONG_ROLE_ORDER = "wrong_role_order"  # not [system] user assistant user assistant ...
NO_ANSWER = "no_answer"  # nothing to learn from: no assistant turn, an empty caption, no supervised token
TOO_LONG = "too_long"  # over max_length even without its answer, or cutting it would split an image
REASONS = (
    BAD_JSON,
    MALFORMED_RECORD,
    MISSING_IMAGE,
    CORRUPT_IMAGE,
    IMAGE_COUNT_MISMATCH,
    EMPTY_TURN,
    UNKNOWN_ROLE,
    WRONG_ROLE_ORDER,
    NO_ANSWER,
    TOO_LONG,
)

ROLE_MAP = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}

MAX_LOGGED_PER_REASON = 20
MAX_KEPT_PROBLEMS = 1000


class RecordError(ValueError):
    """A problem with one record; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Problem:
    source: str
    record_id: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.source}: record {self.record_id}: {self.reason}: {self.detail}"


@dataclass
class LoadReport:
    """What happened while loading: counts per skip reason and the first problems in full."""

    source: str
    num_records: int = 0
    num_loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: List[Problem] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def add(self, problem: Problem) -> None:
        self.skipped[problem.reason] += 1
        if len(self.problems) < MAX_KEPT_PROBLEMS:
            self.problems.append(problem)
        if self.skipped[problem.reason] <= MAX_LOGGED_PER_REASON:
            logger.warning("skipping %s", problem)
        elif self.skipped[problem.reason] == MAX_LOGGED_PER_REASON + 1:
            logger.warning(
                "more %r problems in %s are not logged one by one (see the summary)", problem.reason, self.source
            )

    def summary(self) -> str:
        head = f"{self.source}: loaded {self.num_loaded} of {self.num_records} records"
        if not self.skipped:
            return head + ", none skipped"
        parts = ", ".join(f"{reason}={n}" for reason, n in sorted(self.skipped.items()))
        return f"{head}, skipped {self.num_skipped} ({parts})"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source": self.source,
            "num_records": self.num_records,
            "num_loaded": self.num_loaded,
            "num_skipped": self.num_skipped,
            "skipped": dict(self.skipped),
            "problems": [vars(p) for p in self.problems],
        }


# ----------------------------------------------------------------------------------------------------------------------
# Conversation conversion


def text_to_blocks(text: str) -> List[Dict[str, Optional[str]]]:
    """Split ``text`` on ``<image>`` into content blocks, dropping one newline next to each placeholder.

    ``"<image>\\nRead it."`` → ``[{"type": "image", "text": None}, {"type": "text", "text": "Read it."}]``.
    """
    pieces = text.split(IMAGE_PLACEHOLDER)
    blocks: List[Dict[str, Optional[str]]] = []
    for i, piece in enumerate(pieces):
        if i > 0 and piece.startswith("\n"):
            piece = piece[1:]
        if i < len(pieces) - 1 and piece.endswith("\n"):
            piece = piece[:-1]
        if piece.strip():
            blocks.append({"type": "text", "text": piece})
        if i < len(pieces) - 1:
            blocks.append({"type": "image", "text": None})
    return blocks


def _turn_fields(turn: Any, index: int) -> Tuple[str, Any]:
    if not isinstance(turn, dict):
        raise RecordError(MALFORMED_RECORD, f"turn {index} is a {type(turn).__name__}, not an object")
    if "from" in turn or "value" in turn:
        role, value = turn.get("from"), turn.get("value")
    elif "role" in turn or "content" in turn:
        role, value = turn.get("role"), turn.get("content")
    else:
        raise RecordError(MALFORMED_RECORD, f"turn {index} has neither 'from'/'value' nor 'role'/'content' keys")
    if not isinstance(role, str):
        raise RecordError(MALFORMED_RECORD, f"turn {index} has no role ('from')")
    return role, value


def _check_role_order(roles: Sequence[str]) -> None:
    expected = "user"
    for i, role in enumerate(roles):
        if role == "system":
            if i != 0:
                raise RecordError(WRONG_ROLE_ORDER, f"turn {i}: a system turn is only allowed first")
            continue
        if role != expected:
            raise RecordError(
                WRONG_ROLE_ORDER, f"turn {i}: expected {expected!r}, got {role!r} (roles: {list(roles)})"
            )
        expected = "assistant" if role == "user" else "user"
    if not roles or roles[-1] != "assistant":
        raise RecordError(WRONG_ROLE_ORDER, f"the conversation must end with an assistant turn (roles: {list(roles)})")


def _content_blocks(value: Any, index: int) -> List[Dict[str, Optional[str]]]:
    """Normalise a turn's content (string, or list of TRL blocks) into ``{"type", "text"}`` blocks."""
    if isinstance(value, str):
        return text_to_blocks(value)
    if isinstance(value, list):
        blocks: List[Dict[str, Optional[str]]] = []
        for j, block in enumerate(value):
            if not isinstance(block, dict) or block.get("type") not in ("text", "image"):
                raise RecordError(MALFORMED_RECORD, f"turn {index}, content block {j} is not a text or image block")
            if block["type"] == "image":
                blocks.append({"type": "image", "text": None})
            else:
                text = block.get("text")
                if not isinstance(text, str):
                    raise RecordError(MALFORMED_RECORD, f"turn {index}, content block {j} has no text")
                if IMAGE_PLACEHOLDER in text:
                    blocks.extend(text_to_blocks(text))
                elif text.strip():
                    blocks.append({"type": "text", "text": text})
        return blocks
    raise RecordError(MALFORMED_RECORD, f"turn {index} content is a {type(value).__name__}, not text")


def conversation_to_messages(conversation: Any, num_images: int) -> List[Dict[str, Any]]:
    """Validate a LLaVA ``conversations`` list (or TRL ``messages`` list) and convert it to TRL messages.

    Raises :class:`RecordError` naming the problem.
    """
    if not isinstance(conversation, list) or not conversation:
        raise RecordError(MALFORMED_RECORD, "'conversations' must be a non-empty list of turns")
    roles: List[str] = []
    messages: List[Dict[str, Any]] = []
    n_placeholders = 0
    for i, turn in enumerate(conversation):
        raw_role, value = _turn_fields(turn, i)
        role = ROLE_MAP.get(raw_role.strip().lower())
        if role is None:
            raise RecordError(
                UNKNOWN_ROLE, f"turn {i} has role {raw_role!r}; expected human/user, gpt/assistant or system"
            )
        if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
            raise RecordError(EMPTY_TURN, f"turn {i} ({raw_role}) is empty")
        blocks = _content_blocks(value, i)
        n_img = sum(1 for b in blocks if b["type"] == "image")
        if not blocks:
            raise RecordError(EMPTY_TURN, f"turn {i} ({raw_role}) has no text")
        if n_img and role != "user":
            raise RecordError(
                IMAGE_COUNT_MISMATCH,
                f"turn {i} ({raw_role}) holds an {IMAGE_PLACEHOLDER} placeholder; only user turns may",
            )
        n_placeholders += n_img
        roles.append(role)
        messages.append({"role": role, "content": blocks})
    _check_role_order(roles)
    if n_placeholders != num_images:
        raise RecordError(
            IMAGE_COUNT_MISMATCH,
            f"{n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) in the conversation but {num_images} image(s) in the record",
        )
    return messages


def llava_to_messages(conversations: Any, num_images: int = 1) -> List[Dict[str, Any]]:
    """Convert LLaVA ``conversations`` to TRL ``messages`` (alias of :func:`conversation_to_messages`)."""
    return conversation_to_messages(conversations, num_images)


# ----------------------------------------------------------------------------------------------------------------------
# Images


def _check_image_file(path: str, verify: bool) -> None:
    if not os.path.isfile(path):
        raise RecordError(MISSING_IMAGE, f"image file not found: {path}")
    if verify:
        _decode(path, path)


def _decode(obj: Union[str, io.BytesIO], name: str) -> None:
    from PIL import Image

    try:
        with Image.open(obj) as im:
            im.load()
    except Exception as e:  # PIL raises many types for bad data
        raise RecordError(CORRUPT_IMAGE, f"cannot decode image {name}: {type(e).__name__}: {e}") from None


def _record_images(record: Dict[str, Any]) -> List[str]:
    image = record.get("image", record.get("images"))
    if image is None:
        return []
    if isinstance(image, str):
        if not image.strip():
            raise RecordError(MALFORMED_RECORD, "'image' is an empty string")
        return [image]
    if isinstance(image, list) and all(isinstance(p, str) and p.strip() for p in image):
        return list(image)
    raise RecordError(MALFORMED_RECORD, "'image' must be a path or a list of paths")


# ----------------------------------------------------------------------------------------------------------------------
# Sources


def _messages_features():
    from datasets import Features, Image, List, Value

    return Features(
        {
            "messages": List(
                {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
            ),
            "images": List(Image()),
        }
    )


def _iter_json_records(path: str, report: LoadReport, strict: bool) -> Iterator[Tuple[str, Any]]:
    """Yield (record id, record) for a JSON array file or a JSON Lines file; bad JSON is reported."""
    name = path
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".jsonl"):
        # split on b"\n" only: str.splitlines() also splits on U+2028, U+0085, ... inside a record
        for lineno, raw_line in enumerate(raw.split(b"\n"), start=1):
            if not raw_line.strip():
                continue
            report.num_records += 1
            where = f"line {lineno}"
            try:
                record = json.loads(raw_line.decode("utf-8"))
            except UnicodeDecodeError as e:
                detail = f"not UTF-8 text: byte 0x{raw_line[e.start]:02x} at column {e.start + 1}"
                _problem(report, strict, Problem(name, where, BAD_JSON, detail))
                continue
            except RecursionError:
                _problem(report, strict, Problem(name, where, BAD_JSON, "JSON nested too deeply"))
                continue
            except json.JSONDecodeError as e:
                _problem(report, strict, Problem(name, where, BAD_JSON, f"invalid JSON: {e}"))
                continue
            yield where, record
        return
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        report.num_records += 1
        detail = f"not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line}, column {column}"
        _problem(report, strict, Problem(name, "<whole file>", BAD_JSON, detail))
        return
    except RecursionError:
        report.num_records += 1
        _problem(report, strict, Problem(name, "<whole file>", BAD_JSON, "JSON nested too deeply"))
        return
    except json.JSONDecodeError as e:
        report.num_records += 1
        _problem(report, strict, Problem(name, "<whole file>", BAD_JSON, f"the file is not valid JSON: {e}"))
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        report.num_records += 1
        _problem(
            report,
            strict,
            Problem(name, "<whole file>", MALFORMED_RECORD, "top-level JSON value must be a list of records"),
        )
        return
    for index, record in enumerate(data):
        report.num_records += 1
        if isinstance(record, str):  # a record stored as a JSON string
            try:
                record = json.loads(record)
            except json.JSONDecodeError as e:
                _problem(
                    report,
                    strict,
                    Problem(name, f"#{index}", BAD_JSON, f"record is a string that is not valid JSON: {e}"),
                )
                continue
        yield f"#{index}", record


def _record_id(record: Any, fallback: str) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return str(record["id"])
    return fallback


def _problem(report: LoadReport, strict: bool, problem: Problem) -> None:
    if strict:
        raise ValueError(str(problem))
    report.add(problem)


def _load_llava_json(path: str, image_folder: Optional[str], strict: bool, verify_images: bool, report: LoadReport):
    folder = image_folder if image_folder is not None else os.path.dirname(os.path.abspath(path))
    messages_col: List[Any] = []
    images_col: List[List[str]] = []
    for fallback_id, record in _iter_json_records(path, report, strict):
        rid = _record_id(record, fallback_id)
        try:
            if not isinstance(record, dict):
                raise RecordError(MALFORMED_RECORD, f"record is a {type(record).__name__}, not an object")
            if "conversations" not in record and "messages" not in record:
                raise RecordError(MALFORMED_RECORD, "record has no 'conversations'")
            images = _record_images(record)
            conv = record.get("conversations", record.get("messages"))
            messages = conversation_to_messages(conv, len(images))
            paths = [p if os.path.isabs(p) else os.path.join(folder, p) for p in images]
            for p in paths:
                _check_image_file(p, verify_images)
        except RecordError as e:
            _problem(report, strict, Problem(path, rid, e.reason, e.detail))
            continue
        messages_col.append(messages)
        images_col.append([os.path.abspath(p) for p in paths])
    from datasets import Dataset

    return Dataset.from_dict({"messages": messages_col, "images": images_col}, features=_messages_features())


def _is_image_list_feature(feature: Any) -> bool:
    from datasets import Image, List, Sequence

    return isinstance(feature, (List, Sequence)) and isinstance(feature.feature, Image)


def _load_hf_dataset(
    ds: Dataset, name: str, image_folder: Optional[str], strict: bool, verify_images: bool, report: LoadReport
):
    """Validate and convert a ``datasets.Dataset`` with ``messages`` (TRL) or ``conversations`` (LLaVA) columns."""
    from datasets import Dataset

    cols = set(ds.column_names)
    if "messages" in cols:
        conv_col = "messages"
    elif "conversations" in cols:
        conv_col = "conversations"
    else:
        raise ValueError(
            f"{name}: dataset has neither a 'messages' nor a 'conversations' column (columns: {sorted(cols)})"
        )
    img_col = "images" if "images" in cols else ("image" if "image" in cols else None)

    keep_image_column = img_col == "images" and _is_image_list_feature(ds.features["images"])
    folder = image_folder or ""
    valid: List[int] = []
    messages_col: List[Any] = []
    images_col: List[List[Any]] = []
    id_col = "id" if "id" in cols else None
    # Iterate as Arrow batches so that images stay undecoded ({"bytes", "path"} dicts) until validated.
    raw = ds.select_columns([c for c in (conv_col, img_col, id_col) if c]).with_format("arrow")
    i = -1
    for batch in raw.iter(batch_size=256):
        for row in batch.to_pylist():
            i += 1
            report.num_records += 1
            rid = str(row[id_col]) if id_col and row[id_col] is not None else f"#{i}"
            try:
                value = row[img_col] if img_col else None
                if value is None:
                    images = []
                elif isinstance(value, list):
                    images = value
                else:
                    images = [value]
                messages = conversation_to_messages(row[conv_col], len(images))
                resolved = [_resolve_hf_image(im, folder, verify_images) for im in images]
            except RecordError as e:
                _problem(report, strict, Problem(name, rid, e.reason, e.detail))
                continue
            valid.append(i)
            messages_col.append(messages)
            images_col.append(resolved)
    features = _messages_features()
    if keep_image_column and all(not isinstance(im, str) for ims in images_col for im in ims):
        out = ds.select(valid).select_columns(["images"])
        if out.features["images"] != features["images"]:
            out = out.cast_column("images", features["images"])
        return out.add_column("messages", messages_col, feature=features["messages"]).select_columns(
            ["messages", "images"]
        )
    return Dataset.from_dict({"messages": messages_col, "images": images_col}, features=features)


def _resolve_hf_image(im: Any, folder: str, verify: bool) -> Any:
    """Return something ``datasets.Image`` can encode (a path or {"bytes", "path"}), checking it decodes."""
    if isinstance(im, str):
        path = im if os.path.isabs(im) or not folder else os.path.join(folder, im)
        _check_image_file(path, verify)
        return os.path.abspath(path)
    if isinstance(im, dict):
        if im.get("bytes"):
            if verify:
                _decode(io.BytesIO(im["bytes"]), im.get("path") or "<embedded bytes>")
            return {"bytes": im["bytes"], "path": im.get("path")}
        if im.get("path"):
            return _resolve_hf_image(im["path"], folder, verify)
        raise RecordError(MISSING_IMAGE, "image entry has neither bytes nor a path")
    try:
        from PIL import Image as PILImage

        if isinstance(im, PILImage.Image):
            return im
    except ImportError:  # pragma: no cover
        pass
    raise RecordError(MALFORMED_RECORD, f"unsupported image value of type {type(im).__name__}")


def _is_saved_dataset(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(os.path.join(path, "state.json"))


def load_training_dataset(
    source: Union[str, os.PathLike],
    image_folder: Optional[str] = None,
    split: str = "train",
    strict: bool = False,
    verify_images: bool = True,
    return_report: bool = False,
    hub_config: Optional[str] = None,
) -> Dataset | tuple[Dataset, LoadReport]:
    """Load ``source`` as a ``datasets.Dataset`` with ``messages`` and ``images`` columns (TRL vision form).

    Args:
        source: LLaVA JSON / JSON Lines file, the generator's output folder, a ``save_to_disk`` folder, or a Hub name.
        image_folder: folder that relative image paths are resolved against (default: the JSON file's folder).
        split: split to load from a generator folder (``{split}.json``), a ``DatasetDict`` or the Hub.
        hub_config: the Hub dataset's configuration name (TRL's ``--dataset_config``).
        strict: raise ``ValueError`` on the first bad record instead of skipping it.
        verify_images: fully decode every image while validating (catches truncated files; costs one decode per image).
        return_report: also return the :class:`LoadReport`.

    Returns:
        The dataset, or ``(dataset, report)`` when ``return_report`` is true.
    """
    source = os.fspath(source)
    report = LoadReport(source=source)
    if os.path.isfile(source):
        ds = _load_llava_json(source, image_folder, strict, verify_images, report)
    elif os.path.isdir(source):
        json_path = os.path.join(source, f"{split}.json")
        if os.path.isfile(json_path):
            report.source = json_path
            ds = _load_llava_json(json_path, image_folder or source, strict, verify_images, report)
        else:
            target = source
            if not _is_saved_dataset(target) and _is_saved_dataset(os.path.join(source, "hf")):
                target = os.path.join(source, "hf")
            if not _is_saved_dataset(target):
                raise ValueError(
                    f"{source}: not a LLaVA JSON file, a generator output folder (no {split}.json) or a dataset saved "
                    f"with save_to_disk"
                )
            from datasets import DatasetDict, load_from_disk

            loaded = load_from_disk(target)
            if isinstance(loaded, DatasetDict):
                if split not in loaded:
                    raise ValueError(f"{target}: no split {split!r} (splits: {sorted(loaded.keys())})")
                loaded = loaded[split]
            ds = _load_hf_dataset(loaded, target, image_folder, strict, verify_images, report)
    elif source.endswith((".json", ".jsonl")):
        raise FileNotFoundError(f"data file not found: {source}")
    else:
        from datasets import load_dataset

        loaded = load_dataset(source, hub_config, split=split)
        ds = _load_hf_dataset(loaded, f"{source}[{split}]", image_folder, strict, verify_images, report)
    report.num_loaded = len(ds)
    if report.num_skipped:
        logger.warning("%s", report.summary())
    else:
        logger.info("%s", report.summary())
    if report.num_loaded == 0:
        raise ValueError(
            f"no valid training records: {report.summary()}"
            + (f"; first problem: {report.problems[0]}" if report.problems else "")
        )
    return (ds, report) if return_report else ds
