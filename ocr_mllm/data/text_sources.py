"""Text sources for synthetic OCR data: word lists from well-kept packages plus numbers, dates, prices and codes.

* English words: ``wordfreq.top_n_list("en", ...)`` (alphabetic words only).
* Chinese words: ``wordfreq.top_n_list("zh", ...)`` plus jieba's dictionary (``jieba/dict.txt``), restricted to
  Simplified words made of common characters (characters seen in wordfreq's Chinese list) that every installed
  Simplified (resp. Traditional) face can render.
* Traditional Chinese: each Simplified word converted with OpenCC ``s2tw`` (``opencc-python-reimplemented``;
  Traditional characters in their Taiwan-standard forms).

Each vocabulary is split into a *train* pool and a *held-out* pool by a stable hash of the (Simplified) word, so that
the held-out split is made of words that never occur in the training split.
Only small structural templates (key names of a receipt, date formats, ...) are written here by hand.
"""

from __future__ import annotations

import calendar
import functools
import json
import os
import random
import re
import zlib
from typing import FrozenSet, List, Optional, Sequence, Tuple


LANGUAGES = ("en", "zh-Hans", "zh-Hant")

_CJK_WORD = re.compile(r"[\u4e00-\u9fff]+")
_EN_WORD = re.compile(r"[a-z]{2,12}")

EN_VOCAB_SIZE = 30000
ZH_WORDFREQ_SIZE = 30000
ZH_JIEBA_SIZE = 40000

HELDOUT_POOL_MODULUS = 10  # 1 word in 10 goes to the held-out pool


def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def in_heldout_pool(word: str) -> bool:
    return stable_hash(word) % HELDOUT_POOL_MODULUS == 0


@functools.lru_cache(maxsize=None)
def _opencc(config: str):
    try:
        import opencc
    except ImportError as e:  # pragma: no cover
        raise ImportError("Traditional Chinese needs OpenCC: pip install opencc-python-reimplemented") from e
    return opencc.OpenCC(config)


# OpenCC "s2tw": Simplified → Traditional with Taiwan-standard character variants (為/裡/吃 rather than s2t's 爲/裏/喫).
TRADITIONAL_CONFIG = "s2tw"


def to_traditional(text: str) -> str:
    """Simplified → Traditional Chinese with OpenCC (``s2tw``); Chinese quotes become 「」."""
    return _opencc(TRADITIONAL_CONFIG).convert(text).replace("“", "「").replace("”", "」")


def localize(text: str, language: str) -> str:
    """Convert a Simplified Chinese template to the target Chinese variant (no-op for Simplified/English)."""
    return to_traditional(text) if language == "zh-Hant" else text


WORD_LISTS_ENV = "OCR_MLLM_WORD_LISTS"


