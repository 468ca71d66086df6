"""Shared inference helper (ocr_mllm.inference) on a real tiny model folder."""

import json
import subprocess
import sys
import threading
import time

import pytest
import torch
from PIL import Image, ImageDraw

from ocr_mllm.inference import (
    ChatSession,
    InferenceSetupError,
    build_generate_kwargs,
    generate_batch,
    load_model_and_processor,
    prepare_inputs,
    read_done_ids,
    run_batched_jsonl,
    stop_token_ids,
    stream_generate,
)
from ocr_mllm.inference._testing import REPO_ROOT, single_thread, subprocess_env


EXAMPLES = REPO_ROOT / "examples" / "images"
GEN = {"max_new_tokens": 8}


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    return load_model_and_processor(tiny_model_dir)


def _user(text, image=True):
    return [{"role": "user", "content": ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]}]


def _image(path, text="Hello 123", size=(220, 48)):
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((6, 6), text, fill="black")
    img.save(path)
    return str(path)


class ForceTokenAt:
    """Logits processor that forces ``token_id`` once ``step`` new tokens exist (to test stopping)."""

    def __init__(self, prompt_len, step, token_id):
        self.prompt_len, self.step, self.token_id = prompt_len, step, token_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len >= self.step:
            scores = torch.full_like(scores, -1e9)
            scores[:, self.token_id] = 0
        return scores


# ---------------------------------------------------------------------------------------------------------------------
def test_load_defaults(model_and_processor):
    model, processor = model_and_processor
    assert model.device.type == "cpu" and model.dtype == torch.float32  # auto on CPU → fp32
    assert not model.training
    assert processor.tokenizer.padding_side == "left"
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stop_token_ids(model, processor)


def test_quantization_without_gpu_is_a_clear_error(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    with pytest.raises(InferenceSetupError, match="CUDA GPU"):
        load_model_and_processor(tiny_model_dir, load_in="4bit")
    with pytest.raises(InferenceSetupError, match="4bit or 8bit"):
        load_model_and_processor(tiny_model_dir, device="cpu", load_in="3bit")
    with pytest.raises(InferenceSetupError, match="CUDA is not available"):
        load_model_and_processor(tiny_model_dir, device="cuda")


def test_quantization_config_and_skip_patterns(model_and_processor, monkeypatch):
    from ocr_mllm.inference import loading

    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InferenceSetupError, match="pip install bitsandbytes"):
        loading.quantization_config("8bit", torch.bfloat16, torch.device("cuda"), [])
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: object())
    config = loading.quantization_config(
        "4bit", torch.bfloat16, torch.device("cuda"), loading.DEFAULT_QUANT_SKIP_MODULES
    )
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module
    except ImportError:
        pytest.skip("transformers moved should_convert_module")
    model, _ = model_and_processor
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    quantized = {n for n in linear if should_convert_module(n, loading.DEFAULT_QUANT_SKIP_MODULES)}
    assert quantized and all(".language_model." in n for n in quantized)  # only the LLM's layers
    assert any("vision_tower" in n for n in linear) and not any("vision_tower" in n for n in quantized)


def test_bitsandbytes_not_imported_at_import_time():
    code = "import sys, ocr_mllm.inference, cli, infer, app; print('bitsandbytes' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=subprocess_env()
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False")


def test_generation_kwargs_mapping(model_and_processor):
    model, processor = model_and_processor
    greedy = build_generate_kwargs(model, processor, temperature=0, top_p=0.5, top_k=3, max_new_tokens=7)
    assert greedy["do_sample"] is False and greedy["max_new_tokens"] == 7 and greedy["top_p"] == 1.0
    assert "repetition_penalty" not in greedy and "no_repeat_ngram_size" not in greedy
    sample = build_generate_kwargs(
        model, processor, temperature=0.7, top_p=0.9, top_k=5, repetition_penalty=1.2, no_repeat_ngram_size=4
    )
    assert sample["do_sample"] is True and sample["temperature"] == 0.7 and sample["top_k"] == 5
    assert sample["repetition_penalty"] == 1.2 and sample["no_repeat_ngram_size"] == 4
    assert processor.tokenizer.convert_tokens_to_ids("<|im_end|>") in sample["eos_token_id"]


