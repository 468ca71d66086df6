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


@pytest.fixture(scope="session")
def reading_model(tmp_path_factory):
    """(folder, image paths, words) of a tiny line reader trained to read its 8 word images (tests/_reading_model.py):
    its answers depend on its images, so batch tests can see a swapped image."""
    from tests._reading_model import WORDS, render_word_images, train_reading_model

    root = tmp_path_factory.mktemp("reading_model")
    images = render_word_images(root / "images")
    return train_reading_model(root, images), images, list(WORDS)
