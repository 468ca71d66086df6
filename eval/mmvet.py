"""MM-Vet: the official GPT grader protocol (few-shot correctness prompt, scores 0.0-1.0), per-capability and total
scores, through any OpenAI-compatible chat-completions endpoint; and always the submission JSON the official
evaluator takes (``{"v1_0": "answer", ...}``).

Local layout (the official ``mm-vet.zip``)::

    DATA/mm-vet.json      {"v1_0": {"imagename": "v1_0.png", "question": ..., "answer": ..., "capability": [...]}}
    DATA/images/v1_0.png

``--data`` may also be the json file, or a Hub dataset id (default ``lmms-lab/MMVet``, split ``test``).
The prompt is the question alone in both styles (LLaVA's ``llava-mm-vet.jsonl`` has no suffix).

Grader configuration (environment):
    OPENAI_API_KEY       bearer token (optional for local servers)
    OPENAI_BASE_URL      e.g. ``https://api.openai.com/v1`` (the default when only the key is set) or a local server
    MMVET_GRADER_MODEL   default ``gpt-4-0613`` (the official grader)
With neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` set, no grading happens: the run says so and writes
``mmvet_submission.json`` for the official evaluator / leaderboard. Grader answers are cached in
``mmvet_grader_cache.json`` (keyed by grader model + prompt), so re-scoring costs no calls.

Grading follows the official evaluator: ``max_tokens=3``, temperature 0; the first word of the reply must parse as a
float in [0, 1]; otherwise the prompt is re-sent with "Predict the correctness of the answer (digit): " appended, the
temperature rising by 0.5 after each retry, up to 5 retries, then 0.0. One grading run (the official default; the paper
averaged 5). Plain HTTP through ``requests``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

from .common import (
    Sample,
    TaskResult,
    find_file,
    hub_rows,
    image_store,
    is_hub_dataset_id,
    load_hub_dataset,
    read_json,
    resolve_image,
    write_json,
)


NAME = "mmvet"
MAX_NEW_TOKENS = 1024  # LLaVA's model_vqa default, open-ended answers
HUB_DEFAULT = ("lmms-lab/MMVet", None, "test")
DEFAULT_GRADER_MODEL = "gpt-4-0613"
CAPABILITIES = ["rec", "ocr", "know", "gen", "spat", "math"]
logger = logging.getLogger("eval.mmvet")

_MEME_GT = (
    "This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. "
    "Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered "
    "in ice and snow. The meme is saying that the person has trust issues because the names of these "
    "countries do not accurately represent their landscapes."
)
_FEW_SHOT = [
    ("What is x in the equation?", "-1 <AND> -5", "x = 3", "0.0"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -1", "0.5"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -5", "0.5"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -5 or 5", "0.5"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -1 or x = -5", "1.0"),
    (
        "Can you explain this meme?",
        _MEME_GT,
        "The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy "
        "and Greenland isn't very green.",
        "0.4",
    ),
    (
        "Can you explain this meme?",
        _MEME_GT,
        "The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite "
        "its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I "
        "have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The "
        "humor in this meme is derived from the unexpected contrast between the names of the countries and their actual "
        "physical characteristics.",
        "1.0",
    ),
]
GRADER_INSTRUCTION = (
    "Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in "
    "the ground truth means it is totally right only when all elements in the ground truth are present in the "
    "prediction, and <OR> means it is totally right when any one element in the ground truth is present in the "
    "prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 "
    "(totally right). Just complete the last space of the correctness score."
)
GRADER_PREAMBLE = (
    GRADER_INSTRUCTION
    + "\n\nQuestion | Ground truth | Prediction | Correctness\n"
    + "--- | --- | --- | ---\n"
    + "".join(" | ".join(row) + "\n" for row in _FEW_SHOT)
)
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
MAX_RETRIES = 5


def build_grader_prompt(question: str, answer: str, prediction: str) -> str:
    """The official layout: the few-shot table, a blank line, then ``question | gt | prediction | `` for the grader
    to complete (``<AND>``/``<OR>`` in the ground truth padded with spaces)."""
    gt = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADER_PREAMBLE + "\n" + " | ".join([question, gt, prediction, ""])


def parse_grade(content: str) -> float | None:
    try:
        value = float(str(content).split(" ")[0].strip())
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


class GraderError(RuntimeError):
    pass


class OpenAICompatibleGrader:
    """Minimal chat-completions client with retries and a JSON cache: the one OpenAI-compatible client of ``eval/``
    (MM-Vet's grader, MMBench's judge)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        cache_path: Path | None = None,
        timeout: float = 60.0,
        http_retries: int = 5,
        retry_sleep: float = 1.0,
        max_tokens: int = 3,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_tokens = max_tokens
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self.http_retries = http_retries
        self.retry_sleep = retry_sleep
        self.cache_path = cache_path
        self.cache: dict = {}
        if cache_path is not None and Path(cache_path).is_file():
            self.cache = read_json(cache_path)
        self.calls = 0

    @classmethod
    def from_env(cls, cache_path: Path | None = None, **kwargs) -> "OpenAICompatibleGrader | None":
        key = os.environ.get("OPENAI_API_KEY") or None
        base = os.environ.get("OPENAI_BASE_URL") or None
        if key is None and base is None:
            return None
        model = os.environ.get("MMVET_GRADER_MODEL") or DEFAULT_GRADER_MODEL
        return cls(base or "https://api.openai.com/v1", key, model, cache_path, **kwargs)

    def _chat(self, prompt: str, temperature: float) -> str:
        import requests

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": temperature,
        }
        last_err = None
        for attempt in range(self.http_retries):
            try:
                self.calls += 1
                r = requests.post(self.url, headers=headers, json=body, timeout=self.timeout)
                if r.status_code == 200:
                    return r.json()["choices"][0]["message"]["content"] or ""
                last_err = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code in (400, 401, 403, 404):
                    break  # not worth retrying
            except (requests.RequestException, KeyError, ValueError) as e:  # connection error, bad JSON
                last_err = repr(e)
            if attempt + 1 < self.http_retries:
                time.sleep(self.retry_sleep * (2**attempt))
        raise GraderError(f"grader endpoint {self.url} failed: {last_err}")

    def _cache_key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.model}\n{prompt}".encode()).hexdigest()

    def ask(self, prompt: str, temperature: float = 0.0, attempt: int = 0) -> str:
        """One chat completion (cached by model, prompt and ``attempt``, so a retry is a new call). Used by the
        MMBench judge; MM-Vet grading goes through :meth:`grade`."""
        key = self._cache_key(f"{prompt}\n#attempt={attempt}")
        if key in self.cache:
            return self.cache[key]["content"]
        content = self._chat(prompt, temperature)
        self.cache[key] = {"content": content, "model": self.model}
        if self.cache_path is not None:
            write_json(self.cache_path, self.cache)
        return content

    def grade(self, question: str, answer: str, prediction: str) -> dict:
        prompt = build_grader_prompt(question, answer, prediction)
        key = self._cache_key(prompt)
        if key in self.cache:
            return dict(self.cache[key], cached=True)
        temperature = 0.0
        content = self._chat(prompt, temperature)
        score = parse_grade(content)
        tries = 0
        while score is None and tries < MAX_RETRIES:
            content = self._chat(prompt + RETRY_SUFFIX, temperature)
            tries += 1
            temperature += 0.5
            score = parse_grade(content)
        result = {"score": 0.0 if score is None else score, "content": content, "model": self.model, "retries": tries}
        self.cache[key] = result
        if self.cache_path is not None:
            write_json(self.cache_path, self.cache)
        return dict(result, cached=False)


