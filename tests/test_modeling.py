"""Model behaviour on a tiny random model: training step, generation (cache, batching), merging and its errors."""

import pytest
import torch
from PIL import Image, ImageDraw

from configuration_ocr_mllm import OcrMllmConfig
from modeling_ocr_mllm import OcrMllmForConditionalGeneration, interpolate_grid_embedding, sincos_2d_position_embedding


def _image(text: str, size=(200, 64), color="black") -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((8, 20), text, fill=color)
    return image


def _prompt(processor, question: str, with_image: bool = True) -> str:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def _greedy(model, inputs, n=6, **kwargs):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False, **kwargs)
    return out[:, inputs["input_ids"].shape[1] :]


@pytest.fixture(scope="module")
def model_processor(tiny_model_and_processor):
    return tiny_model_and_processor


def test_config_derives_token_counts():
    config = OcrMllmConfig()
    assert config.image_seq_length == 512  # 256 high-res (16x16 after two stride-2 convs) + 256 queries
    assert config.num_image_tokens(3) == 3 * 256 + 256
    assert config.resampler_heads == 40
    with pytest.raises(ValueError, match="square"):
        OcrMllmConfig(resampler_num_queries=250)
    with pytest.raises(ValueError, match="high_res_projector_type"):
        OcrMllmConfig(high_res_projector_type="mlp2x_relu")


def test_sincos_and_interpolation():
    table = sincos_2d_position_embedding(8, 4)
    assert table.shape == (16, 8)
    # row 0 / col 0 encode position 0: sin = 0, cos = 1 in both halves
    assert torch.allclose(table[0], torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.float32))
    # the first half encodes the column (changes along a row), the second the row
    assert not torch.equal(table[1, :4], table[0, :4]) and torch.equal(table[1, 4:], table[0, 4:])
    assert interpolate_grid_embedding(table, 16) is table
    assert interpolate_grid_embedding(table, 64).shape == (64, 8)
    with pytest.raises(ValueError):
        interpolate_grid_embedding(table, 15)


def test_forward_backward_and_loss_normalisation(model_processor):
    model, processor = model_processor
    model.train()
    try:
        inputs = processor(images=[_image("abc")], text=[_prompt(processor, "Read.") + "abc"], return_tensors="pt")
        labels = inputs["input_ids"].clone()
        labels[labels == processor.image_token_id] = -100
        out = model(**inputs, labels=labels)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        for stage in (
            "model.vision_tower.",
            "model.resampler.query",
            "model.high_res_vision_tower.",
            "model.high_res_downsampler.",
            "model.high_res_projector.",
            "model.language_model.",
            "lm_head.",
        ):
            assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(stage)), stage
        assert "model.resampler.pos_embed" not in grads  # a fixed sin-cos buffer, not a parameter
        # a given num_items_in_batch replaces the mean over label tokens by a sum / num_items_in_batch
        n_labels = int((labels[:, 1:] != -100).sum())
        summed = model(**inputs, labels=labels, num_items_in_batch=torch.tensor(1)).loss
        assert torch.allclose(summed, out.loss * n_labels, rtol=1e-4)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_cached_and_uncached_greedy_decoding_agree(model_processor):
    model, processor = model_processor
    inputs = processor(
        images=[_image("hello 123")], text=[_prompt(processor, "Read all the text.")], return_tensors="pt"
    )
    cached = _greedy(model, inputs, n=8, use_cache=True)
    uncached = _greedy(model, inputs, n=8, use_cache=False)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_matches_one_by_one(model_processor):
    model, processor = model_processor
    images = [_image("a"), _image("long text line 42", size=(300, 80)), _image("中文", color="blue")]
    prompts = [_prompt(processor, q) for q in ("Read.", "What is written in this image, exactly?", "图中有哪些文字？")]
    singles = [
        _greedy(model, processor(images=[im], text=[p], return_tensors="pt"))[0] for im, p in zip(images, prompts)
    ]
    batch = processor(images=images, text=prompts, return_tensors="pt", padding=True, padding_side="left")
    assert batch["attention_mask"][:, 0].tolist().count(0) >= 1  # really padded
    batched = _greedy(model, batch)
    for single, row in zip(singles, batched):
        assert torch.equal(single, row)


