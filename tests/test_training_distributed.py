"""Two-process training on CPU through `accelerate launch` with the repo's configs: DDP (gloo), DeepSpeed ZeRO-2 and
ZeRO-3, where one rank only ever sees text-only records (the model's ×0 tower pass keeps the ranks in step)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training_data import write_jsonl
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parents[1]
ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_jsonl(tmp_path_factory):
    # with per-device batch 1 and sequential sampling, rank 0 gets records 0, 2, 4 … (images) and rank 1 gets
    # records 1, 3, 5 … (text only)
    return write_jsonl(tmp_path_factory.mktemp("mixed"), text_only_every=2)


def _launch(config: str, script: str, model_dir, dataset, output_dir, *extra, timeout=400):
    command = [
        ACCELERATE,
        "launch",
        "--config_file",
        f"configs/accelerate/{config}.yaml",
        "--num_processes",
        "2",
        script,
        "--model_name_or_path",
        str(model_dir),
        "--dataset",
        str(dataset),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "1",
        "--train_sampling_strategy",
        "sequential",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        *extra,
    ]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "done: 3 steps" in log, log[-2000:]
    return log


def _same_weights(a, b, atol=1e-5):
    first, second = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    assert first.keys() == second.keys()
    return max((first[k].float() - second[k].float()).abs().max().item() for k in first) < atol


def test_ddp_two_processes_stage1(tiny_model_dir, mixed_jsonl, tmp_path):
    log = _launch("ddp", "train_pretrain.py", tiny_model_dir, mixed_jsonl, tmp_path / "ddp")
    assert "'epoch': '0.75'" in log.replace('"', "'")  # 3 steps × 2 ranks of 8 records: really data parallel
    assert (tmp_path / "ddp" / "modeling_ocr_mllm.py").exists()


def test_zero2_and_zero3_two_processes_with_a_text_only_rank(tiny_model_dir, mixed_jsonl, tmp_path):
    _launch("zero2", "train_sft.py", tiny_model_dir, mixed_jsonl, tmp_path / "zero2")
    log = _launch("zero3", "train_sft.py", tiny_model_dir, mixed_jsonl, tmp_path / "zero3")
    assert "Trainable parameters" in log
    # ZeRO-3 gathers the partitioned weights into a complete folder that equals the ZeRO-2 result
    assert _same_weights(tmp_path / "zero2", tmp_path / "zero3")
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "zero3", trust_remote_code=True)
    assert all(p.numel() > 0 for p in model.parameters())
    assert not torch.equal(
        load_file(Path(tiny_model_dir) / "model.safetensors")["lm_head.weight"],
        load_file(tmp_path / "zero3" / "model.safetensors")["lm_head.weight"],
    )