def test_batch_equals_single_and_mixed_batches(model_and_processor, tmp_path):
    model, processor = model_and_processor
    convs = [
        _user("What text is in the image?"),
        _user("hello, who are you? please answer in a long sentence", image=False),
        _user("图中有哪些文字？"),
        _user("Read it."),
    ]
    images = [
        [str(EXAMPLES / "receipt_en.png")],
        [],
        [str(EXAMPLES / "zh_simplified.png")],
        [Image.open(_image(tmp_path / "a.png", "ABC 42", (90, 200)))],
    ]
    batched = generate_batch(model, processor, convs, images, **GEN)
    single = [generate_batch(model, processor, [c], [i], **GEN)[0] for c, i in zip(convs, images)]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)
    assert not any("<|im_end|>" in t or "<|endoftext|>" in t for t in batched)
    assert generate_batch(model, processor, [], []) == []
    assert generate_batch(model, processor, [convs[1]], None, **GEN) == [single[1]]


def test_stops_on_im_end(model_and_processor):
    from transformers import LogitsProcessorList

    model, processor = model_and_processor
    tok = processor.tokenizer
    conv = _user("hi", image=False)
    prompt = processor.apply_chat_template(conv, add_generation_prompt=True)
    prompt_len = len(processor(text=[prompt])["input_ids"][0])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    inputs = prepare_inputs(model, processor, [conv])
    kwargs = build_generate_kwargs(model, processor, max_new_tokens=12)
    free_ids = model.generate(**inputs, **kwargs)[0, prompt_len:].tolist()
    assert im_end not in free_ids[:3]
    forced = generate_batch(
        model,
        processor,
        [conv],
        None,
        max_new_tokens=12,
        logits_processor=LogitsProcessorList([ForceTokenAt(prompt_len, 3, im_end)]),
    )[0]
    # generation stopped at the forced <|im_end|>: the text is the 3 free tokens, the special token is not in it
    assert forced == tok.decode(free_ids[:3], skip_special_tokens=True).strip()


def test_stream_matches_batch(model_and_processor):
    model, processor = model_and_processor
    conv, imgs = _user("What text is in the image?"), [str(EXAMPLES / "zh_traditional.png")]
    chunks = list(stream_generate(model, processor, conv, imgs, **GEN))
    assert len(chunks) >= 1
    assert "".join(chunks).strip() == generate_batch(model, processor, [conv], [imgs], **GEN)[0]


def test_stream_stops_when_consumer_leaves(model_and_processor):
    model, processor = model_and_processor
    before = threading.active_count()
    gen = stream_generate(
        model, processor, _user("Tell a long story", image=False), None, max_new_tokens=2000, no_repeat_ngram_size=0
    )
    next(gen)
    start = time.perf_counter()
    gen.close()  # must stop generate() (stop_event) instead of running 2000 steps
    assert time.perf_counter() - start < 5
    time.sleep(0.1)
    assert threading.active_count() <= before


def test_stream_forwards_errors(model_and_processor):
    model, processor = model_and_processor
    with pytest.raises(ValueError):
        list(stream_generate(model, processor, _user("x"), [str(REPO_ROOT / "no_such_image.png")], **GEN))


def test_sampling_options_run(model_and_processor):
    model, processor = model_and_processor
    torch.manual_seed(0)
    out = generate_batch(
        model,
        processor,
        [_user("hi", image=False)] * 2,
        None,
        temperature=0.9,
        top_p=0.9,
        top_k=20,
        repetition_penalty=1.3,
        no_repeat_ngram_size=3,
        max_new_tokens=6,
    )
    assert len(out) == 2


def test_chat_session_history(model_and_processor):
    model, processor = model_and_processor
    chat = ChatSession(model, processor, image=str(EXAMPLES / "receipt_en.png"), **GEN)
    first = chat.ask("What text is in the image?")
    streamed = "".join(chat.stream("And the total?"))
    assert len(chat.history) == 2
    assert chat.history[0] == ("What text is in the image?", first)
    assert chat.history[1][1] == streamed.strip()
    for _, reply in chat.history:
        assert "<|im_end|>" not in reply and "<|im_start|>" not in reply
    # the first answer equals a one-shot generate; the second turn sees the history (image only in turn 1)
    assert (
        first
        == generate_batch(
            model, processor, [_user("What text is in the image?")], [[str(EXAMPLES / "receipt_en.png")]], **GEN
        )[0]
    )
    msgs = chat.messages()
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[0]["content"][0] == {"type": "image"} and all(b["type"] == "text" for b in msgs[2]["content"])
    chat.reset()
    assert chat.history == [] and chat.image is not None
    chat.ask("hi")
    chat.set_image(str(EXAMPLES / "zh_simplified.png"))  # a new image resets the conversation
    assert chat.history == []
    chat.clear()
    assert chat.image is None
    assert isinstance(chat.ask("text only question"), str)


