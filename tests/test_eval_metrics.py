"""Metric functions against hand-worked cases (no model, no files)."""

import pytest

from eval.metrics import (
    anls,
    infer_option_letter,
    levenshtein,
    mme_parse_yes_no,
    mme_subtask_scores,
    normalize_vqa_answer,
    ocrbench_match,
    relaxed_correctness,
    vqa_accuracy,
    vqa_answer_scores,
)


# ------------------------------------------------------------------------------------------------ EvalAI normalisation


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),  # number words
        ("the cat.", "cat"),  # article dropped, final period removed
        ("dont", "don't"),  # contractions table
        ("Dont Walk", "don't walk"),
        ("1,000", "1000"),  # the comma goes, the digits stay one token
        ("3.5", "3.5"),  # a period before a digit stays
        ("5.", "5"),
        ("x-ray", "x ray"),  # punctuation not touching a space becomes a space
        ("a-b", "b"),  # ... so "a-b" -> "a b" and the article "a" is dropped
        ("well - known", "well known"),  # punctuation touching a space is deleted
        ("yes!", "yes"),
        ("hello, world", "hello world"),
        ("What's up?", "what 's up"),  # "'s" split off, "?" deleted
        ("(a)", ""),  # everything is punctuation or an article
        ("The Answer Is Ten", "answer is 10"),
        ("  new\tyork\n", "new york"),
        ("an apple", "apple"),
        ("none", "0"),
    ],
)
def test_normalize_vqa_answer(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_normalize_capitalised_contraction_keys_never_match():
    # "Im"/"Ive" are capitalised in the official table and answers are lowercased first: left alone.
    assert normalize_vqa_answer("Im") == "im"


def test_vqa_leave_one_out_scores():
    # 1 match -> 0.3, 2 -> 0.6, 3 -> 0.9, >=4 -> 1.0 (averaged over the 10 leave-one-out subsets)
    gts = ["a1"] * 1 + ["b2"] * 2 + ["c3"] * 3 + ["d4"] * 4
    scores = vqa_answer_scores(gts)
    assert scores["a1"] == pytest.approx(0.3)
    assert scores["b2"] == pytest.approx(0.6)
    assert scores["c3"] == pytest.approx(0.9)
    assert scores["d4"] == pytest.approx(1.0)


def _brute_force(pred, gts):
    """Direct transcription of the definition, to check the closed form."""
    p = normalize_vqa_answer(pred)
    norm = [normalize_vqa_answer(g) for g in gts]
    accs = []
    for i in range(len(norm)):
        others = norm[:i] + norm[i + 1 :]
        accs.append(min(1.0, sum(o == p for o in others) / 3))
    return sum(accs) / len(accs) if p in norm else 0.0


@pytest.mark.parametrize("pred", ["dakota", "Dakota Digital", "nous les gosses", "nikon", "DAKOTA."])
def test_vqa_accuracy_matches_definition(pred):
    gts = [
        "nous les gosses",
        "dakota",
        "clos culombu",
        "dakota digital",
        "dakota",
        "dakota",
        "dakota digital",
        "dakota digital",
        "dakota",
        "dakota",
    ]
    assert vqa_accuracy(pred, gts) == pytest.approx(_brute_force(pred, gts))


def test_vqa_accuracy_hand_worked():
    gts = [
        "nous les gosses",
        "dakota",
        "clos culombu",
        "dakota digital",
        "dakota",
        "dakota",
        "dakota digital",
        "dakota digital",
        "dakota",
        "dakota",
    ]
    assert vqa_accuracy("Dakota", gts) == pytest.approx(1.0)  # 5 matches
    assert vqa_accuracy("dakota digital.", gts) == pytest.approx(0.9)  # 3 matches
    assert vqa_accuracy("nous les gosses", gts) == pytest.approx(0.3)
    assert vqa_accuracy("kodak", gts) == 0.0
    # number word vs digit, contraction vs none
    assert vqa_accuracy("Two", ["2", "2", "two", "2", "3", "2", "2", "2", "2", "2"]) == pytest.approx(1.0)
    walk = [
        "don't walk",
        "dont walk",
        "don't walk",
        "walk",
        "do not walk",
        "don't walk",
        "stop",
        "don't walk",
        "walk",
        "no",
    ]
    assert vqa_accuracy("dont walk", walk) == pytest.approx(1.0)
    assert vqa_accuracy("Walk.", walk) == pytest.approx(0.6)


# ------------------------------------------------------------------------------------------------ MME


@pytest.mark.parametrize(
    "pred, label",
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes, there is.", "yes"),
        ("No.", "no"),
        ("not sure", "no"),
        ("I think yes", "other"),
        ("", "other"),
        ("The answer is yes", "other"),
        ("nope", "no"),
        ("YES!", "yes"),
    ],
)
def test_mme_yes_no_extraction(pred, label):
    assert mme_parse_yes_no(pred) == label


def test_mme_acc_and_acc_plus():
    items = [
        ("img1", "Yes", "Yes"),
        ("img1", "No", "No"),  # both right
        ("img2", "Yes", "Yes"),
        ("img2", "No", "Yes"),  # one wrong
        ("img3", "Yes", "maybe"),
        ("img3", "No", "No"),
    ]  # "other" counts as wrong
    r = mme_subtask_scores(items)
    assert r["acc"] == pytest.approx(4 / 6)
    assert r["acc_plus"] == pytest.approx(1 / 3)
    assert r["score"] == pytest.approx(100 * (4 / 6 + 1 / 3))
    assert r["other"] == 1 and r["images"] == 3


