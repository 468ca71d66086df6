"""Resumable, length-sorted batched generation into a JSONL file."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .generation import generate_batch, get_tokenizer
from .images import load_images


if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin


logger = logging.getLogger("ocr_mllm.inference")

MAX_FAILED_IDS_KEPT = 1000
# build_inputs / image loading errors that mark one record as bad (anything else is a bug and propagates)
BAD_RECORD_ERRORS = (ValueError, OSError, KeyError)
# when this many generations fail and none succeeded, the problem is not the data: stop instead of skipping everything
ABORT_AFTER_FAILURES = 16
# a record may carry its place in the input ("file.jsonl:12") under this private key; messages cite it
WHERE_KEY = "_where"


def _id_key(value: Any) -> str:
    return str(value)


def read_done_ids(output_path: str, id_key: str = "id") -> set[str]:
    """Ids already written to ``output_path``. A partial last line (a kill mid-write) is cut off the file."""
    done: set[str] = set()
    if not os.path.exists(output_path):
        return done
    with open(output_path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            logger.warning(
                "%s: dropping a partial last line (%d bytes) left by an interrupted run", output_path, len(data) - cut
            )
            f.truncate(cut)
            data = data[:cut]
    # split on b"\n" only: str.splitlines() would also split inside records holding U+2028, U+0085, \x1c ..., so
    # those ids would never count as done and every rerun would write them again
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: unreadable line ignored", output_path, lineno)
            continue
        if isinstance(row, dict) and id_key in row:
            done.add(_id_key(row[id_key]))
    return done


def _jsonable(value: Any) -> tuple[Any, bool]:
    try:
        json.dumps(value, ensure_ascii=False)
        return value, True
    except (TypeError, ValueError):
        return None, False


def output_row(record: dict, prediction: str, drop_keys: Sequence[str] = ("images",)) -> dict:
    """The record's fields minus images, private ``_keys`` and anything that is not JSON, + ``prediction``."""
    row = {}
    for key, value in record.items():
        if key in drop_keys or str(key).startswith("_"):
            continue
        value, ok = _jsonable(value)
        if ok:
            row[key] = value
    row["prediction"] = prediction
    return row


def _image_size(img: Any) -> tuple[int, int] | None:
    if isinstance(img, (str, os.PathLike)):
        try:
            from PIL import Image

            with Image.open(img) as im:  # reads the header only, no decoding
                return im.size
        except Exception:  # the real load reports bad files later
            return None
    size = getattr(img, "size", None)
    if isinstance(size, tuple) and len(size) == 2:
        return size
    shape = getattr(img, "shape", None)
    if shape is not None and len(shape) >= 2:
        return (
            (int(shape[1]), int(shape[0]))
            if len(shape) == 2 or shape[-1] in (1, 3, 4)
            else (int(shape[-1]), int(shape[-2]))
        )
    return None


