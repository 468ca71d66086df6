"""Pure metric functions, one section per benchmark, written to reproduce the official evaluators.

Everything here is dependency-free (no torch, no model) so it can be unit-tested against hand-worked cases.

Sources of the rules (re-implemented, not copied; the file and commit we read are next to each section):
- TextVQA: the EvalAI answer processor used by the m4c ``TextVQAAccuracyEvaluator`` (LLaVA ``m4c_evaluator.py``).
- MME: the official ``eval_tool/calculation.py`` (yes/no extraction from the first 4 characters, acc and acc+).
- MMBench: VLMEvalKit ``vlmeval/utils/matching_util.py`` ``can_infer`` (the rule-based step before the LLM judge).
- MM-Vet: the official GPT-4 grader prompt (``mm-vet_evaluator``), see :mod:`eval.mmvet`.
- OCRBench: the official ``OCRBench/example.py`` contains-match (HME100k: whitespace-free, case-sensitive).
- DocVQA: ANLS as the RRC evaluator computes it (normalised edit distance over raw lengths, ``1 - NL`` kept >= 0.5).
- ChartQA: relaxed accuracy (Pix2Struct / ChartQA paper), 5 % relative tolerance on numbers, exact otherwise.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

from ocr_mllm.text_metrics import levenshtein  # noqa: F401  (re-exported: eval.metrics.levenshtein)


# ---------------------------------------------------------------------------------------------------------------------
# TextVQA / VQA accuracy (EvalAI answer normalisation as in m4c_evaluator)
# ---------------------------------------------------------------------------------------------------------------------

# The EvalAI contraction table (keys written without apostrophes → canonical form). Keys with capitals ("Im", "Ive",
# "Id've", "I'dve") can never match because answers are lowercased first; they are kept for fidelity.
CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# The 21 punctuation marks EvalAI handles (the period is handled separately).
PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
# digit,digit (e.g. "1,000"): when present, punctuation is deleted instead of replaced by a space.
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d)(,)+(?=\d)")
# EvalAI writes this lookbehind as "(?!<=\d)" (a lookahead, a typo), so in practice a period is removed whenever it is
# not followed by a digit: "3.5" stays, "cat." → "cat", "5." → "5". We reproduce the effective behaviour.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# The official call passes re.UNICODE (== 32) in the ``count`` position, so at most 32 periods are removed.
_PERIOD_MAX_SUBS = 32


def _process_punctuation(text: str) -> str:
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        # The test looks at the text *before* any replacement, as the official code does.
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_MAX_SUBS)


def _process_digits_articles(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """EvalAI/m4c answer normalisation.

    Steps (in order): lowercase; delete "," and "?"; "'s" → " 's"; newlines/tabs → space; strip; punctuation (deleted
    when it touches a space or the text has a digit-comma-digit, else replaced by a space); periods not followed by a
    digit removed; number words → digits; articles dropped; contractions restored (e.g. "dont" → "don't").

    Because "," is deleted in the first step, "1,000" becomes "1000" (the digits stay one token).
    """
    text = str(answer).lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _process_punctuation(text)
    return _process_digits_articles(text)


def vqa_answer_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Soft score of every distinct (normalised) human answer: the mean over the leave-one-out subsets of the
    answers of ``min(1, #matches in the subset / 3)``. TextVQA/VQA have exactly 10 answers per question."""
    answers = [normalize_vqa_answer(a) for a in gt_answers]
    if not answers:
        raise ValueError("a VQA question needs ground-truth answers")
    counts = Counter(answers)
    n = len(answers)
    scores = {}
    for ans, c in counts.items():
        # Leaving out one of the c matching answers leaves c-1 matches (c such subsets); leaving out another answer
        # leaves c matches (n-c subsets).
        total = c * min(1.0, (c - 1) / 3.0) + (n - c) * min(1.0, c / 3.0)
        scores[ans] = total / n
    return scores


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Per-question VQA accuracy of a prediction (0 when its normalised form matches no human answer)."""
    return vqa_answer_scores(gt_answers).get(normalize_vqa_answer(prediction), 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------------------------------
# Source: the official ``eval_tool/calculation.py`` (BradyFU/Awesome-Multimodal-Large-Language-Models
# ``tools/eval_tool.zip`` at 1c1d69e138b57cf8b0400427927bfb8ed4285458; the zip is not readable through the look-up
# tools, we read a verbatim copy of ``calculation.py``). Per line ``image\tquestion\tgt\tprediction``: both
# lowercased; the prediction is "yes"/"no" as is, else the first 4 characters decide (yes before no), else "other".
# acc = right / lines; acc+ = consecutive line pairs (one image) with both right / pairs; score = 100 (acc + acc+).

MME_SUBTASKS = {
    "perception": [
        "existence",
        "count",
        "position",
        "color",
        "posters",
        "celebrity",
        "scene",
        "landmark",
        "artwork",
        "OCR",
    ],
    "cognition": ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"],
}


def mme_parse_yes_no(prediction: str) -> str:
    """The official extraction: lowercase; "yes"/"no" as is; else "yes" if "yes" is in the first 4 characters, else
    "no" if "no" is there, else "other"."""
    pred = str(prediction).lower()
    if pred in ("yes", "no"):
        return pred
    prefix = pred[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_subtask_scores(items: Iterable[tuple[str, str, str]]) -> dict:
    """``items``: (image key, ground truth "Yes"/"No", prediction) for one subtask. Returns acc, acc_plus (both in
    [0, 1]), score = 100 * (acc + acc_plus), counts. acc+ counts an image right only when all its questions (two in
    MME) are right."""
    per_image: dict[str, list[bool]] = {}
    n_q = n_right = n_other = 0
    for image, gt, pred in items:
        gt_l = str(gt).strip().lower()
        if gt_l not in ("yes", "no"):
            raise ValueError(f"MME ground truth must be yes/no, got {gt!r}")
        label = mme_parse_yes_no(pred)
        ok = label == gt_l
        n_q += 1
        n_right += ok
        n_other += label == "other"
        per_image.setdefault(image, []).append(ok)
    if n_q == 0:
        return {"acc": 0.0, "acc_plus": 0.0, "score": 0.0, "questions": 0, "images": 0, "other": 0}
    acc = n_right / n_q
    acc_plus = sum(all(v) for v in per_image.values()) / len(per_image)
    return {
        "acc": acc,
        "acc_plus": acc_plus,
        "score": 100.0 * (acc + acc_plus),
        "questions": n_q,
        "images": len(per_image),
        "other": n_other,
    }


# ---------------------------------------------------------------------------------------------------------------------
# MMBench option extraction (VLMEvalKit rule-based matching)
# ---------------------------------------------------------------------------------------------------------------------
# Source: open-compass/VLMEvalKit ``vlmeval/utils/matching_util.py`` (``can_infer_option``, ``can_infer_text``,
# ``can_infer``). Read at commit 134b4ea61d26cb15b6fac405dec3ff6a88e2bc31 (length guard in ``can_infer_text``) and
# 18fc37a5337e31eec9c104887728ad14e82a6a85 (the 2024 rules this module used before); the position rule ("the letter
# index > number of words - 5") and the case-insensitive "answer is X" fallback are those of the version at
# d21c5e969983dea6741a98eb2f7ec566ab82ee91, read through a verbatim adaptation that cites that commit (the
# look-up index holds no copy of the file at that commit). Re-implemented here, not copied.

_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_API_FAILURE = "Failed to obtain answer via API"
_OPTION_SEPARATORS = ".()[],:;!*#{}"
# A lone letter counts only when it is among the last words: its first position p must satisfy p > words - 5.
LETTER_WINDOW = 5
# "answer is b", "The correct answer is **C**": any case, letters A-D only (as the regex in VLMEvalKit).
_ANSWER_IS = re.compile(r"(?:correct\s+)?answer\s+is\s+\**([ABCD])\**", re.IGNORECASE)


def _letter_from_words(text: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_option``: refusals → "Z"; exactly one option letter among the words (after
    ``.()[],:;!*#{}`` become spaces) *and* among the last few words → that letter; no letter but a lone "Z" → "Z";
    failing those, "answer is X" (case-insensitive, X in A-D and an option of the row)."""
    if _API_FAILURE in text:
        return None
    if any(r in text for r in _REFUSALS):
        return "Z"
    mod = text
    for ch in _OPTION_SEPARATORS:
        mod = mod.replace(ch, " ")
    words = mod.split()
    present = [c for c in choices if c in words]
    if len(present) == 1:
        letter = present[0]
        if words.index(letter) > len(words) - LETTER_WINDOW:
            return letter
    elif not present and "Z" in words:
        return "Z"
    m = _ANSWER_IS.search(text)
    if m and m.group(1).upper() in choices:
        return m.group(1).upper()
    return None