def test_text_only_and_mixed_batches(model_processor):
    model, processor = model_processor
    text_only = processor(text=[_prompt(processor, "Hello?", with_image=False)], return_tensors="pt")
    assert "pixel_values" not in text_only
    alone = _greedy(model, text_only)
    mixed = processor(
        images=[[], [_image("x")]],
        text=[_prompt(processor, "Hello?", with_image=False), _prompt(processor, "Read.")],
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    assert mixed["pixel_values"].shape[0] == 1
    out = _greedy(model, mixed)
    assert torch.equal(out[0], alone[0])


def test_placeholder_feature_mismatch_raises(model_processor):
    model, processor = model_processor
    inputs = processor(images=[_image("x")], text=[_prompt(processor, "Read.")], return_tensors="pt")
    ids = inputs["input_ids"]
    image_positions = (ids[0] == processor.image_token_id).nonzero().flatten()
    truncated = ids.clone()
    truncated[0, image_positions[-1]] = processor.tokenizer.pad_token_id  # one placeholder fewer than features
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(
            input_ids=truncated,
            pixel_values=inputs["pixel_values"],
            high_res_pixel_values=inputs["high_res_pixel_values"],
        )
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="together"):
        model(input_ids=ids, pixel_values=inputs["pixel_values"])
    two_images = torch.cat([inputs["pixel_values"]] * 2)
    with pytest.raises(ValueError, match="num_high_res_views"):
        model(input_ids=ids, pixel_values=two_images, high_res_pixel_values=inputs["high_res_pixel_values"])


def test_inputs_embeds_path_matches_input_ids(model_processor):
    model, processor = model_processor
    inputs = processor(images=[_image("embed")], text=[_prompt(processor, "Read.")], return_tensors="pt")
    with torch.no_grad():
        by_ids = model(**inputs).logits
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        by_embeds = model(
            inputs_embeds=embeds,
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            high_res_pixel_values=inputs["high_res_pixel_values"],
            num_high_res_views=inputs["num_high_res_views"],
        ).logits
    assert torch.allclose(by_ids, by_embeds, atol=1e-5)


def test_logits_to_keep_and_image_features_order(model_processor):
    model, processor = model_processor
    inputs = processor(images=[_image("k")], text=[_prompt(processor, "Read.")], return_tensors="pt")
    with torch.no_grad():
        full = model(**inputs).logits
        last = model(**inputs, logits_to_keep=1).logits
        features = model.get_image_features(inputs["pixel_values"], inputs["high_res_pixel_values"]).pooler_output[0]
        high = model.model.get_high_res_image_features(inputs["high_res_pixel_values"])[0]
        low = model.model.get_low_res_image_features(inputs["pixel_values"])[0]
    assert last.shape[1] == 1 and torch.allclose(last[:, -1], full[:, -1], atol=1e-5)
    assert torch.equal(features[: high.shape[0]], high) and torch.equal(features[high.shape[0] :], low)


def test_attention_implementations_agree(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    inputs = processor(images=[_image("attn")], text=[_prompt(processor, "Read.")], return_tensors="pt")
    logits = {}
    for impl in ("eager", "sdpa"):
        model = AutoModelForImageTextToText.from_pretrained(
            tiny_model_dir, trust_remote_code=True, attn_implementation=impl
        )
        assert model.config.text_config._attn_implementation == impl
        assert model.config.vision_config._attn_implementation == impl
        with torch.no_grad():
            logits[impl] = model(**inputs).logits
    assert torch.allclose(logits["eager"], logits["sdpa"], atol=1e-4)


def test_gradient_checkpointing_gives_same_gradients(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir, trust_remote_code=True)
    inputs = processor(images=[_image("gc")], text=[_prompt(processor, "Read.") + "gc"], return_tensors="pt")
    grads = []
    for checkpointing in (False, True):
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, trust_remote_code=True).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert model.model.vision_tower.layers[0].gradient_checkpointing  # our ViT layers checkpoint too
            assert model.model.high_res_vision_tower.layers[0].gradient_checkpointing
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads.append(model.model.vision_tower.patch_embedding.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_text_only_training_step_touches_every_tower(model_processor):
    """A text-only batch in training still runs both towers (×0), so ZeRO-3 / DDP ranks stay in step."""
    model, processor = model_processor
    model.train()
    try:
        inputs = processor(text=[_prompt(processor, "Hi", with_image=False) + "hello"], return_tensors="pt")
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        for name, param in model.named_parameters():
            if param.requires_grad:
                assert param.grad is not None, name
        assert model.model.high_res_vision_tower.patch_embed.projection.weight.grad.abs().sum() == 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_linear_projector_and_clip_tower():
    config = OcrMllmConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        high_res_vision_config={
            "model_type": "sam_vision_model",
            "hidden_size": 16,
            "output_channels": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "mlp_dim": 32,
            "image_size": 64,
            "patch_size": 16,
            "window_size": 2,
            "global_attn_indexes": [0],
        },
        high_res_downsample_channels=[8, 16],
        high_res_projector_type="linear",
        low_res_feature_select_strategy="default",
        resampler_num_queries=4,
        resampler_num_heads=2,
        image_token_id=63,
    )
    model = OcrMllmForConditionalGeneration(config).eval()
    assert [name for name, _ in model.model.high_res_projector.layers.named_children()] == ["0"]
    features = model.get_image_features(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in features.pooler_output] == [
        (1 + 4, 32)
    ] * 2  # 64/16=4 → 1x1 after two convs, + 4 queries