def test_chat_session_trims_history_but_keeps_image(model_and_processor):
    model, processor = model_and_processor
    chat = ChatSession(model, processor, image=str(EXAMPLES / "receipt_en.png"), max_new_tokens=4)
    chat.history = [(f"question {i} " * 5, f"answer {i} " * 5) for i in range(6)]
    full_query = chat._prepare("last question", 4)[1]["input_ids"].shape[1]
    chat.max_context_tokens = full_query - 40  # force dropping old turns
    _, inputs = chat._prepare("last question", 4)
    assert inputs["input_ids"].shape[1] + 4 <= chat.max_context_tokens
    assert (inputs["input_ids"] == processor.image_token_id).sum() > 0  # image still there
    chat.ask("last question")
    assert chat.history[-1][0] == "last question"


def test_user_text_cannot_inject_image_or_control_tokens(model_and_processor):
    model, processor = model_and_processor
    chat = ChatSession(model, processor, **GEN)  # no image: a literal <image> would break the processor
    reply = chat.ask("what does <image> or <|im_end|> mean?")
    assert isinstance(reply, str)


# ---------------------------------------------------------------------------------------------------------------------
def _records(tmp_path, n):
    recs = []
    for i in range(n):
        path = _image(tmp_path / f"r{i}.png", f"line {i} " * (1 + i % 3), (60 + 25 * (i % 5), 40 + 7 * (i % 4)))
        recs.append({"id": f"r{i}", "question": "Read the text." + " please" * (i % 4), "image": path, "extra": i})
    return recs


def _build(record):
    if record.get("bad"):
        raise ValueError("bad record")
    return _user(record["question"]), [record["image"]]


def test_run_batched_jsonl(model_and_processor, tmp_path):
    model, processor = model_and_processor
    recs = _records(tmp_path, 7)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    recs += [
        {"id": "bad-image", "question": "q", "image": str(broken)},
        {"id": "bad-record", "question": "q", "image": recs[0]["image"], "bad": True},
        {"question": "no id"},
        dict(recs[0]),  # duplicate id
    ]
    out = tmp_path / "out" / "preds.jsonl"
    stats = run_batched_jsonl(
        model, processor, recs, str(out), _build, batch_size=3, generation_kwargs=GEN, progress=False
    )
    assert stats["done"] == 7 and stats["failed"] == 3 and stats["duplicates"] == 1 and stats["skipped_existing"] == 0
    assert set(stats["failed_ids"]) >= {"bad-image", "bad-record"}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in recs[:7])
    by_id = {r["id"]: r for r in rows}
    assert by_id["r3"]["extra"] == 3 and by_id["r3"]["question"] == recs[3]["question"] and "prediction" in by_id["r3"]
    ref = generate_batch(model, processor, [_user(recs[3]["question"])], [[recs[3]["image"]]], **GEN)[0]
    assert by_id["r3"]["prediction"] == ref

    # resume: a torn last line (kill mid-write) is dropped, finished ids are not recomputed
    with open(out, "a") as f:
        f.write('{"id": "r9", "predic')
    recs2 = _records(tmp_path, 9)
    stats2 = run_batched_jsonl(
        model, processor, recs2, str(out), _build, batch_size=4, generation_kwargs=GEN, progress=False
    )
    assert stats2["skipped_existing"] == 7 and stats2["done"] == 2
    assert read_done_ids(str(out)) == {f"r{i}" for i in range(9)}
    assert len(out.read_text().splitlines()) == 9


def test_run_batched_jsonl_decoded_images_and_abort(model_and_processor, tmp_path):
    model, processor = model_and_processor
    recs = _records(tmp_path, 5)
    calls = []

    def build_pil(record):
        calls.append(record["id"])
        return _user(record["question"]), [Image.open(record["image"]).convert("RGB")]

    out = tmp_path / "pil.jsonl"
    stats = run_batched_jsonl(
        model, processor, recs, str(out), build_pil, batch_size=2, generation_kwargs=GEN, progress=False
    )
    assert stats["done"] == 5 and len(calls) == 10  # decoded images are rebuilt per batch, not kept for all records
    ref = generate_batch(model, processor, [_user(recs[1]["question"])], [[recs[1]["image"]]], **GEN)[0]
    assert {r["id"]: r["prediction"] for r in map(json.loads, out.read_text().splitlines())}["r1"] == ref

    many = _records(tmp_path, 20)
    with pytest.raises(RuntimeError, match="all failed"):
        run_batched_jsonl(
            model,
            processor,
            many,
            str(tmp_path / "x.jsonl"),
            _build,
            batch_size=4,
            generation_kwargs={"max_new_tokens": 4, "not_a_generate_option": 1},
            progress=False,
        )