def test_mme_rejects_bad_ground_truth():
    with pytest.raises(ValueError):
        mme_subtask_scores([("i", "maybe", "yes")])


# ------------------------------------------------------------------------------------------------ MMBench extraction

CHOICES = {"A": "red", "B": "green", "C": "blue", "D": "yellow"}


@pytest.mark.parametrize(
    "pred, letter",
    [
        ("A", "A"),
        ("B.", "B"),
        ("(C)", "C"),
        ("The answer is D", "D"),
        ("D. yellow", "D"),
        ("[B]", "B"),
        ("blue", "C"),
        ("It is green.", "B"),
        ("I think it's red", "A"),
        ("A or B", None),  # two letters and no option text: ambiguous
        ("red or green", None),  # two option texts
        ("purple", None),
        ("Cannot determine the answer", "Z"),  # refusal
        ("Z", "Z"),
    ],
)
def test_mmbench_option_extraction(pred, letter):
    assert infer_option_letter(pred, dict(CHOICES)) == letter


def test_mmbench_option_extraction_numbers_and_subset():
    assert infer_option_letter("2", {"A": "0", "B": "1", "C": "2"}) == "C"
    # option-text matching is skipped when the answer is longer than twice the options' total length (VLMEvalKit)
    assert infer_option_letter("There are 2 objects", {"A": "0", "B": "1", "C": "2"}) is None
    # a letter outside the row's options is not a choice
    assert infer_option_letter("D", {"A": "cat", "B": "dog"}) is None


# ------------------------------------------------------------------------------------------------ OCRBench


def test_ocrbench_contains_match():
    assert ocrbench_match("The word is centre.", ["CENTRE"], "IIIT5K") == 1
    assert ocrbench_match("lunch\nmenu", "Lunch", "WordArt") == 1
    assert ocrbench_match("dinner", ["Lunch", "Dinner"], "WordArt") == 1
    assert ocrbench_match("cent", ["CENTRE"], "IIIT5K") == 0
    # HME100k: all whitespace removed on both sides, case kept
    assert ocrbench_match("$x^{2}+1$", ["x ^ { 2 } + 1"], "HME100k") == 1
    assert ocrbench_match("x ^ {2}\n+ 1", "x^{2}+1", "HME100k") == 1
    assert ocrbench_match("X^{2}+1", ["x ^ { 2 } + 1"], "HME100k") == 0
    # the same lowercase rule would have matched outside HME100k
    assert ocrbench_match("X^{2}+1", ["x^{2}+1"], "CROHME") == 1


# ------------------------------------------------------------------------------------------------ ANLS


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert levenshtein("flaw", "lawn") == 2


def test_anls_threshold_boundary():
    assert anls("abcd", ["abcd"]) == 1.0
    assert anls("abcf", ["abcd"]) == pytest.approx(0.75)  # NL = 1/4
    assert anls("abxy", ["abcd"]) == pytest.approx(0.5)  # NL = 0.5 exactly: kept, as the RRC evaluator does
    assert anls("axyz", ["abcd"]) == 0.0  # NL = 0.75: below the 0.5 similarity threshold
    assert anls("abcdx", ["abcd"]) == pytest.approx(0.8)  # NL = 1/5
    assert anls("abcdxyzw", ["abcd"]) == pytest.approx(0.5)


def test_anls_normalisation_and_max_over_answers():
    assert anls("  ITC   Limited ", ["itc limited"]) == 1.0
    assert anls("paul", ["Paul Smith", "Paul"]) == 1.0
    assert anls("", ["abc"]) == 0.0
    assert anls("", [""]) == 1.0


# ------------------------------------------------------------------------------------------------ ChartQA


@pytest.mark.parametrize(
    "pred, target, ok",
    [
        ("105", "100", True),
        ("95", "100", True),  # exactly 5 % off: right
        ("105.5", "100", False),
        ("94.5", "100", False),  # beyond 5 %
        ("0.45", "45%", True),
        ("45%", "45%", True),
        ("45", "45%", False),  # "45%" is read as 0.45
        ("Norway", "norway", True),
        ("Norway.", "Norway", False),
        (" 14 ", "14", True),
        ("0", "0", True),
        ("0.0", "0", False),  # target 0: exact string match
        ("1,000", "1000", False),
    ],  # not a float: exact match
)
def test_chartqa_relaxed_correctness(pred, target, ok):
    assert relaxed_correctness(pred, target) is ok


def test_reading_scores_pool_characters_and_group_by_language():
    from ocr_mllm.text_metrics import reading_scores, rows_by_language

    # CER pools edits over all reference characters: (1 + 0 + 3) / (5 + 2 + 3)
    scores = reading_scores([("hallo", "hello"), ("好的", "好的"), ("", "abc")])
    assert scores == {"n": 3, "exact_match": pytest.approx(1 / 3), "cer": pytest.approx(0.4)}
    assert reading_scores([("abc", "")])["cer"] == 3  # an empty reference counts as one character
    with pytest.raises(ValueError, match="at least one"):
        reading_scores([])

    rows = [{"language": "zh-Hans"}, {"language": "en"}, {"language": "zh-Hans"}]
    groups = rows_by_language(rows, ("en", "zh-Hans", "zh-Hant"))
    assert list(groups) == ["en", "zh-Hans", "all"]
    assert [len(group) for group in groups.values()] == [1, 2, 3]
