"""Shared fixtures: one tiny model folder per test session (random weights, small BPE vocabulary)."""

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of a complete tiny model folder built by scripts/build_model.py's library code."""
    from ocr_mllm.building import build_tiny_folder

    return build_tiny_folder(tmp_path_factory.mktemp("tiny_model") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_model_and_processor(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    return model, processor
