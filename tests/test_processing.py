"""Image processor (both views, tiling, robust loading) and processor (chat template, expansion, TRL kwargs)."""

import numpy as np
import pytest
import torch
from PIL import Image

from image_processing_ocr_mllm import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    OcrMllmImageProcessor,
    load_image,
    select_tile_grid,
)


@pytest.fixture(scope="module")
def processor(tiny_model_and_processor):
    return tiny_model_and_processor[1]


@pytest.fixture(scope="module")
def model(tiny_model_and_processor):
    return tiny_model_and_processor[0]


def _user(text, images=1):
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]


def test_both_views_shapes_dtypes_and_normalisation():
    processor = OcrMllmImageProcessor(size=448, high_res_size=1024)
    colour = (200, 100, 50)
    out = processor(Image.new("RGB", (640, 480), colour), return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 448, 448) and out["pixel_values"].dtype == torch.float32
    assert out["high_res_pixel_values"].shape == (1, 3, 1024, 1024)
    assert out["num_high_res_views"].tolist() == [1]
    rgb = np.array(colour) / 255.0
    expected_low = (rgb - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    expected_high = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(out["pixel_values"][0, :, 10, 10].numpy(), expected_low, atol=1e-5)
    assert np.allclose(out["high_res_pixel_values"][0, :, 500, 500].numpy(), expected_high, atol=1e-5)


def test_deterministic_and_pad_to_square_uses_mean_colour():
    processor = OcrMllmImageProcessor(size=32, high_res_size=64, pad_to_square=True)
    image = Image.new("RGB", (64, 16), (0, 0, 0))
    first, second = processor(image), processor(image)
    assert np.array_equal(first["high_res_pixel_values"], second["high_res_pixel_values"])
    # the padded band (top rows) normalises to ~0 because it is filled with the mean colour
    assert np.abs(first["pixel_values"][0, :, 0, :]).max() < 0.02
    assert np.abs(first["high_res_pixel_values"][0, :, 0, :]).max() < 0.02


@pytest.mark.parametrize(
    "size,expected",
    [((1000, 1000), (1, 1)), ((2000, 1000), (2, 1)), ((1000, 3000), (1, 3)), ((20000, 20), (6, 1)), ((1, 1), (1, 1))],
)
def test_tile_grid_follows_aspect_ratio(size, expected):
    assert select_tile_grid(*size, min_tiles=1, max_tiles=6, tile_size=1024) == expected


def test_tiling_views_and_token_counts_match_model_features(processor, model):
    processor.image_processor.do_tiling = True
    try:
        wide = Image.new("RGB", (800, 200), "white")  # 4:1 → 4x1 grid → 1 global + 4 tiles
        square = Image.new("RGB", (100, 100), "white")  # 1x1 → global view only
        prompts = [processor.apply_chat_template(_user("Read."), add_generation_prompt=True)] * 2
        inputs = processor(images=[wide, square], text=prompts, return_tensors="pt", padding=True)
        assert inputs["num_high_res_views"].tolist() == [5, 1]
        assert inputs["high_res_pixel_values"].shape[0] == 6
        per_view = processor.num_high_res_tokens_per_view
        counts = (inputs["input_ids"] == processor.image_token_id).sum(-1).tolist()
        assert counts == [5 * per_view + processor.num_low_res_tokens, per_view + processor.num_low_res_tokens]
        features = model.get_image_features(
            inputs["pixel_values"], inputs["high_res_pixel_values"], inputs["num_high_res_views"]
        )
        assert [f.shape[0] for f in features.pooler_output] == counts
        with torch.no_grad():
            model(**inputs)  # the model agrees with the expansion (no mismatch error)
    finally:
        processor.image_processor.do_tiling = False


def test_per_call_tiling_options(processor):
    prompt = processor.apply_chat_template(_user("Read."), add_generation_prompt=True)
    wide = Image.new("RGB", (900, 300), "white")
    tiled = processor(images=[wide], text=[prompt], do_tiling=True, max_tiles=3, return_tensors="pt")
    assert tiled["num_high_res_views"].tolist() == [4]  # 3x1 grid + global view
    plain = processor(images=[wide], text=[prompt], return_tensors="pt")
    assert plain["num_high_res_views"].tolist() == [1]
    with pytest.raises(ValueError, match="Unknown image processor options"):
        processor.image_processor([wide], do_resize=False)


def test_chat_template_renders_images_and_system_prompt(processor):
    prompt = processor.apply_chat_template(_user("Read all the text in the image."), add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nRead all the text in the image.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    custom = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert processor.apply_chat_template(custom).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi"
    )


def test_placeholder_expansion_and_mismatch_errors(processor):
    prompt = processor.apply_chat_template(_user("Two?", images=2), add_generation_prompt=True)
    image = Image.new("RGB", (50, 40), "white")
    inputs = processor(images=[image, image], text=[prompt])
    expected = 2 * (processor.num_high_res_tokens_per_view + processor.num_low_res_tokens)
    assert inputs["input_ids"][0].count(processor.image_token_id) == expected
    with pytest.raises(ValueError, match="2 `<image>` placeholder"):
        processor(images=[image], text=[prompt])
    with pytest.raises(ValueError, match="Sample 0 has 2"):
        processor(images=[[image]], text=[prompt])
    with pytest.raises(ValueError, match="image lists for 2 samples but 1 texts"):
        processor(images=[[image], [image]], text=[prompt])


def test_trl_keyword_arguments_and_truncation_guard(processor):
    image = Image.new("RGB", (50, 40), "white")
    prompt = processor.apply_chat_template(_user("Read."), add_generation_prompt=True)
    texts = [prompt + "short", prompt + "a much longer answer with many more tokens in it"]
    out = processor(
        images=[[image], [image]],
        text=texts,
        padding=True,
        padding_side="right",
        pad_to_multiple_of=8,
        return_tensors="pt",
        add_special_tokens=False,
    )
    assert out["input_ids"].shape[1] % 8 == 0 and out["attention_mask"][0, -1] == 0  # right padded
    n_image = processor.num_high_res_tokens_per_view + processor.num_low_res_tokens
    truncated = processor(images=[image], text=[prompt + "x" * 200], truncation=True, max_length=n_image + 30)
    assert len(truncated["input_ids"][0]) == n_image + 30  # cutting the answer tail is fine
    with pytest.raises(ValueError, match="Truncation"):
        processor(images=[image], text=[prompt], truncation=True, max_length=10)


def test_literal_image_token_in_user_text_is_rejected(processor):
    prompt = processor.apply_chat_template(_user("what is <image>?"), add_generation_prompt=True)
    with pytest.raises(ValueError, match="placeholder"):
        processor(images=[Image.new("RGB", (8, 8))], text=[prompt])


def test_inputs_of_every_kind(tmp_path):
    processor = OcrMllmImageProcessor(size=28, high_res_size=32)
    path = tmp_path / "page.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(path)
    arrays = [
        str(path),
        path,
        Image.open(path),
        np.full((30, 40, 3), 128, np.uint8),
        np.full((3, 30, 40), 0.5, np.float32),  # CHW float in [0, 1]
        torch.full((3, 30, 40), 255, dtype=torch.uint8),
        np.full((30, 40), 40000, np.uint16),  # 16-bit grayscale
    ]
    out = processor(arrays)
    assert out["pixel_values"].shape == (len(arrays), 3, 28, 28)
    assert np.isfinite(out["pixel_values"]).all()


def test_modes_exif_and_extreme_sizes(tmp_path):
    assert load_image(Image.new("L", (5, 5), 255)).mode == "RGB"
    assert load_image(Image.new("CMYK", (5, 5))).mode == "RGB"
    assert load_image(Image.new("I;16", (5, 5), 60000)).getpixel((0, 0))[0] > 200
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent → white background
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4))
    palette.info["transparency"] = 0
    assert load_image(palette).mode == "RGB"
    # EXIF orientation 6 (rotate 90° clockwise to display): a 40x20 stored image is shown as 20x40
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rotated.jpg"
    Image.new("RGB", (40, 20), "white").save(rotated, exif=exif)
    assert load_image(rotated).size == (20, 40)
    processor = OcrMllmImageProcessor(size=28, high_res_size=32, do_tiling=True, max_tiles=4)
    out = processor([Image.new("RGB", (1, 1)), Image.new("RGB", (20000, 20), "white")])
    assert out["pixel_values"].shape == (2, 3, 28, 28)
    assert out["num_high_res_views"].tolist() == [1, 5]  # the strip gets a 4x1 grid + the global view


