"""Tests for the synthetic OCR data generator (ocr_mllm/data/synthetic.py and scripts/make_synthetic_data.py).

Needs the Debian fonts fonts-noto-cjk, fonts-wqy-zenhei and fonts-dejavu (the generator fails with a message naming
them otherwise).
"""

import copy
import hashlib
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from ocr_mllm.data import fonts as fonts_mod
from ocr_mllm.data import synthetic as S
from ocr_mllm.data.loading import llava_to_messages
from ocr_mllm.data.render import TextOp, map_box, render


N = 54  # 3 x (6 tasks x 3 languages)
ARGS = dict(num_samples=N, seed=11, heldout_fraction=0.2)
REGION = re.compile(r"\[(\d+), (\d+), (\d+), (\d+)\]")


def _tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _load(d, split):
    with open(os.path.join(d, f"{split}.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("synth_a"))
    S.generate_dataset(d, S.GeneratorConfig(**ARGS), workers=1, progress=False)
    return d


@pytest.fixture(scope="module")
def gen_dir_parallel(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("synth_b"))
    S.generate_dataset(d, S.GeneratorConfig(**ARGS), workers=2, progress=False)
    return d


def test_same_seed_same_bytes_whatever_the_workers(gen_dir, gen_dir_parallel):
    a, b = _tree(gen_dir), _tree(gen_dir_parallel)
    assert any(k.startswith("images/") for k in a)
    assert any(k.startswith("hf/") for k in a)
    assert a.keys() == b.keys()
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, f"files differ between workers=1 and workers=2: {diff[:5]}"


def test_seed_changes_the_data():
    def texts(seed):
        cfg = S.GeneratorConfig(num_samples=12, seed=seed, tasks=("line",), heldout_fraction=0.0)
        return [s.text for s in S.iter_specs(cfg)]

    assert texts(1) == texts(1)
    assert texts(1) != texts(2)


def test_llava_json_format(gen_dir):
    meta = json.load(open(os.path.join(gen_dir, "meta.json"), encoding="utf-8"))
    ids = set()
    for split in S.SPLITS:
        records = _load(gen_dir, split)
        assert len(records) == meta["counts"][split]
        for r in records:
            assert r["id"] not in ids
            ids.add(r["id"])
            assert r["image"].startswith("images/") and not os.path.isabs(r["image"])
            with Image.open(os.path.join(gen_dir, r["image"])) as im:
                assert im.size == (r["width"], r["height"])
            conv = r["conversations"]
            assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2) and len(conv) >= 2
            assert conv[0]["value"].startswith("<image>\n")
            assert sum(t["value"].count("<image>") for t in conv) == 1
            assert all(t["value"].strip() for t in conv)
            assert len(r["qa_types"]) == len(conv) // 2 and set(r["qa_types"]) <= set(S.QA_TYPES)
            assert r["language"] in S.LANGUAGES and r["task"] in S.TASKS
            assert r["text"].strip()
    assert meta["counts"] == {"train": N - round(N * 0.2), "heldout": round(N * 0.2)}


def test_every_task_and_language_appears(gen_dir):
    train = _load(gen_dir, "train")
    assert {(r["task"], r["language"]) for r in train} == {(t, l) for t in S.TASKS for l in S.LANGUAGES}
    assert {r["language"] for r in _load(gen_dir, "heldout")} == set(S.LANGUAGES)


def test_every_question_type_appears():
    cfg = S.GeneratorConfig(num_samples=180, seed=3, heldout_fraction=0.0)
    seen = {qa.qa_type for spec in S.iter_specs(cfg) for qa in spec.qas}
    assert seen == set(S.QA_TYPES)


def _has_cjk(s):
    return any("\u4e00" <= c <= "\u9fff" for c in s)


def test_questions_in_the_image_language(gen_dir):
    records = _load(gen_dir, "train") + _load(gen_dir, "heldout")
    zh_questions = [r["conversations"][0]["value"] for r in records if r["language"] != "en"]
    en_questions = [r["conversations"][0]["value"] for r in records if r["language"] == "en"]
    assert not any(_has_cjk(q) for q in en_questions)
    assert sum(_has_cjk(q) for q in zh_questions) > 0.6 * len(zh_questions)
    # Traditional phrasing for zh-Hant (OpenCC-converted templates), Simplified for zh-Hans.
    hant = " ".join(r["conversations"][0]["value"] for r in records if r["language"] == "zh-Hant")
    hans = " ".join(r["conversations"][0]["value"] for r in records if r["language"] == "zh-Hans")
    assert re.search("[讀圖寫識別轉這張總額單號價錢]", hant)
    assert not re.search("[读图写识别转这张总额单号价钱]", hant)
    assert re.search("[读图写识别转这张总额单号价钱]", hans)
    assert not re.search("[讀圖寫識別轉這張總額單號價錢]", hans)


def test_heldout_texts_never_in_train(gen_dir):
    def units(records):
        out = set()
        for r in records:
            answers = r["conversations"][1::2]
            for qa_type, turn in zip(r["qa_types"], answers):
                if qa_type in ("full_ocr", "read_line", "read_region", "caption"):
                    out.add(turn["value"])
            if r["task"] in ("line", "page"):
                out.update(r["text"].split("\n"))
        return out

    train, heldout = units(_load(gen_dir, "train")), units(_load(gen_dir, "heldout"))
    assert heldout and not (heldout & train)


def test_heldout_redrawn_until_disjoint(monkeypatch):
    """Force collisions (held-out lines drawn from the *training* word pool, very short lines): held-out samples must
    be re-drawn until none of their lines occurs in training."""
    real = S._text_source
    monkeypatch.setattr(S, "_text_source", lambda lang, pool, cjk_characters=None: real(lang, "train", cjk_characters))
    cfg = S.GeneratorConfig(
        num_samples=300,
        seed=0,
        tasks=("line",),
        languages=("en", "zh-Hans"),
        max_chars=4,
        heldout_fraction=0.3,
        augment="none",
    )
    specs = list(S.iter_specs(cfg))
    train = {s.text for s in specs if s.split == "train"}
    heldout = [s for s in specs if s.split == "heldout"]
    assert len(heldout) == 90
    assert sum(s.attempt > 0 for s in heldout) >= 5  # collisions did happen and were re-drawn
    assert not {s.text for s in heldout} & train
    assert all(len(t) <= 4 for t in train | {s.text for s in heldout})


def test_cjk_character_limit():
    """cjk_characters=N: Chinese lines are written with the N most frequent characters (plus the few fixed template
    words: receipt keys, surnames, street suffixes), in both scripts, and the held-out split stays disjoint."""
    from ocr_mllm.data.text_sources import (
        ZH_MIXED_FIELDS,
        ZH_STREET,
        ZH_SURNAMES,
        _opencc,
        frequent_chinese_characters,
    )

    allowed = frequent_chinese_characters(300)
    assert len(allowed) == 300 and {"的", "是", "中"} <= allowed
    templates = set("".join(k for k, _, _ in ZH_MIXED_FIELDS) + ZH_SURNAMES + "".join(ZH_STREET) + "号")
    cfg = S.GeneratorConfig(
        num_samples=160,
        seed=5,
        tasks=("line",),
        languages=("zh-Hans", "zh-Hant"),
        max_chars=12,
        heldout_fraction=0.25,
        augment="none",
        cjk_characters=300,
    )
    specs = list(S.iter_specs(cfg))
    t2s = _opencc("t2s")
    cjk_seen = set()
    for spec in specs:
        text = spec.text if spec.language == "zh-Hans" else t2s.convert(spec.text)
        cjk = {c for c in text if "\u4e00" <= c <= "\u9fff"}
        assert cjk <= allowed | templates, (spec.language, spec.text, cjk - allowed - templates)
        cjk_seen |= cjk
    assert len(cjk_seen & allowed) > 100  # the set is really used, not a handful of characters
    train = {s.text for s in specs if s.split == "train"}
    assert not {s.text for s in specs if s.split == "heldout"} & train
    with pytest.raises(ValueError, match="cjk_characters"):
        S.GeneratorConfig(cjk_characters=10).validate()


def test_text_is_visible_in_every_text_box():
    """Render each spec with and without its text: every text box must hold clearly changed pixels after all
    augmentations (rotation, perspective, blur, noise, JPEG)."""
    cfg = S.GeneratorConfig(num_samples=36, seed=21, heldout_fraction=0.0, augment="full")
    n_ops = 0
    for spec in S.iter_specs(cfg):
        with_text = np.asarray(render(spec.scene).convert("L"), np.int16)
        bare = copy.copy(spec.scene)
        bare.ops = [op for op in spec.scene.ops if not isinstance(op, TextOp)]
        without = np.asarray(render(bare).convert("L"), np.int16)
        diff = np.abs(with_text - without)
        for op in spec.scene.ops:
            if not isinstance(op, TextOp) or not op.text.strip():
                continue
            x0, y0, x1, y1 = map_box(spec.scene.augment.forward, op.box)
            assert x0 >= 0 and y0 >= 0 and x1 <= spec.scene.width and y1 <= spec.scene.height, (spec.id, op.text)
            region = diff[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))]
            assert region.size and region.max() >= 80, (spec.id, op.text)
            assert (region > 40).mean() >= 0.06, (spec.id, op.text, (region > 40).mean())
            n_ops += 1
    assert n_ops > 100


