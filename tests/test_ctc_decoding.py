"""Joint CTC/attention decoding (`OcrMllmCtcPrefixScorer`, `generate(ctc_decoding_weight=...)`): the prefix scores are
the CTC probabilities they claim (checked against torch's CTC loss), and each batch row is scored with its own image."""

import pytest
import torch
import torch.nn.functional as F

from configuration_ocr_mllm import OcrMllmConfig
from modeling_ocr_mllm import OcrMllmCtcPrefixScorer
from tests._reading_model import conversation


def _exact_log_prob(log_probs: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """log p_CTC(labels) of one (T, V + 1) row, from torch's CTC loss."""
    blank = log_probs.shape[-1] - 1
    if not labels:
        return log_probs[:, blank].sum()
    return -F.ctc_loss(
        log_probs[:, None],
        torch.tensor([labels]),
        torch.tensor([log_probs.shape[0]]),
        torch.tensor([len(labels)]),
        blank=blank,
        reduction="sum",
    )


def test_prefix_scores_are_ctc_probabilities():
    torch.manual_seed(0)
    rows, columns, vocab = 2, 7, 4
    log_probs = torch.randn(rows, columns, vocab + 1).log_softmax(-1)
    eos = vocab + 1  # the LLM's vocabulary: the CTC alphabet plus an end token
    scorer = OcrMllmCtcPrefixScorer(log_probs, torch.tensor([0, 1]), 1.0, [eos], [], prompt_length=3)
    answers = [[1, 1, 2], [3, 0, 3]]  # a repeated symbol, and a symbol coming back
    input_ids = torch.zeros(rows, 3, dtype=torch.long)
    for step in range(4):
        scores = scorer(input_ids, torch.zeros(rows, vocab + 2))
        for row in range(rows):
            prefix = answers[row][:step]
            exact = _exact_log_prob(log_probs[row], prefix)
            prefix_score = scorer.prefix_score[row]
            # the end token's joint score is log p(answer == prefix) - log p(answer starts with prefix)
            torch.testing.assert_close(scores[row, eos] + prefix_score, exact, atol=1e-4, rtol=0)
            # every reading that starts with the prefix is the prefix itself or the prefix + one more symbol
            total = torch.logsumexp(torch.cat([scores[row, :vocab] + prefix_score, exact[None]]), 0)
            torch.testing.assert_close(total, prefix_score, atol=1e-4, rtol=0)
        if step < 3:
            input_ids = torch.cat([input_ids, torch.tensor([[answers[0][step]], [answers[1][step]]])], dim=1)


def test_rows_without_an_image_keep_the_llm_scores():
    log_probs = torch.randn(1, 5, 4).log_softmax(-1)
    scorer = OcrMllmCtcPrefixScorer(log_probs, torch.tensor([1]), 0.5, [4], [], prompt_length=2)
    scores = torch.randn(2, 5)
    out = scorer(torch.zeros(2, 2, dtype=torch.long), scores)
    torch.testing.assert_close(out[0], scores[0])
    assert not torch.allclose(out[1], scores[1])


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_ctc_decoding_weight_is_validated(weight):
    with pytest.raises(ValueError, match="ctc_decoding_weight"):
        OcrMllmConfig(ctc_decoding_weight=weight)


def test_each_row_is_scored_with_its_own_image(reading_model):
    """A batch of image rows and a text-only row: every image row gets the CTC log-probabilities of its own image
    (as one-by-one), the text-only row none; rotating the images across the rows changes them (so this can fail)."""
    from ocr_mllm.inference import load_model_and_processor, prepare_inputs

    folder, images, _ = reading_model
    model, processor = load_model_and_processor(str(folder), device="cpu", dtype="float32")
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]

    def scorer(paths, with_text_row=False):
        conversations = [conversation()] * len(paths) + [text_only] * with_text_row
        inputs = prepare_inputs(model, processor, conversations, [[p] for p in paths] + [[]] * with_text_row)
        return model._ctc_prefix_scorer(inputs["input_ids"], dict(inputs), 1.0)

    batch = scorer(images[:3], with_text_row=True)
    assert batch.rows.tolist() == [0, 1, 2]
    for index, path in enumerate(images[:3]):
        torch.testing.assert_close(batch.log_probs[index], scorer([path]).log_probs[0], atol=1e-4, rtol=1e-4)
    rotated = scorer(images[1:3] + images[:1])
    assert not torch.allclose(rotated.log_probs[0], batch.log_probs[0], atol=1e-3)


def test_generate_with_joint_decoding_batch_equals_one_by_one(reading_model):
    from ocr_mllm.inference import generate_batch, load_model_and_processor

    folder, images, words = reading_model
    model, processor = load_model_and_processor(str(folder), device="cpu", dtype="float32")

    def answers(paths, weight):
        with torch.inference_mode():
            return generate_batch(
                model,
                processor,
                [conversation()] * len(paths),
                [[p] for p in paths],
                max_new_tokens=6,
                ctc_decoding_weight=weight,
            )

    assert answers(images, 0.3) == [answers([path], 0.3)[0] for path in images]
    assert answers(images, 0.0) == words  # λ = 0: the LLM alone, which reads these


def test_symbols_the_head_never_sees_are_not_scored():
    """Only symbols with probability > 1e-3 somewhere in the line are candidates (speed); the others get log 0."""
    log_probs = torch.full((1, 6, 5), -30.0)
    log_probs[0, :, 4] = 0.0  # blank everywhere ...
    log_probs[0, 2, 1], log_probs[0, 2, 4] = -0.1, -2.4  # ... and a likely "1" in one column
    log_probs = log_probs.log_softmax(-1)
    scorer = OcrMllmCtcPrefixScorer(log_probs, torch.tensor([0]), 1.0, [5], [], prompt_length=1)
    assert scorer.candidates.tolist() == [[1]]
    scores = scorer(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 6))
    assert scores[0, 1] > -10 and (scores[0, [0, 2, 3]] < -1e20).all()
