"""Edit distance and reading scores shared by the evaluation suite, the quickstart and the OCR benchmark (CER, ANLS)."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Sequence


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit costs for insertion, deletion and substitution."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def reading_scores(pairs: Iterable[tuple[str, str]], distance: Callable[[str, str], int] = levenshtein) -> dict:
    """Exact match and character error rate (edits / reference characters, all pairs pooled) over
    (prediction, reference) pairs; `distance` lets a caller pass a faster edit distance."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("reading_scores needs at least one (prediction, reference) pair")
    characters = sum(len(reference) for _, reference in pairs)
    return {
        "n": len(pairs),
        "exact_match": sum(prediction == reference for prediction, reference in pairs) / len(pairs),
        "cer": sum(distance(prediction, reference) for prediction, reference in pairs) / max(characters, 1),
    }


def rows_by_language(rows: Sequence[dict], languages: Sequence[str]) -> dict[str, list[dict]]:
    """Rows grouped by their "language" key, in the order of `languages`, then "all"; empty groups left out."""
    groups = defaultdict(list)
    for row in rows:
        groups[row["language"]].append(row)
    ordered = {language: groups[language] for language in languages if groups.get(language)}
    if rows:
        ordered["all"] = list(rows)
    return ordered