def test_no_missing_glyphs():
    """Every character is drawn with a real glyph, not the font's .notdef box (checked on pixels)."""

    def mask(font, ch):
        m = font.getmask(ch)
        return m.size, bytes(m)

    # The check itself can fail: a CJK character in a Latin-only face renders as .notdef.
    dejavu = [f for f in fonts_mod.discover_faces() if f.family == "DejaVu Sans" and not f.bold]
    if dejavu:
        font = fonts_mod.get_font(dejavu[0], 32)
        assert mask(font, "中") == mask(font, "\U0010fffd")

    cfg = S.GeneratorConfig(num_samples=90, seed=4, heldout_fraction=0.0)
    checked = set()
    for spec in S.iter_specs(cfg):
        for op in spec.scene.ops:
            if not isinstance(op, TextOp):
                continue
            font = fonts_mod.get_font(op.face, 32)
            notdef = mask(font, "\U0010fffd")
            for ch in set(op.text) - {" "}:
                if (op.face, ch) in checked:
                    continue
                checked.add((op.face, ch))
                assert mask(font, ch) != notdef, f"{ch!r} has no glyph in {op.face.name} ({spec.id})"
    assert len(checked) > 300


def test_easy_mode_lines_are_short_clean_and_legible(tmp_path):
    out = str(tmp_path / "easy")
    cfg = S.GeneratorConfig(
        num_samples=30,
        seed=0,
        tasks=("line",),
        max_chars=12,
        augment="none",
        image_size=256,
        heldout_fraction=0.1,
        prompts="fixed",
    )
    S.generate_dataset(out, cfg, workers=1, progress=False, write_hf=False)
    records = _load(out, "train") + _load(out, "heldout")
    assert len(records) == 30 and not os.path.exists(os.path.join(out, "hf"))
    first_q = {l: S.QUESTIONS["full_ocr"]["en" if l == "en" else "zh"][0] for l in S.LANGUAGES}
    for r in records:
        text = r["text"]
        assert r["task"] == "line" and r["qa_types"] == ["full_ocr"]
        assert 1 <= len(text) <= 12 and r["conversations"][1]["value"] == text
        q = r["conversations"][0]["value"][len("<image>\n") :]
        assert q == S.localize(first_q[r["language"]], r["language"])
        g = np.asarray(Image.open(os.path.join(out, r["image"])).convert("L"), np.int16)
        assert g.shape[1] <= 256
        bg = np.median(g)
        ink = np.abs(g - bg) > 60
        assert bg >= 235 and g.min() <= 100, r["id"]  # dark text on a light, clean background
        assert min(g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]) >= 235, r["id"]  # no warp border
        assert 0.02 <= ink.mean() <= 0.4, (r["id"], ink.mean())
        cols = ink.any(axis=0)
        runs = int(cols[0]) + int(np.sum(cols[1:] & ~cols[:-1]))  # separate ink blobs along x
        n_chars = len(text.replace(" ", ""))
        assert runs >= max(1, n_chars // 2), (r["id"], text, runs)
        xs = np.nonzero(cols)[0]
        if n_chars >= 4:  # the text, not the margins, fills most of the line image
            assert (xs[-1] - xs[0]) >= 0.4 * g.shape[1], r["id"]


def test_region_questions_point_at_their_line():
    cfg = S.GeneratorConfig(num_samples=60, seed=8, tasks=("page", "receipt"), heldout_fraction=0.0, augment="none")
    n = 0
    for spec in S.iter_specs(cfg):
        qas = [qa for qa in spec.qas if qa.qa_type == "read_region"]
        if not qas:
            continue
        img, record = S.render_spec(spec)
        q = next(t["value"] for t in record["conversations"] if "[" in t["value"])
        x0, y0, x1, y1 = (int(v) / 1000 for v in REGION.search(q).groups())
        w, h = img.size
        # the box is the keyed text op's box; with augment none it must equal that op's ink box
        op = next(o for o in spec.scene.ops if isinstance(o, TextOp) and o.key == qas[0].box_key)
        assert abs(x0 * w - op.box[0]) <= 1 and abs(y1 * h - op.box[3]) <= 1
        assert op.text in qas[0].answer
        crop = np.asarray(
            img.convert("L").crop((int(x0 * w), int(y0 * h), int(x1 * w) + 1, int(y1 * h) + 1)), np.int16
        )
        assert (np.abs(crop - np.median(np.asarray(img.convert("L")))) > 60).mean() > 0.03
        n += 1
    assert n >= 5


def test_hf_dataset_matches_json(gen_dir):
    from datasets import load_from_disk

    dd = load_from_disk(os.path.join(gen_dir, "hf"))
    assert set(dd.keys()) == {"train", "heldout"}
    for split in S.SPLITS:
        records = _load(gen_dir, split)
        ds = dd[split]
        assert len(ds) == len(records)
        assert {"messages", "images", "language", "task", "id"} <= set(ds.column_names)
        for r, row in zip(records, ds):
            assert row["id"] == r["id"] and row["language"] == r["language"] and row["task"] == r["task"]
            assert row["messages"] == llava_to_messages(r["conversations"], 1)
            assert row["messages"][0]["content"][0] == {"type": "image", "text": None}
            assert len(row["images"]) == 1
            with Image.open(os.path.join(gen_dir, r["image"])) as im:
                assert np.array_equal(np.asarray(row["images"][0].convert("RGB")), np.asarray(im.convert("RGB")))


def test_iter_corpus_texts(gen_dir):
    train = _load(gen_dir, "train")
    answers = [t["value"] for r in train for t in r["conversations"] if t["from"] == "gpt"]
    assert list(S.iter_corpus_texts(gen_dir)) == answers
    both = list(S.iter_corpus_texts(gen_dir, splits=("train", "heldout"), include_questions=True))
    assert len(both) > len(answers) and not any("<image>" in t for t in both)
    assert any(_has_cjk(t) for t in answers) and any(t.isascii() for t in answers)


def test_missing_cjk_font_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(fonts_mod, "_font_dirs", lambda: [str(tmp_path / "no_fonts")])
    with pytest.raises(fonts_mod.FontNotFoundError, match="fonts-noto-cjk"):
        fonts_mod.faces_for_language("zh-Hant")
    out = tmp_path / "out"
    with pytest.raises(fonts_mod.FontNotFoundError, match="fonts-noto-cjk"):
        S.generate_dataset(str(out), S.GeneratorConfig(num_samples=3, languages=("zh-Hans",)), progress=False)
    assert not out.exists()


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "cli")
    rc = S.main(
        [
            "--output",
            out,
            "--num-samples",
            "6",
            "--languages",
            "en,zh-Hant",
            "--tasks",
            "line,table",
            "--seed",
            "1",
            "--workers",
            "1",
            "--no-progress",
            "--no-hf",
        ]
    )
    assert rc == 0
    assert len(_load(out, "train")) + len(_load(out, "heldout")) == 6
    assert {r["language"] for r in _load(out, "train")} <= {"en", "zh-Hant"}
    # re-running into a folder written by the generator replaces it
    assert (
        S.main(
            ["--output", out, "--num-samples", "4", "--tasks", "line", "--no-progress", "--no-hf", "--workers", "1"]
        )
        == 0
    )
    assert len(os.listdir(os.path.join(out, "images"))) == 4
    rc = S.main(["--output", out, "--languages", "fr", "--no-progress"])
    assert rc == 2 and "fr" in capsys.readouterr().err


