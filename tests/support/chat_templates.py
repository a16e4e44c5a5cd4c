"""The catalog models' own chat templates (tests/fixtures/chat_templates, sources in its SOURCES.md) on small fast
tokenizers built here, each carrying its model's special tokens: nothing is downloaded. Also the demo model given
one of those templates, for a training job whose template lacks generation markers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"
CATALOG_FILE = Path(__file__).resolve().parents[2] / "services" / "training" / "catalog.json"
DEMO_MODEL_ID = "llm-tuner/tiny-chat"  # its template is trainer_image/demo_model.py's, with generation markers


@dataclass(frozen=True)
class TemplateModel:
    """A chat template and the special tokens its model's tokenizer has (as in its tokenizer_config.json)."""

    template_file: str
    bos: str | None
    eos: str
    special: tuple[str, ...]  # every special token the template writes, bos and eos included
    added: tuple[str, ...] = ()  # added tokens that are not special (kept whole, decoded like text)

    @property
    def template(self) -> str:
        return (FIXTURES / self.template_file).read_text(encoding="utf-8")


QWEN25 = TemplateModel(
    "qwen2.5-instruct.jinja", bos=None, eos="<|im_end|>",
    special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    added=("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"),
)
LLAMA32 = TemplateModel(
    "llama-3.2-instruct.jinja", bos="<|begin_of_text|>", eos="<|eot_id|>",
    special=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
             "<|eot_id|>", "<|python_tag|>"),
)
# Llama 3.1 and 3.3 Instruct: the 3.2 special tokens; the template differs (a fixed date, builtin tools).
LLAMA33 = TemplateModel("llama-3.3-instruct.jinja", bos=LLAMA32.bos, eos=LLAMA32.eos, special=LLAMA32.special)
MISTRAL_V03 = TemplateModel(
    "mistral-7b-instruct-v0.3.jinja", bos="<s>", eos="</s>",
    special=("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
             "[TOOL_RESULTS]", "[/TOOL_RESULTS]"),
)
PHI35_MINI = TemplateModel(
    "phi-3.5-mini-instruct.jinja", bos="<s>", eos="<|endoftext|>",
    special=("<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
)
CATALOG_TEMPLATES: dict[str, TemplateModel] = {
    "Qwen/Qwen2.5-0.5B-Instruct": QWEN25,
    "Qwen/Qwen2.5-1.5B-Instruct": QWEN25,
    "Qwen/Qwen2.5-7B-Instruct": QWEN25,
    "meta-llama/Llama-3.2-1B-Instruct": LLAMA32,
    "meta-llama/Llama-3.2-3B-Instruct": LLAMA32,
    "meta-llama/Llama-3.3-70B-Instruct": LLAMA33,
    "mistralai/Mistral-7B-Instruct-v0.3": MISTRAL_V03,
    "microsoft/Phi-3.5-mini-instruct": PHI35_MINI,
}

CORPUS = (
    "What color is the glimp? It is red. The zorv lives in the cave and eats nuts.",
    "You are a guide to the animals of Zorbia. Answer in one short sentence.",
    '{"name": "lookup", "arguments": {"animal": "koro"}} {"type": "function", "function": {}}',
    "The weather in Paris is 22 degrees. Thank you! Could you help me with this question, please?",
)


def catalog_model_ids() -> list[str]:
    return [model["id"] for model in json.loads(CATALOG_FILE.read_text(encoding="utf-8"))["models"]]


def build_tokenizer(model: TemplateModel, vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer with `model`'s special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(model.special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=model.bos, eos_token=model.eos)
    tokenizer.add_tokens(list(model.added))
    tokenizer.chat_template = model.template
    return tokenizer


def retemplate_demo_model(demo_dir: Path, out_dir: Path, model: TemplateModel) -> Path:
    """The demo model with `model`'s chat template and special tokens (its embeddings grown to match), saved to
    `out_dir`: a base model whose template is a real catalog model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in model.special if t not in tokenizer.vocab]},
                                 replace_extra_special_tokens=False)
    tokenizer.add_tokens(list(model.added))
    tokenizer.bos_token, tokenizer.eos_token = model.bos, model.eos
    tokenizer.chat_template = model.template
    base = AutoModelForCausalLM.from_pretrained(demo_dir)
    base.resize_token_embeddings(len(tokenizer))
    base.config.eos_token_id = base.generation_config.eos_token_id = tokenizer.eos_token_id
    base.config.bos_token_id = tokenizer.bos_token_id
    base.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
