"""Scorers against the official code (issue 17): each case is built so that the rule we used before and the official
rule give different answers; the expected value is the official one, worked by hand from the source named in
eval/metrics.py."""

import fixtures_eval as fx
import pytest

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
    [
        ("B", "B"),
        ("(C)", "C"),
        ("The answer is D", "D"),
        ("I choose option B.", "B"),
        ("blue", "C"),
        ("It is green.", "B"),
        ("Z", "Z"),
        ("Cannot determine the answer", "Z"),
        ("A or B", None),
        # "answer is X" only for A-D, and only for the row's own options
        ("the answer is e", None),
    ],
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
    assert anls("  ITC   Limited ", ["itc limited"]) == 1.0  # distance 0 whatever the divisor
    assert anls("abxy", ["abcd"]) == pytest.approx(0.5)  # exactly 0.5 is kept
    assert anls("axyz", ["abcd"]) == 0.0
    assert anls("", [""]) == 1.0


# ------------------------------------------------------------------------------------------------ OCRBench


def test_ocrbench_reads_repeated_ids_by_position(tmp_path):
    from eval.run import run_task

    d = fx.make_ocrbench(tmp_path)  # ids 211, 57, 211, 57, 211: repeated, as in the released OCRBench.json
    preds = fx.write_predictions(
        tmp_path / "p.jsonl", {0: "centre", 1: "LUNCH time", 2: "on 3/3/98", 3: "x^{2}+1", 4: "12.5"}
    )
    r = run_task("ocrbench", str(d), tmp_path / "out", predictions=str(preds))
    assert r.headline["final_score"] == 4  # positions 0-3 right, 4 wrong ("12.50" not in "12.5")
    assert r.details["per_question"] == {"0": 1, "1": 1, "2": 1, "3": 1, "4": 0}


# ------------------------------------------------------------------------------------------------ MME eval_tool


def _write_eval_tool(root, files):
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (root / f"{name}.txt").write_text("".join("\t".join(f) + "\n" for f in lines), encoding="utf-8")
    return root


EVAL_TOOL = {
    "count": [
        ("6040.jpg", "Are there two trains? Please answer yes or no.", "Yes", "Yes"),
        ("6040.jpg", "Are there three trains? Please answer yes or no.", "No", "No, there are two."),
        ("6041.jpg", "Is there a dog? Please answer yes or no.", "Yes", "yes"),
        ("6041.jpg", "Is there a cat? Please answer yes or no.", "No", "I think yes"),
    ],  # "i th": other
    "code_reasoning": [
        ("0020.png", "Will the code print 5? Please answer yes or no.", "No", "no"),
        ("0020.png", "Will the code print 6? Please answer yes or no.", "Yes", "Not sure"),
    ],  # "no"
}


def test_mme_scores_eval_tool_results_without_images(tmp_path, capsys):
    from eval.run import main

    d = _write_eval_tool(tmp_path / "results", EVAL_TOOL)  # no images anywhere
    out = tmp_path / "out"
    assert main(["--task", "mme", "--data", str(d), "--output", str(out), "--no-progress"]) == 0
    import json

    res = json.loads((out / "mme_results.json").read_text())
    # by hand, as calculation.py: count acc 3/4, acc+ 1/2 -> 125; code_reasoning acc 1/2, acc+ 0 -> 50
    assert res["metrics"] == {
        "perception": pytest.approx(125),
        "cognition": pytest.approx(50),
        "total": pytest.approx(175),
    }
    assert res["details"]["subtasks"]["count"]["other"] == 1
    assert res["run"]["predictions"].startswith("embedded in")
    # the results folder we write is the same layout, and scores the same
    assert (
        main(["--task", "mme", "--data", str(out / "mme_results"), "--output", str(tmp_path / "o2"), "--no-progress"])
        == 0
    )
    assert json.loads((tmp_path / "o2" / "mme_results.json").read_text())["metrics"] == res["metrics"]


def test_mme_eval_tool_pairs_consecutive_lines(tmp_path):
    from eval.run import run_task

    # the official tool pairs lines 1-2 and 3-4 whatever the image names say
    # (grouped by image name instead, neither a.jpg nor b.jpg has both right: acc+ would be 0)
    lines = [
        ("a.jpg", "q1", "Yes", "yes"),
        ("b.jpg", "q2", "No", "no"),
        ("b.jpg", "q3", "Yes", "no"),
        ("a.jpg", "q4", "No", "yes"),
    ]
    d = _write_eval_tool(tmp_path / "r", {"OCR": lines})
    r = run_task("mme", str(d), tmp_path / "out")
    ocr = r.details["subtasks"]["OCR"]
    assert ocr["acc"] == pytest.approx(0.5) and ocr["acc_plus"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "lines, message",
    [
        ([("a.jpg", "q", "Yes", "yes")], "two per image"),
        ([("a.jpg", "q", "Yes", "yes"), ("a.jpg", "q\tx", "No", "no")], "OCR.txt:2"),
    ],
)
def test_mme_eval_tool_bad_files(tmp_path, lines, message):
    from eval.common import EvalDataError
    from eval.run import run_task

    d = _write_eval_tool(tmp_path / "r", {"OCR": lines})
    with pytest.raises(EvalDataError, match=message):
        run_task("mme", str(d), tmp_path / "out")


def test_mme_eval_tool_refuses_a_model(tmp_path):
    from eval.common import EvalDataError
    from eval.run import run_task

    d = _write_eval_tool(tmp_path / "r", EVAL_TOOL)
    with pytest.raises(EvalDataError, match="holds predictions already"):
        run_task("mme", str(d), tmp_path / "out", model="some/model")