def test_refuses_to_clobber_foreign_files(tmp_path):
    (tmp_path / "train.json").write_text("[]")
    cfg = S.GeneratorConfig(num_samples=2, tasks=("line",), languages=("en",))
    with pytest.raises(FileExistsError, match="--overwrite"):
        S.generate_dataset(str(tmp_path), cfg, progress=False, write_hf=False)
    S.generate_dataset(str(tmp_path), cfg, progress=False, write_hf=False, overwrite=True)
    assert len(_load(str(tmp_path), "train")) == 2


@pytest.mark.parametrize("fonts", ["seen", "unseen"])
def test_font_split_keeps_the_unseen_families_out_of_training(fonts):
    """`fonts="seen"` (training data) never draws with UNSEEN_FONT_FAMILIES; `unseen` (the benchmark's other half)
    only with them; meta.json lists the faces of the split."""
    from ocr_mllm.data.render import TextOp

    cfg = S.GeneratorConfig(
        num_samples=60,
        languages=("en", "zh-Hans", "zh-Hant"),
        tasks=("line",),
        seed=3,
        fonts=fonts,
        augment="none",
        max_chars_cjk=8,
    )
    families = {op.face.family for spec in S.iter_specs(cfg) for op in spec.scene.ops if isinstance(op, TextOp)}
    assert families
    if fonts == "seen":
        assert not families & set(S.UNSEEN_FONT_FAMILIES)
    else:
        assert families <= set(S.UNSEEN_FONT_FAMILIES)
