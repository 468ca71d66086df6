"""lmms-eval plug-in (ocr_mllm/lmms_eval_adapter.py): ``python -m lmms_eval --model ocr_mllm`` run as a user runs it
(the setup.cfg entry point, task YAMLs from ``--include_path``, a JSONL dataset on disk, no Hub), on the random tiny
model, checked answer by answer against our own ``generate_batch`` / the model's loss one document at a time.

The documents have prompts of different lengths (the adapter sorts a batch group by length, so answers handed back in
the wrong order or to the wrong document show up), and two of them share their question but not their image (so an
image given to the wrong document shows up too)."""

import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ocr_mllm.inference._testing import single_thread, subprocess_env


GEN_TASK, MC_TASK = "ocr_mllm_tiny_gen", "ocr_mllm_tiny_mc"
DOCS = [  # (question, image colour)
    ("Read all the text in the image.", "red"),
    ("Read all the text in the image.", "blue"),
    ("What?", "green"),
    ("Which word is written on this small picture? Answer with the word only.", "white"),
    ("Text?", "black"),
]
CHOICES = ["cat", "dog", "sun"]
MAX_NEW_TOKENS = 6

GEN_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: image
doc_to_text: "{{{{question}}}}"
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  until: ["\\n\\n"]
  do_sample: false
  image_aspect_ratio: pad
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""

MC_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_visual: image
doc_to_text: "{{{{question}}}}"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""


def _write_suite(root: Path) -> tuple[Path, list[dict]]:
    """Images, one JSONL dataset and the two task YAMLs under ``root``; returns (task folder, rows)."""
    rows = []
    for i, (question, colour) in enumerate(DOCS):
        path = root / f"doc{i}.png"
        Image.new("RGB", (64, 32), colour).save(path)
        rows.append(
            {"image": str(path), "question": question, "answer": CHOICES[i % 3], "choices": CHOICES, "label": i % 3}
        )
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / f"{GEN_TASK}.yaml").write_text(GEN_YAML.format(task=GEN_TASK, data=data, max_new_tokens=MAX_NEW_TOKENS))
    (tasks / f"{MC_TASK}.yaml").write_text(MC_YAML.format(task=MC_TASK, data=data))
    return tasks, rows


def _conversation(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def lmms_eval_run(tiny_model_dir, tmp_path_factory):
    """One ``python -m lmms_eval`` run over both tasks; returns (rows, results json, {task: {doc_id: sample}})."""
    root = tmp_path_factory.mktemp("lmms_eval")
    tasks, rows = _write_suite(root)
    out = root / "out"
    argv = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "ocr_mllm",
        "--model_args",
        f"pretrained={tiny_model_dir},device=cpu,dtype=fp32",
        "--batch_size",
        "2",
        "--tasks",
        f"{GEN_TASK},{MC_TASK}",
        "--include_path",
        str(tasks),
        "--output_path",
        str(out),
        "--log_samples",
    ]
    env = dict(
        subprocess_env(),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(root / "hf_datasets"),
    )
    # not from the repo root and without PYTHONPATH: the installed (editable) package and its entry point have to be
    # found from wherever the user runs lmms-eval
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    log = (proc.stdout + proc.stderr)[-4000:]
    results_files = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    # lmms-eval logs an error and exits 0 when evaluation fails, so the results file is the test of success
    assert proc.returncode == 0 and len(results_files) == 1, log
    samples = {}
    for task in (GEN_TASK, MC_TASK):
        (path,) = glob.glob(str(out / "**" / f"*_samples_{task}.jsonl"), recursive=True)
        lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        samples[task] = {s["doc_id"]: s for s in lines}
    return rows, json.loads(Path(results_files[0]).read_text()), samples


def test_generate_until_answers_match_one_by_one(lmms_eval_run, tiny_model_dir):
    from ocr_mllm.inference import generate_batch, load_model_and_processor

    rows, results, samples = lmms_eval_run
    model, processor = load_model_and_processor(str(tiny_model_dir), device="cpu", dtype="fp32")
    with single_thread():
        expected = [
            generate_batch(
                model, processor, [_conversation(r["question"])], [[r["image"]]], max_new_tokens=MAX_NEW_TOKENS
            )[0]
            for r in rows
        ]
    # the random model must tell every document apart, or a mix-up could not show
    assert len(set(expected)) == len(expected), expected
    got = [samples[GEN_TASK][i]["filtered_resps"] for i in range(len(rows))]
    assert got == expected
    score = sum(a == r["answer"] for a, r in zip(expected, rows)) / len(rows)
    assert results["results"][GEN_TASK]["exact_match,none"] == pytest.approx(score)


