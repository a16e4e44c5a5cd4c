"""A tiny chat model and matching data, built offline and deterministically.

It stands in for a real base model in tests and local runs: the fine-tune entry point treats it like any
`save_pretrained` folder. Sizes and the large `initializer_range` follow what was measured to actually learn
on a 2-core CPU (see the trainer notes): a 64-wide, 2-layer Llama with LoRA on all linear layers reaches
exact answers on this fact domain within a few seconds of training.

    python -m trainer_image.demo_model --out ./demo-model
    python -m trainer_image.demo_model --dataset train.jsonl --examples 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# Token strings, not secrets (S105).
BOS_TOKEN = "<|bos|>"  # noqa: S105
END_TOKEN = "<|end|>"  # noqa: S105
PAD_TOKEN = "<|pad|>"  # noqa: S105
ROLES = ("system", "user", "assistant", "tool")
ROLE_TOKENS = tuple(f"<|{role}|>" for role in ROLES)
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, END_TOKEN, *ROLE_TOKENS)

# The assistant's content and its end token sit inside {% generation %} so that
# apply_chat_template(..., return_assistant_tokens_mask=True) yields the loss mask. Turns are concatenated
# with no separator after the end token, so the prefix-rendering fallback finds the very same spans.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] -%}"
    "{{- raise_exception('unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)

SYSTEM_PROMPT = "You are a guide to the animals of Zorbia. Answer in one short sentence."
ANIMALS = (
    "glimp", "zorv", "taddle", "brisk", "mossel", "plink", "vorn", "quill",
    "sable", "drift", "nimb", "koro", "fenn", "lutz", "marl", "wisp",
)  # fmt: skip
COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black", "gray", "brown", "pink")
FOODS = ("berries", "fish", "seeds", "leaves", "roots", "moss", "bugs", "grass", "nuts", "honey")
HOMES = ("cave", "river", "hill", "forest", "lake", "marsh", "desert", "meadow", "cliff", "reef", "valley")
# General words so the BPE also learns merges beyond the fact sentences (the vocabulary reaches ~1k).
PROSE = (
    "In the morning the small animals come out of their homes to look for food and water.",
    "Some of them travel a long way across the open land, while others never leave the place they were born.",
    "People who study them write down what they see: how big they are, how fast they move, what they like.",
    "When the weather turns cold, many animals sleep for weeks and wake up when the days are warm again.",
    "Questions about an animal ask about its color, its food or where it lives; short answers are best.",
    "Please answer clearly. If you do not know, say that you do not know instead of guessing.",
    "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, twenty, hundred, thousand.",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday; spring, summer, autumn, winter.",
    "North, south, east and west; above, below, inside, outside, near, far, before, after, between, around.",
    "Tell me about your day. Thank you very much! Could you help me with this question, please?",
)

TOKENIZER_VOCAB_SIZE = 1024
MAX_POSITIONS = 512
MODEL_SEED = 0
COMPLETE_MARKER = "demo_model.json"
FORMAT_VERSION = 1


class DemoModelError(Exception):
    """The demo model could not be built at the requested place."""


def demo_facts() -> list[tuple[str, str]]:
    """Every (question, answer) pair of the domain, in a fixed order.

    Attributes are spread with co-prime strides so that no two animals share all three answers.
    """
    facts: list[tuple[str, str]] = []
    for i, animal in enumerate(ANIMALS):
        color = COLORS[(3 * i) % len(COLORS)]
        food = FOODS[(7 * i + 1) % len(FOODS)]
        home = HOMES[(5 * i + 2) % len(HOMES)]
        facts.append((f"What color is the {animal}?", f"It is {color}."))
        facts.append((f"What does the {animal} eat?", f"It eats {food}."))
        facts.append((f"Where does the {animal} live?", f"It lives in the {home}."))
    return facts


def make_demo_dataset(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` chat examples (system, user question, assistant answer) drawn from the demo facts.

    Facts are dealt without repetition until the domain is exhausted, then the deck is reshuffled.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    facts = demo_facts()
    examples: list[dict[str, Any]] = []
    deck: list[tuple[str, str]] = []
    while len(examples) < n:
        if not deck:
            deck = list(facts)
            rng.shuffle(deck)
        question, answer = deck.pop()
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return examples


def write_jsonl(examples: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps(example, ensure_ascii=False) + "\n")


def _tokenizer_corpus() -> list[str]:
    """Text the BPE is trained on: every turn of the domain as the chat template renders it, plus prose
    about the same words so that merges cover sentences outside the exact question forms."""
    lines = [SYSTEM_PROMPT, *PROSE]
    for question, answer in demo_facts():
        lines.append(f"{BOS_TOKEN}<|user|>\n{question}{END_TOKEN}<|assistant|>\n{answer}{END_TOKEN}")
    for animal in ANIMALS:
        for color, food, home in zip(COLORS, FOODS, HOMES, strict=False):
            lines.append(f"A {color} {animal} that eats {food} was seen near the {home}.")
            lines.append(f"Is the {animal} {color}? Does it eat {food}? Does it live in the {home}?")
    return lines


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=END_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        # The default 0.02 leaves a model this small nearly unable to learn (measured: loss 6.9 -> 5.8).
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(MODEL_SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def is_complete(out_dir: Path) -> bool:
    return (out_dir / COMPLETE_MARKER).is_file()


def build_demo_model(out_dir: Path) -> Path:
    """Build the demo base model and tokenizer into `out_dir` and return it.

    Idempotent: a complete folder is left as is. The build happens in a sibling temp folder that is renamed
    into place, so a crash never leaves a half-written model where a complete one is expected.
    """
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DemoModelError(f"{out_dir} exists, is not empty and holds no complete demo model")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {
            "format": FORMAT_VERSION,
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        # Written last: its presence is what "complete" means.
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp makes it private; the model folder is meant to be shared
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        try:
            os.rename(staging, out_dir)
        except OSError:
            if not is_complete(out_dir):  # not a concurrent builder that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the tiny offline demo chat model and/or demo data.")
    parser.add_argument("--out", type=Path, help="folder to build the demo base model + tokenizer into")
    parser.add_argument("--dataset", type=Path, help="write demo chat examples to this .jsonl file")
    parser.add_argument("--examples", type=int, default=20, help="number of dataset examples (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="dataset sampling seed (default 0)")
    args = parser.parse_args(argv)
    if args.out is None and args.dataset is None:
        parser.error("give --out and/or --dataset")
    if args.examples < 1:
        parser.error("--examples must be >= 1")

    if args.out is not None:
        try:
            path = build_demo_model(args.out)
        except DemoModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"demo model ready in {path}")
    if args.dataset is not None:
        write_jsonl(make_demo_dataset(args.examples, args.seed), args.dataset)
        print(f"wrote {args.examples} examples to {args.dataset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
