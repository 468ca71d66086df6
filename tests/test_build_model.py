"""Model folders: complete, loadable outside the repo with trust_remote_code, buildable from pretrained parts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parent.parent

LOAD_AND_ASK = r"""
import json, sys
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText, AutoModel, AutoModelForCausalLM, AutoProcessor, pipeline
path = sys.argv[1]
model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
image = Image.new("RGB", (160, 48), "white"); ImageDraw.Draw(image).text((5, 15), "TOTAL 12.50", fill="black")
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the total amount?"}]}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[image], text=[prompt], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
pipe = pipeline("image-text-to-text", model=path, trust_remote_code=True)
chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Read."}]}]
piped = pipe(text=chat, max_new_tokens=3)
print(json.dumps({
    "module": type(model).__module__,
    "processor_module": type(processor).__module__,
    "new_tokens": out.shape[1] - inputs["input_ids"].shape[1],
    "auto_model": type(AutoModel.from_pretrained(path, trust_remote_code=True)).__name__,
    "causal_lm": type(AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)).__name__,
    "pipeline_reply_role": piped[0]["generated_text"][-1]["role"],
    "repo_on_path": sys.argv[2] in [p.rstrip("/") for p in sys.path],
}))
"""


def test_build_script_writes_a_complete_folder_that_loads_outside_the_repo(tmp_path):
    folder = tmp_path / "tiny"
    subprocess.run(
        [sys.executable, str(REPO / "scripts/build_model.py"), "--preset", "tiny", "--output", str(folder)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
        "configuration_ocr_mllm.py",
        "modeling_ocr_mllm.py",
        "processing_ocr_mllm.py",
    ):
        assert (folder / name).exists(), name
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) >= {
        "AutoConfig",
        "AutoModel",
        "AutoModelForImageTextToText",
        "AutoModelForCausalLM",
    }
    generation = json.loads((folder / "generation_config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<|im_end|>")
    assert im_end in generation["eos_token_id"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = elsewhere / "ask.py"
    script.write_text(LOAD_AND_ASK)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")  # no stale copies of the code files
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(REPO)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")  # the folder's own code, not the repo's
    assert report["processor_module"].startswith("transformers_modules.")
    assert report["new_tokens"] >= 1
    assert report["auto_model"] == "OcrMllmModel" and report["causal_lm"] == "OcrMllmForConditionalGeneration"
    assert report["pipeline_reply_role"] == "assistant"
    assert not report["repo_on_path"]


def test_saved_weights_roundtrip_including_the_fixed_resampler_table(tiny_model_dir, tiny_model_and_processor):
    model, _ = tiny_model_and_processor
    saved = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert "model.resampler.pos_embed" in saved
    state = model.state_dict()
    assert set(saved) == set(state)
    for name, tensor in saved.items():
        assert torch.equal(tensor, state[name]), name


def test_chat_template_with_the_real_qwen2_tokenizer():
    from ocr_mllm.building import build_config, build_processor
    from ocr_mllm.tokenization import qwen2_tokenizer_from_package

    tokenizer = qwen2_tokenizer_from_package()
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]) == [
        151643,
        151644,
        151645,
        151646,
    ]
    assert tokenizer.encode("今天天气很好，我们去公园散步吧。Hello world! 發票號碼 12345")[:4] == [
        100644,
        104307,
        101243,
        3837,
    ]
    config = build_config("tiny", vocab_size=len(tokenizer), image_token_id=151646)
    processor = build_processor(tokenizer, config)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "图中有哪些文字？"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "發票號碼 12345"}]},
    ]
    text = processor.apply_chat_template(messages)
    from PIL import Image

    ids = processor(images=[Image.new("RGB", (20, 20))], text=[text])["input_ids"][0]
    assert ids[:3] == [151644, 8948, 198]  # <|im_start|> system \n
    assert ids.count(151646) == config.image_seq_length
    assert ids.count(151645) == 3 and ids[-2:] == [151645, 198]
    assert tokenizer.decode(ids, skip_special_tokens=True).endswith("發票號碼 12345\n")


def _tiny_text_model(folder: Path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ocr_mllm.tokenization import default_corpus, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(default_corpus(300), vocab_size=300)
    tokenizer.save_pretrained(folder)
    config = Qwen2Config(
        vocab_size=len(tokenizer) - 1,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)  # one token short: the builder must grow the embeddings


def test_build_from_pretrained_parts_keeps_their_weights(tmp_path):
    from transformers import (
        AutoModelForImageTextToText,
        GotOcr2Config,
        GotOcr2ForConditionalGeneration,
        Qwen2ForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from ocr_mllm.building import build_from_parts

    _tiny_text_model(tmp_path / "llm")
    SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "siglip")
    got_config = GotOcr2Config(
        vision_config={
            "hidden_size": 16,
            "output_channels": 8,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mlp_dim": 32,
            "image_size": 64,
            "patch_size": 8,
            "window_size": 2,
            "global_attn_indexes": [1],
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
        },
        image_token_index=63,
    )
    GotOcr2ForConditionalGeneration(got_config).save_pretrained(tmp_path / "got")

    folder = build_from_parts(
        tmp_path / "out",
        text_model=str(tmp_path / "llm"),
        vision_model=str(tmp_path / "siglip"),
        high_res_model=str(tmp_path / "got"),
        preset="tiny",
    )
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    llm = Qwen2ForCausalLM.from_pretrained(tmp_path / "llm")
    got = GotOcr2ForConditionalGeneration.from_pretrained(tmp_path / "got")
    siglip = SiglipVisionModel.from_pretrained(tmp_path / "siglip")

    embed = model.get_input_embeddings().weight
    assert embed.shape[0] == llm.config.vocab_size + 1  # grown by one row for <image>
    assert torch.equal(embed[: llm.config.vocab_size], llm.get_input_embeddings().weight)
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, llm.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(
        model.model.vision_tower.embeddings.patch_embedding.weight, siglip.embeddings.patch_embedding.weight
    )
    assert torch.equal(
        model.model.high_res_vision_tower.layers[1].attn.rel_pos_h, got.model.vision_tower.layers[1].attn.rel_pos_h
    )
    assert torch.equal(
        model.model.high_res_downsampler.conv2.weight, got.model.multi_modal_projector.conv_upsampler2.weight
    )
    assert model.config.high_res_grid_size == 2  # 64/8 = 8 → 2 after two stride-2 convs
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}], add_generation_prompt=True
    )
    inputs = processor(images=[Image.new("RGB", (40, 30))], text=[prompt], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=2).shape[1] > inputs["input_ids"].shape[1]