def _image_tokens(processor: ProcessorMixin, img: Any) -> int:
    """Tokens the processor will expand this image to, computed from its size only (no decoding)."""
    size = _image_size(img)
    image_processor = getattr(processor, "image_processor", None)
    views_fn = getattr(image_processor, "get_number_of_high_res_views", None)
    tokens_fn = getattr(processor, "num_image_tokens", None)
    if size and callable(views_fn) and callable(tokens_fn):
        try:
            return int(tokens_fn(views_fn(size[0], size[1])))
        except Exception:
            pass
    # unknown processor: a term that grows with the image side
    return 1 + (int((size[0] * size[1]) ** 0.5) // 64 if size else 0)


def _prompt_length(processor: ProcessorMixin, messages: list[dict], images: Sequence | None) -> int:
    """Sort key: tokens of the templated prompt with each image counted at its expanded size."""
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    n = len(get_tokenizer(processor)(prompt, add_special_tokens=False)["input_ids"])
    for img in images or []:
        n += _image_tokens(processor, img) - 1  # the placeholder itself is already counted once
    return n


def run_batched_jsonl(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    records: Iterable[dict],
    output_path: str,
    build_inputs: Callable[[dict], tuple[list, list]],
    batch_size: int = 8,
    id_key: str = "id",
    generation_kwargs: dict | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> dict:
    """Generate a prediction for every record and append one JSON line per record to ``output_path``.

    * ids already in ``output_path`` are skipped (resume after a kill; a partial last line is repaired);
    * the remaining records are sorted by prompt length (less padding) and generated in left-padded batches;
    * each batch's lines are written and flushed as soon as the batch is done;
    * ``build_inputs(record) -> (messages, images)``; a ``ValueError`` (or ``OSError``/``KeyError``) there, a record
      without an id, a duplicate id, an unreadable image or a failed generation is logged, counted and skipped (a
      failing batch is retried item by item so one bad record does not sink its neighbours). If the first 16
      generations all fail, a ``RuntimeError`` is raised instead (a broken model or option, not bad data).
    * when ``build_inputs`` returns decoded images (not paths) they are not kept between the sorting pass and the
      generation: ``build_inputs`` is called again for the record's batch, so memory stays at one batch of images.

    Returns ``{"total", "done", "skipped_existing", "failed", "duplicates", "failed_ids", "seconds",
    "items_per_second"}``.
    """
    from tqdm.auto import tqdm

    generation_kwargs = dict(generation_kwargs or {})
    batch_size = max(1, int(batch_size))
    start = time.perf_counter()
    out_dir = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(out_dir, exist_ok=True)
    done_ids = read_done_ids(output_path, id_key)
    stats: dict[str, Any] = {
        "total": 0,
        "done": 0,
        "skipped_existing": 0,
        "failed": 0,
        "duplicates": 0,
        "failed_ids": [],
    }

    def where(record: Any, index: int) -> str:
        """The record's place for messages: ``file:line`` when the reader recorded it (``_where``), else its index."""
        loc = record.get(WHERE_KEY) if isinstance(record, dict) else None
        return str(loc) if loc else f"record #{index}"

    def fail(rid: Any, reason: object, loc: str) -> None:
        stats["failed"] += 1
        if len(stats["failed_ids"]) < MAX_FAILED_IDS_KEPT:
            stats["failed_ids"].append(rid)
        if rid is None:
            logger.warning("%s: skipped: %s", loc, reason)
        else:
            logger.warning("%s: record %r skipped: %s", loc, rid, reason)

    # 1. collect the work, validate records, compute sort keys
    todo: list[tuple] = []
    seen: set[str] = set()
    for index, record in enumerate(records):
        if limit is not None and index >= limit:
            break
        stats["total"] += 1
        if not isinstance(record, dict) or id_key not in record or record[id_key] is None:
            fail(None, f"no {id_key!r} field", where(record, index))
            continue
        rid = record[id_key]
        key = _id_key(rid)
        if key in done_ids:
            stats["skipped_existing"] += 1
            continue
        if key in seen:
            stats["duplicates"] += 1
            logger.warning("%s: duplicate id %r skipped", where(record, index), rid)
            continue
        seen.add(key)
        try:
            messages, images = build_inputs(record)
            length = _prompt_length(processor, messages, images)
        except BAD_RECORD_ERRORS as exc:
            fail(rid, exc, where(record, index))
            continue
        images = list(images or [])
        if all(isinstance(img, (str, os.PathLike)) for img in images):
            todo.append((length, index, record, messages, images))  # paths: cheap to keep
        else:  # decoded images: do not hold the whole dataset in memory, build again when its batch comes
            todo.append((length, index, record, None, None))
    todo.sort(key=lambda item: (item[0], item[1]))

    # 2. generate
    bar = tqdm(total=len(todo), disable=not progress, unit="item", desc="generate", dynamic_ncols=True)

    def generate_items(items: list[tuple]) -> list[tuple[int, dict, str | None, Exception | None]]:
        try:
            texts = generate_batch(
                model, processor, [it[3] for it in items], [it[4] for it in items], **generation_kwargs
            )
            return [(it[1], it[2], t, None) for it, t in zip(items, texts)]
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if len(items) == 1:
                return [(items[0][1], items[0][2], None, exc)]
            logger.info("batch of %d failed (%s); retrying its items one by one", len(items), exc)
            results = []
            for it in items:
                results.extend(generate_items([it]))
            return results

    attempts = {"generated": 0, "failed": 0}
    with open(output_path, "a", encoding="utf-8") as out:
        for i in range(0, len(todo), batch_size):
            items = []
            for length, index, record, messages, images in todo[i : i + batch_size]:
                try:  # decode images now, so that one unreadable file fails alone
                    if messages is None:
                        messages, images = build_inputs(record)
                    items.append((length, index, record, messages, load_images(images)))
                except BAD_RECORD_ERRORS as exc:
                    fail(record[id_key], exc, where(record, index))
            for index, record, text, exc in generate_items(items) if items else []:
                attempts["generated"] += 1
                if exc is not None:
                    attempts["failed"] += 1
                    fail(record[id_key], f"{type(exc).__name__}: {exc}", where(record, index))
                    if attempts["failed"] == attempts["generated"] >= ABORT_AFTER_FAILURES:
                        raise RuntimeError(
                            f"the first {attempts['failed']} generations all failed; giving up (last error: {exc!r})"
                        ) from exc
                    continue
                out.write(json.dumps(output_row(record, text), ensure_ascii=False) + "\n")
                stats["done"] += 1
            out.flush()
            bar.update(len(todo[i : i + batch_size]))
            if stats["failed"]:
                bar.set_postfix(failed=stats["failed"])
    bar.close()
    stats["seconds"] = round(time.perf_counter() - start, 3)
    stats["items_per_second"] = round(stats["done"] / stats["seconds"], 3) if stats["seconds"] > 0 else None
    return stats
