"""Helpers shared by the benchmark modules: samples, prediction files, image paths, results (JSON + markdown)."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence


if TYPE_CHECKING:
    import datasets


logger = logging.getLogger("eval")

PROMPT_STYLES = ("plain", "original")
# LLaVA-1.5's answer-format suffix for short-answer VQA sets (its eval.zip question files; used by the original).
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")


class EvalDataError(ValueError):
    """The benchmark files are missing or not in the expected layout."""


@dataclass
class Sample:
    """One question to ask the model.

    question_id: the benchmark's own id (written to the predictions file and used to resume / score).
    prompt: the user text (the chat template adds the image placeholder in front of it).
    image: a path, a PIL image, or a zero-argument callable returning one (decoded lazily, e.g. MMBench base64).
    group: the unit ``--limit`` counts (a question; an MME image; an MMBench question with all its rotations).
    meta: ground truth and whatever the scorer needs (never sent to the model).
    """

    question_id: Any
    prompt: str
    image: Any
    group: Any = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.group is None:
            self.group = self.question_id

    @property
    def key(self) -> str:
        return qid_key(self.question_id)

    def load_image(self) -> Any:
        return self.image() if callable(self.image) else self.image


def qid_key(qid: Any) -> str:
    """Ids are compared as strings so that 7, "7" and 7.0 (pandas) agree."""
    if isinstance(qid, float) and qid.is_integer():
        qid = int(qid)
    return str(qid)


def apply_limit(samples: Sequence[Sample], limit: int | None) -> list[Sample]:
    """Keep the samples of the first ``limit`` groups (in dataset order)."""
    if limit is None or limit <= 0:
        return list(samples)
    out = []
    seen = set()
    for s in samples:
        if s.group not in seen:
            if len(seen) >= limit:
                continue
            seen.add(s.group)
        out.append(s)
    return out


def check_unique_ids(samples: Sequence[Sample], task: str) -> None:
    seen = set()
    for s in samples:
        if s.key in seen:
            raise EvalDataError(f"{task}: duplicate question_id {s.question_id!r}")
        seen.add(s.key)


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; a missing, truncated or non-UTF-8 one raises EvalDataError naming the file (and line)."""
    from ocr_mllm.folders import FolderError, read_json_file

    try:
        return read_json_file(path)
    except FolderError as exc:
        raise EvalDataError(str(exc)) from None


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``path`` all at once: readers see the old file or the new one, never half of it.

    The temporary file has a name of its own per writer, because data-parallel eval ranks can materialise the same
    image (MMBench's circular copies share one) at the same moment; a shared ``.tmp`` name let one rank's rename
    take the other's file away."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomically(path, json.dumps(obj, ensure_ascii=False, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a truncated last line (a killed writer) is ignored with a warning."""
    rows = []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for i, raw in enumerate(lines):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise EvalDataError(
                f"{path}:{i + 1}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            ) from None
        if not line:
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1:
                logger.warning("%s: ignoring a truncated last line", path)
                continue
            raise EvalDataError(f"{path}:{i + 1}: not valid JSON") from None
        if not isinstance(row, dict):
            raise EvalDataError(f"{path}:{i + 1}: not a JSON object but a {type(row).__name__} ({line[:40]})")
        rows.append(row)
    return rows


def load_predictions(path: str | os.PathLike) -> dict[str, str]:
    """``{question_id (as str): prediction}`` from a JSONL file with ``question_id`` and ``prediction`` (``text``, the
    LLaVA answers-file key, is accepted too). Later lines win."""
    preds: dict[str, str] = {}
    for i, row in enumerate(read_jsonl(path)):
        if "question_id" not in row:
            raise EvalDataError(f"{path}: line {i + 1} has no 'question_id'")
        if "prediction" in row:
            text = row["prediction"]
        elif "text" in row:
            text = row["text"]
        else:
            raise EvalDataError(f"{path}: line {i + 1} has no 'prediction'")
        preds[qid_key(row["question_id"])] = "" if text is None else str(text)
    return preds


def find_file(root: Path, names: Sequence[str], what: str) -> Path:
    """First of ``names`` (relative paths) that exists under ``root``; ``root`` itself when it is such a file."""
    if root.is_file():
        return root
    for name in names:
        p = root / name
        if p.is_file():
            return p
    raise EvalDataError(f"{what}: none of {list(names)} found under {root}")


def resolve_image(name: str, bases: Sequence[Path], stem_search: bool = False) -> Path:
    """Find an image file ``name`` under one of ``bases`` (also trying its basename; with ``stem_search`` also any
    image extension for the same stem). Raises EvalDataError naming the file."""
    name = str(name)
    tried = []
    for base in bases:
        for cand in (base / name, base / Path(name).name):
            tried.append(cand)
            if cand.is_file():
                return cand
        if stem_search:
            stem = Path(name).stem
            for ext in IMAGE_EXTENSIONS:
                cand = base / (stem + ext)
                if cand.is_file():
                    return cand
    raise EvalDataError(f"image {name!r} not found (looked in {', '.join(str(b) for b in bases)})")


_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"RIFF", ".webp"))


def _safe_name(key: Any) -> str:
    return re.sub(r"[^\w.-]", "_", str(key))


