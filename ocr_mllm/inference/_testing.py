"""Helpers for the inference tests (the tiny model itself comes from tests/conftest.py's ``tiny_model_dir``)."""

from __future__ import annotations

import os
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[2]


# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine (pytest-xdist, other jobs) OpenMP
# threads that spin-wait make each step 10-30x slower. Tests run the tiny model single-threaded.
SUBPROCESS_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TQDM_DISABLE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


def subprocess_env() -> dict:
    return dict(os.environ, **SUBPROCESS_ENV)


class single_thread:
    """Context manager: ``torch.set_num_threads(1)`` inside, the previous count restored after."""

    def __enter__(self):
        import torch

        self._previous = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self._previous)
        return False