def _letter_from_option_text(text: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_text``: skipped when the answer is longer than twice the options' total length; else
    the one option whose text occurs (case-insensitively) in the answer."""
    low = text.lower()
    if len(low) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    cands = [c for c, opt in choices.items() if str(opt).lower() in low]
    return cands[0] if len(cands) == 1 else None


def infer_option_letter(prediction: str, choices: Mapping[str, str]) -> str | None:
    """The option letter VLMEvalKit's ``can_infer`` reads from free text, or None (then the official pipeline asks
    its LLM judge, see :mod:`eval.mmbench`; without one the answer counts as wrong).

    1. A refusal phrase → "Z" (wrong).
    2. ``.()[],:;!*#{}`` → spaces, split into words. Exactly one of the row's option letters is a word, and its first
       occurrence is among the last words (index > words - 5) → that letter. "B", "(B)", "The answer is B" work; "A
       man holds a red umbrella in the rain today" does not ("A" is the first of 10 words). No letter but a "Z" → "Z".
    3. "answer is X" / "correct answer is **X**", any case, X in A-D → X ("the answer is b" → "B").
    4. Unless the answer is longer than twice the options' total length: the one option whose text is in it.
    """
    text = str(prediction)
    return _letter_from_words(text, choices) or _letter_from_option_text(text, choices)


# ---------------------------------------------------------------------------------------------------------------------
# OCRBench
# ---------------------------------------------------------------------------------------------------------------------
# Source: Yuliang-Liu/MultimodalOCR ``OCRBench/example.py`` (read at f5cbec66817b643f732f11cdc7b3a550963b70dc). A
# question scores 1 when any answer (lowercased, stripped, newlines → spaces) is a substring of the prediction (same
# treatment); HME100k removes every space and newline and keeps case. Questions are taken by position in
# ``OCRBench.json`` (its ``id`` repeats across source datasets).

OCRBENCH_CATEGORIES = [
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
    "Handwritten Mathematical Expression Recognition",
]
OCRBENCH_TEXT_RECOGNITION = OCRBENCH_CATEGORIES[:6]


def ocrbench_match(prediction: str, answers: str | Sequence[str], dataset_name: str) -> int:
    """1 when any answer is contained in the prediction. HME100k: all spaces/newlines removed, case kept; other sets:
    lowercased, stripped, newlines → spaces."""
    if isinstance(answers, str):
        answers = [answers]
    pred = str(prediction)
    if dataset_name == "HME100k":
        p = pred.strip().replace("\n", " ").replace(" ", "")
        return int(any(str(a).strip().replace("\n", " ").replace(" ", "") in p for a in answers))
    p = pred.lower().strip().replace("\n", " ")
    return int(any(str(a).lower().strip().replace("\n", " ") in p for a in answers))


# ---------------------------------------------------------------------------------------------------------------------
# ANLS (DocVQA)
# ---------------------------------------------------------------------------------------------------------------------
# Source: the RRC DocVQA evaluator as carried by QwenLM/Qwen-VL ``eval_mm/infographicsvqa_eval.py`` and
# EvolvingLMMs-Lab/lmms-eval ``lmms_eval/api/metrics.py`` ``anls`` (read at 008ddc83c2b57ccbd1457714c5a54c8f03896e9d),
# and open-compass/VLMEvalKit ``vlmeval/dataset/utils/vqa_eval.py`` ``anls_compute`` + ``hit_calculate`` (read at
# e5266a16515d3a5655e9ffaec06bd260ad86bdad). The edit distance is taken between the normalised strings (stripped,
# lowercased, whitespace runs → one space) but divided by ``max(len(gt.upper()), len(pred.upper()))`` of the *raw*
# strings; the question's score is ``1 - min NL`` and is set to 0 when below 0.5 (exactly 0.5 is kept).
# Note: another stored VLMEvalKit version (0a04a1d23a57c404e93e34a76933095fdd46b3d9) divides by the normalised
# lengths; lmms-eval, Qwen-VL and e5266a1 divide by the raw ones, which is what we follow.


def _anls_norm(s: str) -> str:
    return " ".join(str(s).strip().lower().split())


def anls(prediction: str, gt_answers: Sequence[str], threshold: float = 0.5) -> float:
    """Per-question ANLS as the official evaluator computes it: NL = edit distance of the normalised strings / the
    longer *raw* length (so trailing spaces or a doubled space in the prediction lower NL), minimised over the
    answers; score ``1 - NL``, 0 when below ``threshold`` (a similarity of exactly 0.5 is kept)."""
    raw_pred = str(prediction)
    pred = _anls_norm(raw_pred)
    best_nl = 1.0
    for gt in gt_answers:
        raw_gt = str(gt)
        length = max(len(raw_gt.upper()), len(raw_pred.upper()))
        nl = 0.0 if length == 0 else levenshtein(_anls_norm(raw_gt), pred) / length
        best_nl = min(best_nl, nl)
    score = 1.0 - best_nl
    return score if score >= threshold else 0.0


# ---------------------------------------------------------------------------------------------------------------------
# ChartQA relaxed accuracy
# ---------------------------------------------------------------------------------------------------------------------


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = 0.05) -> bool:
    """Numbers: right when ``|pred - target| / |target| <= 5 %`` ("12%" is read as 0.12). Otherwise (non-numeric, or a
    target of 0) a case-insensitive exact match. Surrounding whitespace is ignored."""
    pred = str(prediction).strip()
    tgt = str(target).strip()
    p, t = _to_float(pred), _to_float(tgt)
    if p is not None and t:
        return abs(p - t) / abs(t) <= max_relative_change
    return pred.lower() == tgt.lower()