def load_samples(data: str, prompt_style: str = "plain", opts: dict | None = None) -> list[Sample]:
    opts = opts or {}
    if is_hub_dataset_id(data):
        ds = load_hub_dataset(data, opts.get("hub_config"), opts.get("split") or HUB_DEFAULT[2])
        store = image_store(opts)
        samples = []
        for i, row in hub_rows(ds):
            caps = row["capability"]
            caps = caps.split(",") if isinstance(caps, str) else list(caps)
            samples.append(
                Sample(
                    question_id=row["question_id"],
                    prompt=row["question"],
                    image=store.from_hub(row["question_id"], ds, i),
                    meta={"question": row["question"], "answer": row["answer"], "capability": caps},
                )
            )
        return samples
    root = Path(data)
    meta_path = find_file(root, ["mm-vet.json", "mm-vet/mm-vet.json"], "MM-Vet")
    base = meta_path.parent
    bases = [base / "images", base]
    samples = []
    for qid, v in read_json(meta_path).items():
        name = v.get("imagename", f"{qid}.png")
        samples.append(
            Sample(
                question_id=qid,
                prompt=v["question"],
                image=(lambda n=name: str(resolve_image(n, bases))),
                meta={"question": v["question"], "answer": v["answer"], "capability": list(v["capability"])},
            )
        )
    return samples