def test_high_res_tower_built_from_scratch_is_not_dead():
    """SamVisionConfig's own initializer_range (1e-10) would leave a from-scratch SAM tower without signal."""
    from ocr_mllm.building import build_config

    model = OcrMllmForConditionalGeneration(build_config("tiny", vocab_size=64, image_token_id=63))
    qkv = model.model.high_res_vision_tower.layers[0].attn.qkv.weight
    assert 0.01 < qkv.std().item() < 0.03
    features = model.model.get_high_res_image_features(torch.randn(1, 3, 128, 128))
    assert features.std().item() > 1e-5  # with SAM's 1e-10 init it is ~1e-20


def test_standardized_image_features(tmp_path):
    """standardize_image_features: batch statistics in training (every channel zero mean, unit variance over the batch's
    image tokens), running statistics in eval, untouched by the blank image of a text-only step, saved with the
    weights; off by default (no extra module or state-dict key, so original checkpoints convert unchanged)."""
    from transformers import AutoModelForImageTextToText

    from ocr_mllm.building import build_config, build_tiny_folder

    default = OcrMllmForConditionalGeneration(build_config("tiny", 64, 63))
    assert default.model.image_feature_norm is None
    assert not any("image_feature_norm" in key for key in default.state_dict())

    folder = build_tiny_folder(tmp_path / "model", seed=0, standardize_image_features=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    norm = model.model.image_feature_norm
    torch.manual_seed(0)
    pixels, high_res = torch.randn(3, 3, 56, 56), torch.randn(3, 3, 128, 128)
    model.train()
    features = model.get_image_features(pixels, high_res).last_hidden_state  # (3 × tokens, D)
    assert torch.allclose(features.mean(0), torch.zeros(features.shape[1]), atol=1e-4)
    assert torch.allclose(features.var(0, unbiased=False), torch.ones(features.shape[1]), atol=1e-2)
    assert norm.num_batches_tracked.item() == 1
    before = norm.running_mean.clone()
    assert not torch.equal(before, torch.zeros_like(before))

    # a text-only training step runs the towers on a blank image (×0) without moving the statistics
    ids = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert norm.num_batches_tracked.item() == 1 and torch.equal(norm.running_mean, before)

    model.eval()
    raw_low = model.model.get_low_res_image_features(pixels[:1])
    raw_high = model.model.get_high_res_image_features(high_res[:1])
    expected = (torch.cat([raw_high.flatten(0, 1), raw_low.flatten(0, 1)]) - norm.running_mean) / torch.sqrt(
        norm.running_var + norm.eps
    )
    with torch.no_grad():
        got = model.get_image_features(pixels[:1], high_res[:1]).pooler_output[0]
    assert torch.allclose(got, expected, atol=1e-5)

    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "saved", trust_remote_code=True).eval()
    assert torch.equal(reloaded.model.image_feature_norm.running_mean, norm.running_mean)
    with torch.no_grad():
        assert torch.allclose(reloaded.get_image_features(pixels[:1], high_res[:1]).pooler_output[0], got)
    # a model cast to bf16 (statistics included) still standardises, close to float32
    reloaded.to(torch.bfloat16)
    with torch.no_grad():
        half = reloaded.get_image_features(pixels[:1].bfloat16(), high_res[:1].bfloat16()).pooler_output[0]
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), got, atol=0.1, rtol=0.05)
