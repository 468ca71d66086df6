"""Scorers against the official code (issue 17): each case is built so that the rule we used before and the official
rule give different answers; the expected value is the official one, worked by hand from the source named in
eval/metrics.py."""

import pytest

import fixtures_eval as fx
from eval.metrics import anls, infer_option_letter

CHOICES = {"A": "red", "B": "green", "C": "blue", "D": "yellow"}


# ------------------------------------------------------------------------------------------------ MMBench can_infer


@pytest.mark.parametrize(
    "pred, official, old",
    [
        # a lone capital "A" used as an article, early in a long answer: not among the last 5 words
        ("A man is holding an umbrella while he walks down the street in the rain", None, "A"),
        # ... and the answer names its pick in words later on: the "answer is" fallback (any case) decides
        ("A man holds an umbrella, so the answer is b", "B", "A"),
        ("the answer is b", "B", None),
        ("The correct answer is **c**", "C", None),
        # a letter that opens an 8-word sentence is not among its last words
        ("B is right because it is the best", None, "B"),
        # "C" opens a 5-word answer (index 0, not > 5 - 5): the "answer is" fallback picks A
        ("C. the answer is a", "A", "C"),
        # option text inside a long answer: skipped (answer longer than twice the options' total length, 2 * 18)
        ("Looking at the whole picture carefully, I would say that the sky is blue today", None, "C"),
    ],
)
def test_mmbench_can_infer_current_rules(pred, official, old):
    assert official != old
    assert infer_option_letter(pred, dict(CHOICES)) == official


@pytest.mark.parametrize(
    "pred, letter",
    [("B", "B"), ("(C)", "C"), ("The answer is D", "D"), ("I choose option B.", "B"), ("blue", "C"),
     ("It is green.", "B"), ("Z", "Z"), ("Cannot determine the answer", "Z"), ("A or B", None),
     # "answer is X" only for A-D, and only for the row's own options
     ("the answer is e", None)],
)
def test_mmbench_can_infer_rules_that_did_not_change(pred, letter):
    assert infer_option_letter(pred, dict(CHOICES)) == letter


def test_mmbench_answer_is_needs_an_option_of_the_row():
    assert infer_option_letter("the answer is d", {"A": "cat", "B": "dog", "C": "cow"}) is None
    assert infer_option_letter("the answer is c", {"A": "cat", "B": "dog", "C": "cow"}) == "C"


# ------------------------------------------------------------------------------------------------ DocVQA ANLS


@pytest.mark.parametrize(
    "pred, answers, official, old",
    [
        # trailing whitespace: distance 1 (normalised) over the raw length 7, not over 4
        ("abcf   ", ["abcd"], 1 - 1 / 7, 0.75),
        # a doubled space inside the ground truth: distance 1 over its raw length 12, not 11
        ("itc limitd", ["itc  limited"], 1 - 1 / 12, 1 - 1 / 11),
        # below the threshold with normalised lengths (NL 2/3), above it with the raw ones (NL 2/6)
        ("axy   ", ["abc"], 1 - 2 / 6, 0.0),
    ],
)
def test_anls_divides_by_raw_lengths(pred, answers, official, old):
    assert official != pytest.approx(old)
    assert anls(pred, answers) == pytest.approx(official)


def test_anls_unchanged_cases():
    assert anls("  ITC   Limited ", ["itc limited"]) == 1.0   # distance 0 whatever the divisor
    assert anls("abxy", ["abcd"]) == pytest.approx(0.5)      # exactly 0.5 is kept
    assert anls("axyz", ["abcd"]) == 0.0
    assert anls("", [""]) == 1.0
