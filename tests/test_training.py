"""Training (issue 4) on tiny models, in-process: collator masking and truncation, freezing plans, learning,
overfitting, resume, LoRA merge, saving, argument parsing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training_data import WORDS, dataset, record, render_word
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)


def _decode_supervised(processor, ids, labels):
    return processor.tokenizer.decode([t for t, l in zip(ids.tolist(), labels.tolist()) if l != -100])


def _args(stage, output_dir, **overrides):
    from ocr_mllm.training.arguments import PretrainConfig, SftConfig

    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        warmup_steps=0,
        lr_scheduler_type="constant",
    )
    settings.update(overrides)
    return (PretrainConfig if stage == "pretrain" else SftConfig)(**settings)


def _run(stage, model_dir, output_dir, train_dataset, model_overrides=None, callbacks=None, **overrides):
    from ocr_mllm.training.arguments import DataArguments, ModelArguments
    from ocr_mllm.training.pipeline import run_stage

    model_args = ModelArguments(model_name_or_path=str(model_dir), **(model_overrides or {}))
    return run_stage(
        stage,
        model_args,
        DataArguments(),
        _args(stage, output_dir, **overrides),
        train_dataset=train_dataset,
        callbacks=callbacks,
    )


def _losses(result):
    return [entry["loss"] for entry in result.log_history if "loss" in entry]


# ------------------------------------------------------------------------------------------------------------------
# collator
# ------------------------------------------------------------------------------------------------------------------
def test_chat_collator_supervises_only_the_answer(processor):
    from ocr_mllm.training import OcrMllmDataCollator

    collator = OcrMllmDataCollator(processor, template="chat")
    examples = [record("hello world", render_word("hello")), record("text only")]
    batch = collator(examples)
    assert batch["pixel_values"].shape[0] == 1 and batch["num_high_res_views"].tolist() == [1]
    assert _decode_supervised(processor, batch["input_ids"][0], batch["labels"][0]) == "hello world<|im_end|>"
    assert _decode_supervised(processor, batch["input_ids"][1], batch["labels"][1]) == "text only<|im_end|>"
    # image tokens, system/user turns and padding are never supervised
    assert not ((batch["input_ids"] == processor.image_token_id) & (batch["labels"] != -100)).any()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    # the prompt part is exactly what the processor produces at inference
    prompt = processor.apply_chat_template(examples[0]["messages"][:1], add_generation_prompt=True)
    reference = processor(images=[render_word("hello")], text=[prompt])["input_ids"][0]
    assert batch["input_ids"][0, : len(reference)].tolist() == reference
    assert batch["labels"][0, len(reference)] != -100  # the first answer token right after the prompt


def test_collator_expands_images_through_the_processor_hook(processor, monkeypatch):
    """One expansion: the collator's image tokens come from ``processor.replace_image_token`` (changing the hook
    changes the training ids too)."""
    from ocr_mllm.training import OcrMllmDataCollator

    example = record("hello", render_word("hello"))
    n = processor.num_image_tokens(1)
    before = OcrMllmDataCollator(processor, template="chat")([example])["input_ids"][0]
    assert int((before == processor.image_token_id).sum()) == n
    monkeypatch.setattr(
        type(processor), "replace_image_token", lambda self, inputs, image_idx, **kw: self.image_token * (n + 3)
    )
    after = OcrMllmDataCollator(processor, template="chat")([example])["input_ids"][0]
    assert int((after == processor.image_token_id).sum()) == n + 3


def test_collator_string_contents_multi_turn_and_llava_style(processor):
    from ocr_mllm.training import OcrMllmDataCollator

    collator = OcrMllmDataCollator(processor, template="chat")
    example = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "<image>\nWhat is written?"},
            {"role": "assistant", "content": "cat"},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": "cat again"},
        ],
        "images": [render_word("cat")],
    }
    batch = collator([example])
    assert (
        _decode_supervised(processor, batch["input_ids"][0], batch["labels"][0]) == "cat<|im_end|>cat again<|im_end|>"
    )
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == processor.num_image_tokens(1)
    # string content without placeholder: the image goes before the first user text (TRL's rule)
    plain = {
        "messages": [{"role": "user", "content": "Read."}, {"role": "assistant", "content": "x"}],
        "images": [render_word("x")],
    }
    assert int((collator([plain])["input_ids"] == processor.image_token_id).sum()) == processor.num_image_tokens(1)


def test_plain_template_is_image_caption_newline(processor):
    from ocr_mllm.training import OcrMllmDataCollator

    batch = OcrMllmDataCollator(processor, template="plain")([record("red box", render_word("red box"))])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    n_image = processor.num_image_tokens(1)
    assert (ids[:n_image] == processor.image_token_id).all() and (labels[:n_image] == -100).all()
    assert processor.tokenizer.decode(ids[n_image:]) == "red box\n"  # no system turn, no chat markup
    assert _decode_supervised(processor, ids, labels) == "red box\n"


def test_max_length_never_cuts_an_image(processor):
    from ocr_mllm.training import OcrMllmDataCollator, filter_long_records

    example = record("a fairly long answer that will not fit entirely", render_word("x"))
    full = OcrMllmDataCollator(processor, template="chat")([example])["input_ids"].shape[1]
    image_end = (
        int((OcrMllmDataCollator(processor)([example])["input_ids"][0] == processor.image_token_id).nonzero().max())
        + 1
    )
    prompt_len = len(
        processor(
            images=[render_word("x")],
            text=[processor.apply_chat_template(example["messages"][:1], add_generation_prompt=True)],
        )["input_ids"][0]
    )
    # enough room for the prompt and part of the answer: only the text tail is cut
    cut = OcrMllmDataCollator(processor, template="chat", max_length=prompt_len + 3)([example])
    assert cut["input_ids"].shape[1] == prompt_len + 3 < full
    assert int((cut["input_ids"] == processor.image_token_id).sum()) == processor.num_image_tokens(1)
    assert int((cut["labels"] != -100).sum()) == 3
    # not even the prompt fits: the record is skipped with a reason, never cut through the image
    tight = OcrMllmDataCollator(processor, template="chat", max_length=image_end - 1)
    with pytest.raises(RuntimeError, match="skipped"):
        tight([example])
    assert dict(tight.skipped) == {"too_long": 1}
    assert filter_long_records([example], tight) == []
    assert filter_long_records([example], OcrMllmDataCollator(processor, max_length=prompt_len + 1)) == [example]
    prompt_only = OcrMllmDataCollator(processor, template="chat", max_length=prompt_len)
    assert filter_long_records([example], prompt_only) == []


def test_trl_default_collator_accepts_our_processor(processor):
    """TRL's own VLM collator calls our processor with its keyword arguments (padding_side, truncation, ...)."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=None)
    batch = collator([record("cat", render_word("cat")), record("dog", render_word("dog"))])
    assert batch["pixel_values"].shape[0] == 2 and batch["input_ids"].shape == batch["labels"].shape


