"""The line-reader options (conv stem, line view, [2, 1] downsample strides, CTC head) do what they claim; the
original architecture is unchanged without them; batched answers equal one-by-one answers on a model that reads,
and the same comparison fails when the images are rotated across the rows."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from configuration_ocr_mllm import OcrMllmConfig
from ocr_mllm.building import build_config
from tests._reading_model import conversation


def tiny_line_config(**overrides) -> OcrMllmConfig:
    return build_config("tiny-line", vocab_size=300, image_token_id=3, ctc_ignore_token_ids=[2], **overrides)


def test_line_geometry_gives_one_row_of_quarter_width_columns():
    config = tiny_line_config()
    assert config.high_res_view_size == (32, 64)
    assert config.high_res_grid_shape == (1, 16)  # 32 × 64 px → stem (8, 4) → 4 × 16 → [2,1] ×2 → 1 × 16
    assert config.num_high_res_tokens_per_view == 16 and config.image_seq_length == 16 + 4


def test_default_architecture_is_unchanged():
    config = OcrMllmConfig()
    assert config.high_res_patch_embed == "linear" and config.ctc_loss_weight == 0
    assert config.high_res_grid_size == 16 and config.num_high_res_tokens_per_view == 256
    assert config.image_seq_length == 512


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"high_res_patch_embed": "linear", "high_res_stem_strides": None}, "needs high_res_patch_embed='conv'"),
        ({"high_res_downsample_strides": [[2, 1]]}, r"one \(height, width\) stride"),
        ({"high_res_downsample_strides": [[2, 1], [1, 1]]}, "reads one row"),
    ],
)
def test_invalid_line_settings_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_line_config(**overrides)


def test_forward_adds_the_ctc_loss_and_trains_the_stem():
    from modeling_ocr_mllm import OcrMllmForConditionalGeneration

    torch.manual_seed(0)
    config = tiny_line_config()
    model = OcrMllmForConditionalGeneration(config)
    stem = model.model.high_res_vision_tower.patch_embed
    assert type(stem).__name__ == "OcrMllmConvStem"
    assert model.ctc_head.out_features == config.text_config.vocab_size + 1  # + blank
    ids = torch.full((2, config.image_seq_length + 8), 7)
    ids[:, 1 : 1 + config.image_seq_length] = 3
    labels = torch.full_like(ids, -100)
    labels[:, -5:] = torch.tensor([10, 11, 12, 2, 2])  # 3 characters then the ignored end tokens
    pixels = torch.randn(2, 3, 28, 28)
    high = torch.randn(2, 3, 32, 64)
    out = model(input_ids=ids, labels=labels, pixel_values=pixels, high_res_pixel_values=high)
    assert out.ctc_loss is not None and torch.isfinite(out.ctc_loss) and out.ctc_loss > 0
    # training computes the LM head on the supervised positions only: the same loss as transformers' on full logits
    assert out.logits is None
    hidden = model.model(input_ids=ids, pixel_values=pixels, high_res_pixel_values=high).last_hidden_state
    vocab = config.text_config.vocab_size
    lm_only = model.loss_function(logits=model.lm_head(hidden), labels=labels, vocab_size=vocab)
    torch.testing.assert_close(out.loss, lm_only + out.ctc_loss)
    summed = model(input_ids=ids, labels=labels, pixel_values=pixels, high_res_pixel_values=high, num_items_in_batch=4)
    torch.testing.assert_close(
        summed.loss - summed.ctc_loss,
        model.loss_function(logits=model.lm_head(hidden), labels=labels, vocab_size=vocab, num_items_in_batch=4),
    )
    out.loss.backward()
    assert stem.layers[0].weight.grad.abs().sum() > 0
    readings = model.ctc_read(pixels, high)
    assert len(readings) == 2 and all(isinstance(token, int) for row in readings for token in row)


def test_line_view_keeps_the_aspect_ratio_left_aligned():
    from image_processing_ocr_mllm import OcrMllmImageProcessor

    processor = OcrMllmImageProcessor(size=28, high_res_size=64, high_res_line_height=32)
    image = Image.fromarray(np.zeros((10, 10, 3), np.uint8))  # black square → 32 × 32 on a 32 × 64 line
    view = processor([image], return_tensors="pt")["high_res_pixel_values"][0]
    assert tuple(view.shape) == (3, 32, 64)
    black = (0 - np.array(processor.high_res_image_mean)) / np.array(processor.high_res_image_std)
    torch.testing.assert_close(view[:, :, : 64 // 2 - 1].mean((1, 2)), torch.tensor(black, dtype=torch.float32))
    torch.testing.assert_close(
        view[:, :, 64 // 2 + 1 :], torch.zeros(3, 32, 64 // 2 - 1), atol=0.02, rtol=0
    )  # the mean colour (to a grey level)
    assert processor.get_number_of_high_res_views(2000, 100, do_tiling=True) == 1  # a line is never tiled


def test_reading_model_folder_loads_in_a_fresh_process_and_reads(reading_model):
    folder, images, words = reading_model
    script = (
        "import sys, torch; from transformers import AutoModelForImageTextToText, AutoProcessor; "
        "m = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True).eval(); "
        "p = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True); "
        "msgs = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Read all the text in the image.'}]}]; "
        "x = p(images=[sys.argv[2]], text=[p.apply_chat_template(msgs, add_generation_prompt=True)], return_tensors='pt'); "
        "out = m.generate(**x, max_new_tokens=8); "
        "ids = m.ctc_read(x['pixel_values'], x['high_res_pixel_values']); "
        "print(p.batch_decode(out[:, x['input_ids'].shape[1]:], skip_special_tokens=True)[0] + '|' + repr(ids[0]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(images[1])], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    generated, ctc_ids = result.stdout.strip().splitlines()[-1].split("|")
    assert generated == words[1]
    assert ctc_ids.startswith("[")  # the CTC head's own reading runs from the saved folder too


def _answers(model, processor, images):
    from ocr_mllm.inference import generate_batch

    with torch.inference_mode():
        return generate_batch(
            model, processor, [conversation()] * len(images), [[i] for i in images], max_new_tokens=8
        )


def test_batch_equals_one_by_one_and_sees_swapped_images(reading_model):
    from ocr_mllm.inference import load_model_and_processor

    folder, images, words = reading_model
    model, processor = load_model_and_processor(str(folder), device="cpu", dtype="float32")
    batched = _answers(model, processor, images)
    one_by_one = [_answers(model, processor, [image])[0] for image in images]
    assert batched == one_by_one == words
    # the comparison has teeth: with the images rotated across the rows, each row's answer follows its new image
    rotated = images[1:] + images[:1]
    assert _answers(model, processor, rotated) == words[1:] + words[:1]
    assert _answers(model, processor, rotated) != one_by_one


def test_mixed_text_only_rows_keep_image_rows_right(reading_model):
    from ocr_mllm.inference import generate_batch, load_model_and_processor

    folder, images, words = reading_model
    model, processor = load_model_and_processor(str(folder), device="cpu", dtype="float32")
    text_only = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    with torch.inference_mode():
        answers = generate_batch(
            model,
            processor,
            [conversation(), text_only, conversation()],
            [[images[2]], [], [images[5]]],
            max_new_tokens=8,
        )
    assert answers[0] == words[2] and answers[2] == words[5]
