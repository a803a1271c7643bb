"""Write a small randomly initialised Qwen2 causal LM and a locally trained
tokenizer in Hugging Face format, so tests and examples run offline.

    python -m verl.utils.tiny_model OUT_DIR [--vocab-size 1024] ...
"""

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, EOS_TOKEN]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# AutoTokenizer loads any qwen2 checkpoint as Qwen2Tokenizer, which imposes NFC and this
# split pattern; training with the same pipeline keeps saved and in-memory ids identical.
QWEN2_SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

SAMPLE_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Who wrote the novel Pride and Prejudice? It was Jane Austen, in 1813.",
    "What is the capital of France? The capital of France is Paris.",
    "<think>I need to find when the Eiffel Tower was built.</think>",
    "<search>Eiffel Tower construction year</search>",
    "<information>Doc 1: The Eiffel Tower was completed in 1889 for the World's Fair.</information>",
    "<answer>1889</answer>",
    "<think>The question asks for a person, so I should search first.</think>",
    "<search>first person to walk on the moon</search>",
    "<information>Doc 1: Neil Armstrong stepped onto the Moon on July 20, 1969.</information>",
    "<answer>Neil Armstrong</answer>",
    "You are a helpful assistant. Answer the question step by step.",
    "Answer the given question. You must conduct reasoning inside <think> and </think> first.",
    "If you lack knowledge, call a search engine by <search> query </search>.",
    "Results are returned between <information> and </information>.",
    "Give the final answer inside <answer> and </answer>, without detailed explanation.",
    "Question: How many planets are in the solar system? Answer: 8.",
    "Question: Which river flows through Cairo? Answer: the Nile.",
    "The sum of 17 and 25 is 42; the product of 6 and 7 is also 42.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 2.718 -5 +12 50%.",
    "Punctuation: commas, periods. colons: semicolons; dashes - quotes \"like this\" and 'that'!",
    "Brackets (round), [square], {curly} and <angle> appear in code and markup.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Mount Everest is the highest mountain above sea level, at 8,849 metres.",
    "The Great Wall of China stretches for thousands of kilometres.",
    "Shakespeare wrote Hamlet, Macbeth, Othello and King Lear.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The United Nations was founded in 1945 after the Second World War.",
    "Albert Einstein published the theory of general relativity in 1915.",
    "A critic reads each search step and says whether the evidence supports the answer.",
    "The model should stop searching once it is confident about the answer.",
    "Email: someone@example.com, website: https://example.org/path?q=1&lang=en",
    "def add(a, b):\n    return a + b\n",
    'She asked, "Is it raining?" He replied, "No, it\'s sunny today."',
    "In 2024, the population of Tokyo was about 14 million people.",
    "Lists: apples, oranges, bananas; colours: red, green, blue.",
    "Exact match rewards give 1.0 for a correct answer and 0.0 otherwise.",
    "Is the answer correct? Yes. Is it supported by the documents? Partly.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday.",
    "January February March April May June July August September October November December",
]


def build_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in sample plus ``texts``.

    Every byte has an id, so any NFC text round-trips through encode/decode.
    Special ids: ``<|endoftext|>`` 0 (pad), ``<|im_start|>`` 1, ``<|im_end|>`` 2 (eos).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs at least "
            f"{len(alphabet) + len(SPECIAL_TOKENS)} ids (256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Seeding the trainer with all 256 byte symbols keeps unseen characters encodable.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator([*SAMPLE_TEXT, *texts], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir,
    *,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position: int = 1024,
    seed: int = 0,
    texts: Iterable[str] | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
    tie_word_embeddings: bool = False,
) -> Path:
    """Save a random Qwen2ForCausalLM and its tokenizer into ``out_dir``. Pass ``tokenizer`` to
    share one between models; otherwise one of ``vocab_size`` is trained on ``texts``."""
    out_dir = Path(out_dir)
    if tokenizer is None:
        tokenizer = build_tokenizer(texts or [], vocab_size)
    tokenizer.model_max_length = max_position
    config = Qwen2Config(
        # A small training corpus can yield fewer merges than asked for; size to what exists.
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        # Qwen2 uses <|endoftext|> as its bos id; the tokenizer itself adds no bos.
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )
    # A private RNG stream gives reproducible weights without disturbing the caller's seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).float()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def teach(model_dir, prompts: Sequence[str], targets: Sequence[str], steps: int = 80, lr: float = 3e-3) -> None:
    """A few steps of supervised tuning in place (one pair per step, cycling, loss on the target
    only), so that a random tiny policy writes what a test or benchmark needs it to write."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    pairs = [
        (tokenizer.encode(p, add_special_tokens=False), tokenizer.encode(t, add_special_tokens=False))
        for p, t in zip(prompts, targets, strict=True)
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for step in range(steps):
            prompt, target = pairs[step % len(pairs)]
            ids = torch.tensor([prompt + target])
            labels = torch.tensor([[-100] * len(prompt) + target])
            model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(model_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m verl.utils.tiny_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--intermediate-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--max-position", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--texts", type=Path, help="text file whose lines are extra tokenizer-training text")
    args = parser.parse_args(argv)

    texts = None
    if args.texts is not None:
        if not args.texts.is_file():
            parser.error(f"--texts file not found: {args.texts}")
        texts = args.texts.read_text(encoding="utf-8").splitlines()
    out_dir = build_tiny_model(
        args.out_dir,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        max_position=args.max_position,
        seed=args.seed,
        texts=texts,
    )
    print(out_dir)


if __name__ == "__main__":
    main()