class ImageStore:
    """Writes in-memory images (MMBench base64 cells, Hub dataset bytes) to files on first use, so that generation
    only ever holds paths for the records it has not processed yet (not thousands of decoded images)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self._root = Path(root) if root is not None else None

    @property
    def root(self) -> Path:
        if self._root is None:  # a temporary folder, made only when an image is actually written
            self._root = Path(tempfile.mkdtemp(prefix="ocr_mllm_eval_images_"))
        return self._root

    def lazy(self, key: Any, get_bytes: Callable[[], bytes]) -> Callable[[], str]:
        """A callable returning the path of the image ``key`` (written from ``get_bytes()`` the first time)."""

        def materialise() -> str:
            stem = _safe_name(key)
            if self._root is not None:
                for ext in (".png", ".jpg", ".gif", ".bmp", ".webp", ".img"):
                    p = self._root / (stem + ext)
                    if p.is_file():
                        return str(p)
            data = get_bytes()
            if not data:
                raise EvalDataError(f"image {key!r}: no data")
            ext = next((e for m, e in _MAGIC if data.startswith(m)), ".img")
            path = self.root / (stem + ext)
            write_atomically(path, data)
            return str(path)

        return materialise

    def from_base64(self, key: Any, data: str) -> Callable[[], str]:
        return self.lazy(key, lambda: base64.b64decode(data))

    def from_hub(self, key: Any, ds: datasets.Dataset, row: int, column: str = "image") -> Callable[[], str]:
        """Image ``column`` of row ``row`` of a Hub dataset loaded by :func:`load_hub_dataset` (decode=False)."""

        def get_bytes() -> bytes:
            value = ds[row][column]
            if isinstance(value, dict):
                if value.get("bytes"):
                    return value["bytes"]
                if value.get("path") and os.path.isfile(value["path"]):
                    return Path(value["path"]).read_bytes()
            if hasattr(value, "save"):  # a decoded PIL image
                buf = io.BytesIO()
                value.save(buf, format="PNG")
                return buf.getvalue()
            raise EvalDataError(f"row {row}: unsupported image value {type(value).__name__}")

        return self.lazy(key, get_bytes)


def hub_rows(ds: datasets.Dataset, image_columns: Sequence[str] = ("image",)) -> Iterator[tuple[int, dict]]:
    """Iterate over a Hub dataset's rows without reading its image columns."""
    drop = [c for c in image_columns if c in ds.column_names]
    light = ds.remove_columns(drop) if drop else ds
    for i in range(len(light)):
        yield i, light[i]


def image_store(opts: dict | None) -> ImageStore:
    opts = opts or {}
    store = opts.get("image_store")
    if store is None:
        store = ImageStore(opts.get("image_cache"))
        opts["image_store"] = store
    return store


def is_missing(value: Any) -> bool:
    """None, NaN, or the strings "nan"/"none" (LLaVA's ``is_none``)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip().lower() in ("nan", "none", ""):
        return True
    return False


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_dataset_id(data: str) -> bool:
    """A Hub dataset id ("owner/name") that is not an existing local path."""
    return not os.path.exists(data) and bool(_HUB_ID.match(str(data)))


def load_hub_dataset(
    repo_id: str, name: str | None, split: str, image_columns: Sequence[str] = ("image",)
) -> datasets.Dataset:
    """``datasets.load_dataset`` (needs the network or a populated HF cache). Image columns are left undecoded
    (``{"bytes", "path"}``); :meth:`ImageStore.from_hub` writes them to files when the model needs them."""
    import datasets

    logger.info("loading Hub dataset %s (config=%s, split=%s)", repo_id, name, split)
    ds = datasets.load_dataset(repo_id, name, split=split)
    for col in image_columns:
        if col in ds.column_names and isinstance(ds.features[col], datasets.Image):
            ds = ds.cast_column(col, datasets.Image(decode=False))
    return ds


# ---------------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |")
    return "\n".join(lines)


@dataclass
class TaskResult:
    """What a benchmark scorer returns.

    headline: the numbers for the suite table (ordered; percentages 0-100 unless the metric says otherwise).
    sections: (title, headers, rows) tables for the markdown report (per category, per subtask, ...).
    details: anything else worth keeping in the JSON (counts, per-category dicts, file names).
    """

    task: str
    headline: dict[str, Any]
    sections: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "metrics": self.headline,
            "details": self.details,
            "notes": self.notes,
            "sections": [{"title": t, "headers": h, "rows": r} for t, h, r in self.sections],
        }

    def to_markdown(self) -> str:
        parts = [f"## {self.task}", "", markdown_table(["metric", "value"], list(self.headline.items()))]
        for title, headers, rows in self.sections:
            parts += ["", f"### {title}", "", markdown_table(headers, rows)]
        if self.notes:
            parts += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(parts) + "\n"


def count_missing(samples: Sequence[Sample], preds: dict[str, str]) -> int:
    return sum(1 for s in samples if s.key not in preds)


def missing_note(n_missing: int, n_total: int) -> list[str]:
    if n_missing:
        return [f"{n_missing} of {n_total} questions have no prediction and count as wrong"]
    return []