def score(samples: list[Sample], preds: dict[str, str], out_dir: Path, opts: dict | None = None) -> TaskResult:
    opts = opts or {}
    out_dir = Path(out_dir)
    submission = {str(s.question_id): preds.get(s.key, "") for s in samples}
    write_json(out_dir / "mmvet_submission.json", submission)
    n_missing = sum(1 for s in samples if s.key not in preds)
    grader = opts.get("grader")
    if grader is None:
        grader = OpenAICompatibleGrader.from_env(cache_path=out_dir / "mmvet_grader_cache.json")
    if grader is None:
        msg = (
            "MM-Vet: no grader endpoint configured (set OPENAI_API_KEY and/or OPENAI_BASE_URL, optionally "
            "MMVET_GRADER_MODEL); not graded. mmvet_submission.json is ready for the official evaluator."
        )
        logger.warning(msg)
        print(msg)
        return TaskResult(
            task=NAME,
            headline={"total": None, "questions": len(samples)},
            details={"graded": False, "submission": "mmvet_submission.json"},
            notes=[msg],
        )

    from tqdm import tqdm

    grades = {}
    for s in tqdm(samples, desc="grading MM-Vet", disable=not opts.get("progress", True)):
        if s.key not in preds:
            grades[s.key] = {"score": 0.0, "content": None, "missing": True}
            continue
        grades[s.key] = grader.grade(s.meta["question"], s.meta["answer"], preds[s.key])
    write_json(out_dir / "mmvet_grades.json", grades)

    cap_scores = defaultdict(list)
    combo_scores = defaultdict(list)
    for s in samples:
        g = grades[s.key]["score"]
        for c in set(s.meta["capability"]):
            cap_scores[c].append(g)
        combo_scores["_".join(sorted(set(s.meta["capability"])))].append(g)
    total = 100.0 * sum(grades[s.key]["score"] for s in samples) / len(samples) if samples else None
    caps_order = [c for c in CAPABILITIES if c in cap_scores] + sorted(set(cap_scores) - set(CAPABILITIES))
    per_cap = {c: 100.0 * sum(cap_scores[c]) / len(cap_scores[c]) for c in caps_order}
    per_combo = {k: 100.0 * sum(v) / len(v) for k, v in sorted(combo_scores.items(), key=lambda kv: -len(kv[1]))}
    headline = {c: per_cap[c] for c in caps_order}
    headline["total"] = total
    notes = [f"graded by {grader.model} ({getattr(grader, 'calls', 0)} calls, the rest from the cache)"]
    if n_missing:
        notes.append(f"{n_missing} questions have no prediction and score 0")
    return TaskResult(
        task=NAME,
        headline=headline,
        sections=[
            (
                "Capability integrations",
                ["capabilities", "score", "questions"],
                [[k, v, len(combo_scores[k])] for k, v in per_combo.items()],
            )
        ],
        details={
            "graded": True,
            "grader_model": grader.model,
            "capabilities": per_cap,
            "capability_integrations": per_combo,
            "submission": "mmvet_submission.json",
            "grades": "mmvet_grades.json",
        },
        notes=notes,
    )