@functools.lru_cache(maxsize=None)
def _word_lists_snapshot() -> Optional[dict]:
    """The word lists written by :func:`write_word_lists`, when ``$OCR_MLLM_WORD_LISTS`` names such a file: a machine
    without wordfreq and jieba (a GPU box with no package index) then generates the same text."""
    path = os.environ.get(WORD_LISTS_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            snapshot = json.load(handle)
    except (OSError, ValueError) as error:
        raise RuntimeError(f"{WORD_LISTS_ENV}={path}: cannot read the word lists ({error})") from error
    missing = {"english_words", "simplified_chinese_words", "chinese_character_ranking"} - set(snapshot)
    if missing:
        raise RuntimeError(f"{WORD_LISTS_ENV}={path}: missing {sorted(missing)}")
    return snapshot


def write_word_lists(path: str) -> None:
    """Write the word lists (English words, Simplified words, Chinese characters by frequency) the generator draws
    from, for machines without wordfreq / jieba (``$OCR_MLLM_WORD_LISTS``)."""
    snapshot = {
        "english_words": list(english_words()),
        "simplified_chinese_words": list(simplified_chinese_words()),
        "chinese_character_ranking": list(chinese_character_ranking()),
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(snapshot, handle, ensure_ascii=False)


@functools.lru_cache(maxsize=None)
def english_words() -> Tuple[str, ...]:
    if _word_lists_snapshot() is not None:
        return tuple(_word_lists_snapshot()["english_words"])
    import wordfreq

    words = [w for w in wordfreq.top_n_list("en", EN_VOCAB_SIZE) if _EN_WORD.fullmatch(w)]
    return tuple(dict.fromkeys(words))


@functools.lru_cache(maxsize=None)
def _jieba_dict_words() -> Tuple[str, ...]:
    import jieba

    path = os.path.join(os.path.dirname(jieba.__file__), "dict.txt")
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            word, freq = parts[0], parts[1]
            if 1 <= len(word) <= 4 and _CJK_WORD.fullmatch(word) and freq.isdigit():
                entries.append((-int(freq), word))
    entries.sort()
    return tuple(w for _, w in entries[:ZH_JIEBA_SIZE])


@functools.lru_cache(maxsize=None)
def simplified_chinese_words() -> Tuple[str, ...]:
    """Simplified Chinese words (wordfreq first, by frequency, then jieba's dictionary), common characters only."""
    if _word_lists_snapshot() is not None:
        return tuple(_word_lists_snapshot()["simplified_chinese_words"])
    import wordfreq

    wf = [w for w in wordfreq.top_n_list("zh", ZH_WORDFREQ_SIZE) if _CJK_WORD.fullmatch(w) and len(w) <= 4]
    common_chars = set("".join(wf))
    t2s = _opencc("t2s")
    out = []
    for w in list(wf) + list(_jieba_dict_words()):
        if all(c in common_chars for c in w) and t2s.convert(w) == w:
            out.append(w)
    return tuple(dict.fromkeys(out))


@functools.lru_cache(maxsize=None)
def frequent_chinese_characters(n: int) -> FrozenSet[str]:
    """The ``n`` most frequent Simplified Chinese characters."""
    return frozenset(chinese_character_ranking()[:n])


@functools.lru_cache(maxsize=None)
def chinese_character_ranking() -> Tuple[str, ...]:
    """Simplified Chinese characters, most frequent first: each character scores the summed wordfreq frequency of
    the words it occurs in."""
    if _word_lists_snapshot() is not None:
        return tuple(_word_lists_snapshot()["chinese_character_ranking"])
    import wordfreq

    score: dict = {}
    for word in wordfreq.top_n_list("zh", ZH_WORDFREQ_SIZE):
        if _CJK_WORD.fullmatch(word):
            frequency = wordfreq.word_frequency(word, "zh")
            for char in word:
                score[char] = score.get(char, 0.0) + frequency
    return tuple(sorted(score, key=lambda c: (-score[c], c)))


@functools.lru_cache(maxsize=None)
def vocabulary(
    language: str, codepoints: Optional[FrozenSet[int]] = None, cjk_characters: Optional[int] = None
) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(train pool, held-out pool) of words for ``language``, keeping words every face can render and — with
    ``cjk_characters`` — Chinese words made of the ``cjk_characters`` most frequent characters only (a small character
    set a short training run can learn; Traditional words are kept when their Simplified form qualifies)."""
    if language == "en":
        pairs = [(w, w) for w in english_words()]
    elif language == "zh-Hans":
        pairs = [(w, w) for w in simplified_chinese_words()]
    elif language == "zh-Hant":
        pairs = [(w, to_traditional(w)) for w in simplified_chinese_words()]
    else:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    allowed = frequent_chinese_characters(cjk_characters) if cjk_characters and language != "en" else None
    train, heldout = [], []
    for key, word in pairs:
        if codepoints is not None and not all(ord(c) in codepoints for c in word):
            continue
        if allowed is not None and not all(c in allowed for c in key):
            continue
        (heldout if in_heldout_pool(key) else train).append(word)
    train = list(dict.fromkeys(train))
    heldout_set = set(train)
    heldout = [w for w in dict.fromkeys(heldout) if w not in heldout_set]
    if len(train) < 100 or len(heldout) < 10:
        raise RuntimeError(
            f"vocabulary for {language} is too small ({len(train)} train / {len(heldout)} held-out words)"
        )
    return tuple(train), tuple(heldout)


# --------------------------------------------------------------------------------------------------------------------
# Small structural templates.

CURRENCIES = {"en": ("$", "€", "£"), "zh-Hans": ("¥", "￥"), "zh-Hant": ("NT$", "$")}
ZH_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段雷钱汤尹黎易常武乔贺赖龚文"
EN_STREET = ("Street", "Road", "Avenue", "Lane", "Drive", "Way")
ZH_STREET = ("路", "街", "大道")
EN_DOMAINS = ("com", "org", "net", "io")
ZH_MIXED_FIELDS = (  # (Chinese key, English key, value kind)
    ("发票号码", "Invoice No.", "code"),
    ("金额", "Amount", "price"),
    ("日期", "Date", "date"),
    ("电话", "Tel", "phone"),
    ("订单号", "Order No.", "code"),
    ("合计", "Total", "price"),
    ("编号", "ID", "code"),
    ("时间", "Time", "time"),
)
CODE_PATTERNS = ("LLL-DDDD", "LL-DDDDDD", "DDDDDDDD", "LDLD-DDDD", "LLLDDDDD", "DDDD-DDDD-DDDD", "LL DDD DDD", "DDDDD")
PHONE_PATTERNS = {
    "en": ("(DDD) DDD-DDDD", "+1 DDD-DDD-DDDD", "DDD-DDD-DDDD", "+44 DDDD DDDDDD"),
    "zh-Hans": ("1DD-DDDD-DDDD", "0DD-DDDDDDDD", "1DDDDDDDDDD", "+86 1DD DDDD DDDD"),
    "zh-Hant": ("09DD-DDD-DDD", "(0D) DDDD-DDDD", "+886 9DD DDD DDD", "0D-DDDD-DDDD"),
}
EN_MONTHS = tuple(calendar.month_name[i] for i in range(1, 13))  # English in the default C locale
EN_MONTHS_ABBR = tuple(m[:3] for m in EN_MONTHS)


def fill_pattern(rng: random.Random, pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "D":
            out.append(str(rng.randint(0, 9)))
        elif ch == "L":
            out.append(chr(ord("A") + rng.randint(0, 25)))
        else:
            out.append(ch)
    return "".join(out)


class TextSource:
    """Random text for one language, drawn from one word pool ("train" or "heldout")."""

    def __init__(
        self,
        language: str,
        pool: str = "train",
        codepoints: Optional[FrozenSet[int]] = None,
        cjk_characters: Optional[int] = None,
    ):
        if language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
        if pool not in ("train", "heldout"):
            raise ValueError(f"pool must be 'train' or 'heldout', got {pool!r}")
        self.language = language
        self.pool = pool
        train, heldout = vocabulary(language, codepoints, cjk_characters)
        self.words: Sequence[str] = train if pool == "train" else heldout
        self.is_zh = language != "en"

    # ---------------------------------------------------------------- words
    def word(self, rng: random.Random) -> str:
        n = len(self.words)
        if rng.random() < 0.7:  # Zipf-like: P(rank) ~ 1/rank
            idx = int(n ** rng.random()) - 1
        else:
            idx = rng.randrange(n)
        return self.words[min(max(idx, 0), n - 1)]

    def content_word(self, rng: random.Random, max_chars: int = 12, min_chars: Optional[int] = None) -> str:
        """A word drawn uniformly from the frequent-but-not-function-word range (labels, headers, item names)."""
        lo = 2 if self.is_zh else 3
        min_chars = lo if min_chars is None else min_chars
        n = len(self.words)
        start, stop = min(n - 1, n // 200), min(n, 15000)
        for _ in range(1000):
            w = self.words[rng.randrange(start, max(start + 1, stop))]
            if min_chars <= len(w) <= max_chars:
                return w
        raise RuntimeError(f"no {self.language} word of {min_chars}..{max_chars} characters")

    def distinct_words(
        self, rng: random.Random, k: int, max_chars: int = 12, min_chars: Optional[int] = None
    ) -> List[str]:
        """``k`` different content words (capitalised for English)."""
        out: List[str] = []
        for _ in range(k * 50):
            w = self.content_word(rng, max_chars, min_chars)
            w = w if self.is_zh else w[:1].upper() + w[1:]
            if w not in out:
                out.append(w)
            if len(out) == k:
                return out
        raise RuntimeError("could not draw enough distinct words")

    def phrase(self, rng: random.Random, max_chars: int, min_chars: int = 1, punctuation: bool = True) -> str:
        """Words joined like a sentence fragment, at most ``max_chars`` characters."""
        target = rng.randint(max(1, min_chars), max(max_chars, min_chars))
        sep = "" if self.is_zh else " "
        out = ""
        for _ in range(64):
            w = self.word(rng)
            cand = out + (sep if out else "") + w
            if self.is_zh and out and punctuation and rng.random() < 0.12:
                cand = out + rng.choice("，、") + w
            if len(cand) > max_chars:
                if out:
                    break
                continue
            out = cand
            if len(out) >= target:
                break
        if not out:
            out = self.words[0][:max_chars]
        if not self.is_zh:
            r = rng.random()
            if r < 0.55:
                out = out[:1].upper() + out[1:]
            elif r < 0.7:
                out = " ".join(x[:1].upper() + x[1:] for x in out.split(" "))
            elif r < 0.75:
                out = out.upper()
        if punctuation and len(out) < max_chars and rng.random() < 0.3:
            out += rng.choice("。！？") if self.is_zh else rng.choice(".!?:")
        return out

    # ---------------------------------------------------------------- values
    def integer(self, rng: random.Random) -> str:
        n = int(10 ** rng.uniform(0, 6))
        return f"{n:,}" if n >= 1000 and rng.random() < 0.5 else str(n)

    def number(self, rng: random.Random) -> str:
        r = rng.random()
        if r < 0.4:
            return self.integer(rng)
        if r < 0.7:
            return f"{rng.uniform(0, 1000):.2f}"
        if r < 0.85:
            return f"{rng.uniform(0, 100):.1f}%"
        return f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"

    def date(self, rng: random.Random) -> str:
        y, m, d = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
        if self.is_zh:
            fmt = rng.randrange(4)
            if fmt == 0:
                return f"{y}年{m}月{d}日"
            if fmt == 1:
                return f"{y}-{m:02d}-{d:02d}"
            if fmt == 2:
                return f"{y}/{m:02d}/{d:02d}"
            return f"{y}.{m:02d}.{d:02d}"
        fmt = rng.randrange(5)
        if fmt == 0:
            return f"{y}-{m:02d}-{d:02d}"
        if fmt == 1:
            return f"{m:02d}/{d:02d}/{y}"
        if fmt == 2:
            return f"{EN_MONTHS[m - 1]} {d}, {y}"
        if fmt == 3:
            return f"{d} {EN_MONTHS_ABBR[m - 1]} {y}"
        return f"{d:02d}.{m:02d}.{y}"

    def time(self, rng: random.Random) -> str:
        h, m = rng.randint(0, 23), rng.randint(0, 59)
        if rng.random() < 0.3:
            return f"{h:02d}:{m:02d}:{rng.randint(0, 59):02d}"
        return f"{h:02d}:{m:02d}"

    def currency(self, rng: random.Random) -> str:
        return rng.choice(CURRENCIES[self.language])

    def format_price(self, cents: int, currency: str) -> str:
        value = f"{cents // 100:,}.{cents % 100:02d}" if cents >= 100000 else f"{cents // 100}.{cents % 100:02d}"
        return f"{currency}{value}"

    def price_cents(self, rng: random.Random, lo: float = 0.5, hi: float = 2000.0) -> int:
        return int(round(10 ** rng.uniform(_log10(lo), _log10(hi)) * 100))

    def price(self, rng: random.Random) -> str:
        cents = self.price_cents(rng)
        if self.is_zh and rng.random() < 0.25:
            return f"{cents // 100}.{cents % 100:02d}" + localize("元", self.language)
        return self.format_price(cents, self.currency(rng))

    def code(self, rng: random.Random) -> str:
        return fill_pattern(rng, rng.choice(CODE_PATTERNS))

    def phone(self, rng: random.Random) -> str:
        return fill_pattern(rng, rng.choice(PHONE_PATTERNS[self.language]))

    def value(self, rng: random.Random, kind: str) -> str:
        return {
            "code": self.code,
            "price": self.price,
            "date": self.date,
            "phone": self.phone,
            "time": self.time,
            "number": self.number,
            "integer": self.integer,
            "word": self.word,
        }[kind](rng)

    # ---------------------------------------------------------------- entities
    def person_name(self, rng: random.Random) -> str:
        if self.is_zh:
            chars = "".join(self.word(rng) for _ in range(2))
            given = chars[: rng.randint(1, 2)]
            return localize(rng.choice(ZH_SURNAMES), self.language) + given
        a, b = self.distinct_words(rng, 2, max_chars=9)
        return f"{a} {b}"

    def address(self, rng: random.Random) -> str:
        if self.is_zh:
            street = self.word(rng) + localize(rng.choice(ZH_STREET), self.language)
            return f"{street}{rng.randint(1, 999)}" + localize("号", self.language)
        (w,) = self.distinct_words(rng, 1, max_chars=10)
        return f"{rng.randint(1, 9999)} {w} {rng.choice(EN_STREET)}"

    def email(self, rng: random.Random) -> str:
        en = TextSource("en", self.pool) if self.is_zh else self
        a, b = (en.word(rng) for _ in range(2))
        return f"{a}.{b}@{en.word(rng)}.{rng.choice(EN_DOMAINS)}"

    def mixed(self, rng: random.Random, max_chars: int) -> str:
        """A mixed-script line, e.g. ``发票号码 Invoice No. 12345 金额 ¥678.90`` (Chinese) or words with numbers (English)."""
        if self.is_zh:
            parts = []
            for zh_key, en_key, kind in rng.sample(ZH_MIXED_FIELDS, rng.randint(1, 2)):
                key = localize(zh_key, self.language)
                if rng.random() < 0.6:
                    key = f"{key} {en_key}"
                parts.append(f"{key} {self.value(rng, kind)}")
            if rng.random() < 0.3:
                en = TextSource("en", self.pool)
                parts = [self.word(rng) + " " + en.word(rng).capitalize()]
                if rng.random() < 0.5:
                    parts.append(self.value(rng, rng.choice(("integer", "code"))))
            return " ".join(parts)
        kind = rng.choice(("code", "date", "integer", "price", "time"))
        phrase = self.phrase(rng, max(4, max_chars // 2), punctuation=False)
        return f"{phrase} {self.value(rng, kind)}" if rng.random() < 0.6 else f"{self.value(rng, kind)} {phrase}"

    def line(self, rng: random.Random, max_chars: int) -> str:
        """One line of text of at most ``max_chars`` characters (words, numbers, dates, prices, codes, mixed)."""
        for _ in range(30):
            r = rng.random()
            if r < 0.5:
                text = self.phrase(rng, max_chars)
            elif r < 0.75:
                text = self.value(rng, rng.choice(("number", "date", "price", "code", "phone", "time")))
            else:
                text = self.mixed(rng, max_chars)
            text = text.strip()
            if text and len(text) <= max_chars:
                return text
        return self.phrase(rng, max_chars)


def _log10(x: float) -> float:
    import math

    return math.log10(x)