@pytest.mark.parametrize("kind", ["missing", "not_an_image", "truncated", "empty_file"])
def test_bad_files_raise_value_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "not_an_image":
        path.write_text("hello, I am text")
    elif kind == "truncated":
        Image.new("RGB", (64, 64), "red").save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "empty_file":
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=str(path.name)):
        load_image(str(path))


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((5, 5, 7), np.uint8), "shape"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        ([1, 2, 3], "Unsupported image type"),
    ],
)
def test_bad_arrays_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        load_image(bad)


def test_image_only_call_and_save_load_roundtrip(processor, tmp_path):
    out = processor(images=[Image.new("RGB", (30, 30))], return_tensors="pt")
    assert (out["input_ids"] == processor.image_token_id).sum() == processor.num_image_tokens(1)
    processor.save_pretrained(tmp_path)
    from transformers import AutoProcessor

    again = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert again.num_high_res_tokens_per_view == processor.num_high_res_tokens_per_view
    assert again.image_processor.size == processor.image_processor.size
    assert again.chat_template == processor.chat_template


def test_num_multimodal_tokens_from_sizes_match_the_expansion(processor):
    """`_get_num_multimodal_tokens` (what vLLM's Transformers backend calls) gives the same counts as running the
    processor, with and without tiling."""
    sizes = [(40, 300), (900, 700), (2000, 600)]  # (height, width)
    images = [Image.new("RGB", (w, h), "white") for h, w in sizes]
    prompt = processor.apply_chat_template(_user("Read it."), add_generation_prompt=True)
    for tiling in (False, True):
        counted = processor._get_num_multimodal_tokens(image_sizes=sizes, do_tiling=tiling, max_tiles=4)
        expanded = [
            int(
                (
                    processor(images=[image], text=[prompt], do_tiling=tiling, max_tiles=4, return_tensors="pt")[
                        "input_ids"
                    ]
                    == processor.image_token_id
                ).sum()
            )
            for image in images
        ]
        assert counted.num_image_tokens == expanded, tiling
        assert len(counted.num_image_patches) == len(sizes)
