"""One image loader (`image_processing_ocr_mllm.load_image`): a transparent PNG and a 16-bit grayscale scan reach the model as
the same pixels through the processor, the inference front-end (cli / infer / app / eval) and the training collator;
transparency is white and a 16-bit scan keeps its text."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests._reading_model import QUESTION, conversation


def _text_mask(size=(160, 48)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((20, 14, 140, 34), fill=255)  # a dark "text" bar
    return mask


@pytest.fixture()
def tricky_images(tmp_path):
    """A transparent PNG (black text, alpha 0 elsewhere) and a 16-bit grayscale scan (dark text on a light page),
    and the RGB image both should become: black on white."""
    mask = _text_mask()
    transparent = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    transparent.putalpha(mask)  # opaque black where the text is, transparent elsewhere
    transparent.save(tmp_path / "transparent.png")
    page = np.where(np.asarray(mask) > 0, 0, 65535).astype(np.uint16)
    Image.fromarray(page).save(tmp_path / "scan16.png")  # uint16 → mode I;16
    expected = Image.merge("RGB", [Image.eval(mask, lambda v: 255 - v)] * 3)
    expected.save(tmp_path / "expected.png")
    return [tmp_path / "transparent.png", tmp_path / "scan16.png"], tmp_path / "expected.png"


def test_loader_composites_transparency_on_white_and_scales_16_bit(tricky_images):
    from image_processing_ocr_mllm import load_image

    paths, expected = tricky_images
    for path in paths:
        assert np.array_equal(np.asarray(load_image(path)), np.asarray(Image.open(expected))), path.name


def test_processor_inference_and_collator_see_the_same_pixels(tiny_model_and_processor, tricky_images):
    from ocr_mllm.inference import prepare_inputs
    from ocr_mllm.training.collator import OcrMllmDataCollator

    model, processor = tiny_model_and_processor
    paths, expected = tricky_images
    reference = processor.image_processor([str(expected)] * len(paths), return_tensors="pt")
    through_processor = processor.image_processor([str(p) for p in paths], return_tensors="pt")
    through_inference = prepare_inputs(model, processor, [conversation()] * len(paths), [[str(p)] for p in paths])
    collator = OcrMllmDataCollator(processor, template="chat", max_length=4096)
    through_collator = collator(
        [
            {
                "messages": [
                    {"role": "user", "content": f"<image>\n{QUESTION}"},
                    {"role": "assistant", "content": "x"},
                ],
                "images": [str(path)],
            }
            for path in paths
        ]
    )
    for key in ("pixel_values", "high_res_pixel_values"):
        for name, batch in (
            ("processor", through_processor),
            ("inference", through_inference),
            ("collator", through_collator),
        ):
            torch.testing.assert_close(batch[key].float(), reference[key].float(), msg=f"{name}: {key}")