def test_multiple_choice_scores_match_the_model_loss(lmms_eval_run, tiny_model_dir):
    """lmms-eval picks ``argmin`` of what ``loglikelihood`` returns; we return the continuation's mean token loss, as
    its bundled HF models do. Recomputed here with the model's own ``labels`` loss."""
    from ocr_mllm.inference import load_model_and_processor, prepare_inputs

    rows, results, samples = lmms_eval_run
    model, processor = load_model_and_processor(str(tiny_model_dir), device="cpu", dtype="fp32")
    accuracy = []
    for i, row in enumerate(rows):
        losses = []
        for choice in CHOICES:
            inputs = prepare_inputs(model, processor, [_conversation(row["question"])], [[row["image"]]])
            n_prompt = inputs["input_ids"].shape[1]
            cont = processor.tokenizer(" " + choice, add_special_tokens=False, return_tensors="pt")["input_ids"]
            inputs["input_ids"] = torch.cat([inputs["input_ids"], cont], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            labels = inputs["input_ids"].clone()
            labels[:, :n_prompt] = -100
            with torch.inference_mode(), single_thread():
                losses.append(model(**inputs, labels=labels).loss.item())
        got = [float(ll) for ll, _greedy in samples[MC_TASK][i]["filtered_resps"]]
        assert got == pytest.approx(losses, abs=1e-4), (i, got, losses)
        accuracy.append(float(min(range(len(CHOICES)), key=losses.__getitem__) == row["label"]))
    assert results["results"][MC_TASK]["acc,none"] == pytest.approx(sum(accuracy) / len(accuracy))


def test_entry_point_resolves_to_the_adapter():
    import importlib

    from lmms_eval.models import get_model

    from ocr_mllm.lmms_eval_adapter import OcrMllmLmms

    assert get_model("ocr_mllm") is OcrMllmLmms
    # lmms-eval 0.7.1-0.7.3 import it in every evaluation; under filelock 4 it exists only through our alias
    assert hasattr(importlib.import_module("filelock._api"), "FileLockMeta")


def test_bad_requests_and_settings_are_named():
    from ocr_mllm.lmms_eval_adapter import (
        OcrMllmLmms,
        build_conversation,
        check_visuals,
        cut_at_stop_strings,
        translate_generation_kwargs,
    )

    ignored: set[str] = set()
    kwargs, stops = translate_generation_kwargs(
        {"until": ["\n", ""], "do_sample": False, "temperature": 0.7, "max_gen_toks": 5, "image_aspect_ratio": "pad"},
        default_max_new_tokens=64,
        ignored=ignored,
    )
    assert kwargs["temperature"] == 0.0 and kwargs["max_new_tokens"] == 5 and stops == ("\n",)
    assert ignored == {"image_aspect_ratio"}
    assert cut_at_stop_strings(" cat\ndog", stops) == "cat"
    with pytest.raises(ValueError, match="until"):
        translate_generation_kwargs({"until": 3}, 64)
    with pytest.raises(ValueError, match="max_new_tokens"):
        translate_generation_kwargs({"max_new_tokens": 0}, 64)

    conv = build_conversation("<image>\nleft <image> right", 2)
    assert [c["type"] for c in conv[0]["content"]] == ["image", "text", "image", "text"]
    with pytest.raises(ValueError, match="1 <image> placeholder"):
        build_conversation("<image> what?", 2)
    with pytest.raises(ValueError, match="clip.mp4"):
        check_visuals(["clip.mp4"], "task t doc 0")
    with pytest.raises(ValueError, match="unknown model_args"):
        OcrMllmLmms(pretrained="unused", temprature=0)
    with pytest.raises(ValueError, match="pretrained"):
        OcrMllmLmms()
    with pytest.raises(ValueError, match="batch_size"):
        OcrMllmLmms(pretrained="unused", batch_size="auto")