def test_trl_fused_lm_head_loss_equals_the_model_loss(tiny_model_dir, processor):
    """TRL 1.16 always patches forward with its chunked LM head (loss_type nll): it must give our model's own loss."""
    from transformers import AutoModelForImageTextToText
    from trl.trainer.utils import add_fused_lm_head

    from ocr_mllm.training import OcrMllmDataCollator

    batch = OcrMllmDataCollator(processor)([record("cat", render_word("cat")), record("no image here")])
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, trust_remote_code=True).train()
    with torch.no_grad():
        reference = model(**batch).loss
        add_fused_lm_head(model, outputs=("log_probs",))
        fused = model(**batch, fused_lm_head=True)
    assert torch.allclose(-fused.log_probs.sum() / fused.label_mask.sum(), reference, atol=1e-5)
    assert torch.allclose(fused.loss, reference, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# freezing and learning
# ------------------------------------------------------------------------------------------------------------------
def test_stage1_changes_only_resampler_and_projector(tiny_model_dir, tmp_path):
    result = _run("pretrain", tiny_model_dir, tmp_path / "s1", dataset(WORDS[:4]), max_steps=2, learning_rate=1e-2)
    before, after = (
        load_file(Path(tiny_model_dir) / "model.safetensors"),
        load_file(tmp_path / "s1" / "model.safetensors"),
    )
    assert before.keys() == after.keys()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    trainable = ("model.resampler.", "model.high_res_projector.")
    assert changed and all(key.startswith(trainable) for key in changed), sorted(changed)[:5]
    assert "model.resampler.pos_embed" not in changed  # a fixed buffer
    assert any(key.startswith("model.resampler.") for key in changed)
    assert any(key.startswith("model.high_res_projector.") for key in changed)
    summary = result.parameter_summary
    assert summary["language_model"]["trainable"] == 0 and summary["vision_tower"]["trainable"] == 0
    assert summary["high_res_downsampler"]["trainable"] == 0
    assert (
        summary["all"]["trainable"] == summary["resampler"]["trainable"] + summary["high_res_projector"]["trainable"]
    )
    # the saved folder is complete and loads in a fresh process with trust_remote_code
    code = (
        "import sys; from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"m = AutoModelForImageTextToText.from_pretrained({str(tmp_path / 's1')!r}, trust_remote_code=True)\n"
        f"p = AutoProcessor.from_pretrained({str(tmp_path / 's1')!r}, trust_remote_code=True)\n"
        "assert type(m).__module__.startswith('transformers_modules'), type(m).__module__\n"
        "print(m.generation_config.eos_token_id, p.image_token)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "<image>" in out.stdout


def test_downsampler_option_and_encoder_unfreezing(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    from ocr_mllm.training.freezing import apply_freeze_plan, parameter_summary, stage_plan

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, trust_remote_code=True)
    apply_freeze_plan(model, stage_plan("pretrain", train_downsampler=True))
    summary = parameter_summary(model)
    assert summary["high_res_downsampler"]["trainable"] == summary["high_res_downsampler"]["total"] > 0
    apply_freeze_plan(model, stage_plan("sft", unfreeze_high_res_vision_tower=True))
    summary = parameter_summary(model)
    assert summary["language_model"]["trainable"] == summary["language_model"]["total"]
    assert summary["high_res_vision_tower"]["trainable"] > 0 and summary["vision_tower"]["trainable"] == 0
    assert summary["high_res_downsampler"]["trainable"] == 0


def test_parameter_summary_counts_zero3_partitioned_parameters():
    from ocr_mllm.training.freezing import parameter_summary

    model = torch.nn.Module()
    model.lm_head = torch.nn.Linear(4, 4, bias=False)
    param = model.lm_head.weight
    param.data = torch.empty(0)  # what ZeRO-3 leaves on a rank
    param.ds_numel = 16
    assert parameter_summary(model)["lm_head"] == {"total": 16, "trainable": 16}


@pytest.fixture(scope="module")
def live_tiny_dir(tmp_path_factory, processor):
    """The tiny preset with a SAM tower initialised for training from scratch (SamVisionConfig's default
    initializer_range of 1e-10 leaves a random SAM silent)."""
    from ocr_mllm.building import PRESETS, build_tiny_folder

    high_res = {**PRESETS["tiny"]["high_res_vision_config"], "initializer_range": 0.02}
    return build_tiny_folder(
        tmp_path_factory.mktemp("live") / "model",
        seed=0,
        tokenizer=processor.tokenizer,
        high_res_vision_config=high_res,
    )


def test_sft_loss_goes_down_and_overfits_eight_images(live_tiny_dir, tmp_path):
    """Full fine-tuning of a tiny model on 8 word images: the loss falls and greedy decoding reads them all back."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    train = dataset(WORDS)
    # random towers stay frozen (trained from scratch at this learning rate their features collapse to a constant);
    # the Resampler, projector, downsampler and LLM learn to read their random features
    result = _run(
        "sft",
        live_tiny_dir,
        tmp_path / "s2",
        train,
        max_steps=400,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        lr_scheduler_type="cosine",
        warmup_steps=5,
        logging_steps=10,
        model_overrides={"train_downsampler": True},
    )
    losses = _losses(result)
    assert losses[-1] < 0.1 * losses[0], losses
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "s2", trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "s2", trust_remote_code=True)
    prompt = processor.apply_chat_template(record("x", "i")["messages"][:1], add_generation_prompt=True)
    inputs = processor(
        images=[render_word(w) for w in WORDS],
        text=[prompt] * len(WORDS),
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    read = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert [r.strip() for r in read] == WORDS


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tiny_model_dir, tmp_path):
    from ocr_mllm.training.callbacks import StopAtStepCallback

    train = dataset(WORDS + WORDS[::-1])
    common = dict(
        max_steps=6,
        learning_rate=5e-3,
        per_device_train_batch_size=2,
        lr_scheduler_type="cosine",
        save_strategy="steps",
        save_steps=3,
    )
    straight = _losses(_run("sft", tiny_model_dir, tmp_path / "straight", train, **common))
    first = _losses(
        _run("sft", tiny_model_dir, tmp_path / "resumed", train, callbacks=[StopAtStepCallback(3)], **common)
    )
    assert (tmp_path / "resumed" / "checkpoint-3").is_dir() and len(first) == 3
    second = _losses(
        _run(
            "sft",
            tiny_model_dir,
            tmp_path / "resumed",
            train,
            resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"),
            **common,
        )
    )
    assert len(straight) == 6 and len(second) == 6  # the resumed history starts with the checkpoint's 3 entries
    assert second[:3] == first
    assert second == pytest.approx(straight, rel=1e-5, abs=1e-6)


def test_lora_save_merge_load_matches_adapter_logits(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _run(
        "sft",
        tiny_model_dir,
        tmp_path / "lora",
        dataset(WORDS[:4]),
        max_steps=3,
        learning_rate=2e-2,
        model_overrides={"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
    )
    adapter = tmp_path / "lora"
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "processor_config.json").exists()
    adapter_keys = load_file(adapter / "adapter_model.safetensors").keys()
    assert any("resampler" in key for key in adapter_keys) and any("high_res_projector" in key for key in adapter_keys)
    assert any("lora_A" in key for key in adapter_keys)

    merged_dir = tmp_path / "merged"
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "merge_lora.py"),
            "--adapter",
            str(adapter),
            "--output",
            str(merged_dir),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    processor = AutoProcessor.from_pretrained(merged_dir, trust_remote_code=True)
    prompt = processor.apply_chat_template(record("x", "i")["messages"][:1], add_generation_prompt=True)
    inputs = processor(images=[render_word("cat")], text=[prompt + "cat"], return_tensors="pt")

    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, trust_remote_code=True)
    with torch.no_grad():
        base_logits = base(**inputs).logits
        peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
        adapter_logits = peft_model(**inputs).logits
        merged = AutoModelForImageTextToText.from_pretrained(merged_dir, trust_remote_code=True).eval()
        merged_logits = merged(**inputs).logits
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-4)  # training did change something
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-4)
    # the merged folder keeps the trained projector and Resampler (the original's merge dropped them)
    trained = load_file(merged_dir / "model.safetensors")
    original = load_file(Path(tiny_model_dir) / "model.safetensors")
    for key in ("model.high_res_projector.layers.0.bias", "model.resampler.query"):
        assert not torch.equal(trained[key], original[key]), key
    assert not any("lora" in key for key in trained)


# ------------------------------------------------------------------------------------------------------------------
# arguments, errors, hub
# ------------------------------------------------------------------------------------------------------------------
def test_yaml_config_and_stage_defaults(tmp_path):
    from ocr_mllm.training.pipeline import parse_stage_args

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model_name_or_path: some/model\ndataset_name: [a.jsonl, b.jsonl]\nper_device_train_batch_size: 3\n"
        "use_peft: true\nlora_r: 8\n"
    )
    model_args, data_args, config = parse_stage_args(
        "sft", ["--config", str(recipe), "--output_dir", str(tmp_path), "--lora_r", "16"]
    )
    assert model_args.model_name_or_path == "some/model" and model_args.use_peft and model_args.lora_r == 16
    assert data_args.dataset_name == ["a.jsonl", "b.jsonl"] and config.per_device_train_batch_size == 3
    assert config.learning_rate == 2e-5 and config.max_length == 2048 and config.lr_scheduler_type == "cosine"
    assert config.remove_unused_columns is False and config.dataset_kwargs["skip_prepare_dataset"] is True
    assert "tensorboard" in config.report_to and config.warmup_ratio == 0.03 and config.weight_decay == 0.0
    _, _, pretrain = parse_stage_args("pretrain", ["--output_dir", str(tmp_path)])
    assert pretrain.learning_rate == 1e-3 and pretrain.max_length == 1024


def test_trl_dataset_argument_names(tmp_path):
    """A TRL user's --dataset_name / --dataset_config / --dataset_train_split / --dataset_test_split work; --dataset
    stays as an alias of --dataset_name."""
    from ocr_mllm.training.pipeline import parse_stage_args

    _, data_args, _ = parse_stage_args(
        "sft",
        [
            "--dataset_name",
            "org/lines",
            "--dataset_config",
            "zh",
            "--dataset_train_split",
            "validation",
            "--eval_dataset",
            "held.jsonl",
            "--dataset_test_split",
            "test",
            "--output_dir",
            str(tmp_path),
        ],
    )
    assert data_args.dataset_name == ["org/lines"] and data_args.dataset_config == "zh"
    assert data_args.dataset_train_split == "validation" and data_args.dataset_test_split == "test"
    _, data_args, _ = parse_stage_args("sft", ["--dataset", "a.jsonl", "b.jsonl", "--output_dir", str(tmp_path)])
    assert data_args.dataset_name == ["a.jsonl", "b.jsonl"]


def test_qlora_without_gpu_is_a_clear_error(tiny_model_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(RuntimeError, match="CUDA"):
        _run(
            "sft",
            tiny_model_dir,
            tmp_path / "q",
            dataset(WORDS[:2]),
            max_steps=1,
            model_overrides={"use_peft": True, "load_in_4bit": True},
        )
    with pytest.raises(ValueError, match="use_peft"):
        _run(
            "sft",
            tiny_model_dir,
            tmp_path / "q",
            dataset(WORDS[:2]),
            max_steps=1,
            model_overrides={"load_in_4bit": True},
        )


def test_push_to_hub_uploads_exactly_the_final_folder(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, allow_patterns=None, commit_message=None):
            from fnmatch import fnmatch

            calls["folder"] = folder_path
            calls["files"] = sorted(
                p.name
                for p in Path(folder_path).iterdir()
                if p.is_file() and any(fnmatch(p.name, pattern) for pattern in allow_patterns)
            )
            return "https://hub/commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    _run(
        "pretrain",
        tiny_model_dir,
        tmp_path / "pushed",
        dataset(WORDS[:2]),
        max_steps=1,
        push_to_hub=True,
        hub_model_id="me/ocr-mllm-test",
        save_strategy="steps",
        save_steps=1,
    )
    assert calls["repo"] == "me/ocr-mllm-test" and calls["folder"] == str(tmp_path / "pushed")
    for required in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "modeling_ocr_mllm.py",
        "configuration_ocr_mllm.py",
        "processing_ocr_mllm.py",
        "tokenizer.json",
        "processor_config.json",
    ):
        assert required in calls["files"], calls["files"]
    assert not any(name.startswith(("checkpoint", "training_args")) for name in calls["files"])


def test_train_throughput_bench_smoke(tmp_path):
    from bench.train_throughput import main

    payload = main(["--quick", "--output-dir", str(tmp_path)])
    result = payload["results"][0]
    assert result["tokens_per_second"] > 0 and 0 < result["mfu"] < 1.5 and result["flops_per_step"] > 0
    assert (tmp_path / "train_throughput.json").exists() and (tmp_path / "train_throughput.png").exists()


def test_time_budget_callback_schedules_over_time_stops_and_reports_progress(monkeypatch):
    from transformers import TrainerControl, TrainerState

    from ocr_mllm.training import callbacks

    clock = [100.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    budget = callbacks.TimeBudgetCallback(60, time_schedule=True, warmup_steps=2)
    model = torch.nn.Linear(2, 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=1.0), lambda step: 1.0)
    state, control = TrainerState(), TrainerControl()
    budget.on_train_begin(None, state, control, lr_scheduler=scheduler)
    assert budget.factor(0) == pytest.approx(0.5)  # warm-up: step 1 of 2
    clock[0] = 130.0  # half the budget: cosine at its midpoint
    assert budget.factor(10) == pytest.approx(0.5)
    logs = {"loss": 1.0}
    budget.on_log(None, state, control, logs=logs)
    assert logs["time"] == "0:30 / 1:00"
    assert not budget.on_step_end(None, state, control).should_training_stop
    clock[0] = 161.0
    assert budget.factor(10) == pytest.approx(0.0)
    assert budget.on_step_end(None, state, control).should_training_stop
