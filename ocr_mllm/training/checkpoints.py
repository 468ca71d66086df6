"""Which checkpoint ``--resume_from_checkpoint`` continues from.

``last`` (or ``true``) takes the newest *complete* ``checkpoint-N`` in the output folder: a crash during a save leaves
a folder without ``trainer_state.json`` or with missing / truncated weights, and resuming from it would crash or
silently start over. Those are skipped with a warning. When there is no complete checkpoint at all the run stops with
:class:`CheckpointError` instead of quietly training from step 0.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ocr_mllm.folders import checkpoint_problem


logger = logging.getLogger("ocr_mllm.training")

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
LAST = ("last", "true", "True")


class CheckpointError(ValueError):
    """No checkpoint to resume from, or the one asked for is incomplete."""


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(newest complete ``checkpoint-N`` in ``output_dir`` or None, [(incomplete newer ones, why), ...])."""
    folder = Path(output_dir)
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = CHECKPOINT_DIR.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
    skipped: list[tuple[Path, str]] = []
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint path to give ``Trainer.train(resume_from_checkpoint=...)`` for the ``--resume_from_checkpoint``
    value: None / "" / false → None (fresh run); ``last`` / true → the newest complete checkpoint; a path → that
    checkpoint, which must be complete. Raises :class:`CheckpointError` with a one-line message otherwise."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "false", "none")):
        return None
    if value is True or (isinstance(value, str) and value.strip() in LAST):
        path, skipped = newest_complete_checkpoint(output_dir)
        for bad, why in skipped:
            logger.warning("not resuming from %s, it is incomplete (a crash during the save?): %s", bad, why)
        if path is None:
            detail = f"; incomplete: {', '.join(p.name for p, _ in skipped)}" if skipped else ""
            raise CheckpointError(
                f"--resume_from_checkpoint {value}: no complete checkpoint in {output_dir}{detail} "
                "(drop the flag to start a new run)"
            )
        logger.info("resuming from %s", path)
        return str(path)
    path = Path(value)
    if not path.is_dir():
        raise CheckpointError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"--resume_from_checkpoint {value} is incomplete: {problem}")
    return str(path)
