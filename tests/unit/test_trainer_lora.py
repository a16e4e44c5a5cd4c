"""The trainable model in bf16, as on a GPU (here on the CPU, which runs bf16 too): the frozen base keeps its dtype
(embeddings and lm_head are not upcast, unlike peft's prepare_model_for_kbit_training), the LoRA weights are fp32
master weights that compute in bf16, and the result matches peft's all-fp32 adapter computation.

4-bit itself needs CUDA (bitsandbytes' kernels): what QLoRA adds, the quantized linear layers, cannot run here.
load_model prepares a 4-bit base with the same prepare_base_model and add_lora_adapter that are tested below."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from peft import prepare_model_for_kbit_training
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from trainer_image.demo_model import build_demo_model
from trainer_image.llmt_trainer.hyperparameters import parse_hyperparameters
from trainer_image.llmt_trainer.lora import LinearInInputDtype, add_lora_adapter, prepare_base_model
from trainer_image.llmt_trainer.model_loading import load_model

CPU = torch.device("cpu")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


def bf16_model(demo_model: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.bfloat16)


def parameter_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_the_base_is_frozen_in_its_own_dtype_unlike_peft_kbit_preparation(demo_model: Path) -> None:
    model = bf16_model(demo_model)
    size = parameter_bytes(model)

    prepare_base_model(model, gradient_checkpointing=True)

    assert all(not p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.get_input_embeddings().weight.dtype == model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert parameter_bytes(model) == size
    assert model.is_activation_checkpointing
    # With checkpointing, the frozen embeddings' output carries grad, so the recomputed layers' LoRA weights get it.
    assert model.get_input_embeddings()(torch.tensor([[1, 2, 3]])).requires_grad
    # What peft's own preparation does to the same model: every non-4-bit weight in fp32, twice the bytes.
    upcast = prepare_model_for_kbit_training(bf16_model(demo_model), use_gradient_checkpointing=False)
    assert upcast.get_input_embeddings().weight.dtype == torch.float32 and parameter_bytes(upcast) == 2 * size


def lora_linears(model: Any) -> list[Any]:
    """Every LoRA A and B layer."""
    return [adapter for module in model.modules() if isinstance(module, LoraLayer)
            for adapter in (*module.lora_A.values(), *module.lora_B.values())]


def _lora_outputs(model: Any) -> list[torch.dtype]:
    """The dtype of every LoRA A and B output from now on, in the order they are computed."""
    dtypes: list[torch.dtype] = []
    for adapter in lora_linears(model):
        adapter.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    return dtypes


def test_lora_weights_are_fp32_master_weights_that_compute_in_bf16(demo_model: Path) -> None:
    hp, _ = parse_hyperparameters({"lora_dropout": "0", "gradient_checkpointing": "true"})
    model = load_model(str(demo_model), hp, CPU, torch.bfloat16)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    frozen = [p for p in model.parameters() if not p.requires_grad]

    assert trainable and all("lora_A" in name or "lora_B" in name for name in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    assert all(not m.cast_input_dtype_enabled for m in model.modules() if isinstance(m, LoraLayer))

    lora_output_dtypes = _lora_outputs(model)
    ids = torch.tensor([[1, 5, 9, 14, 20, 33, 40, 41]])
    out = model(input_ids=ids, output_hidden_states=True)
    loss = F.cross_entropy(out.logits[0, :-1].float(), ids[0, 1:])
    loss.backward()

    assert lora_output_dtypes and set(lora_output_dtypes) == {torch.bfloat16}
    assert {h.dtype for h in out.hidden_states} == {torch.bfloat16}  # the residual stream is not upcast
    # The same without peft's forward: the decoder called on its own, as the chunked loss does.
    lora_output_dtypes.clear()
    hidden = model.get_base_model().get_decoder()(input_ids=ids).last_hidden_state
    assert hidden.dtype == torch.bfloat16 and set(lora_output_dtypes) == {torch.bfloat16}
    assert out.logits.dtype == torch.bfloat16
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable.values())
    assert any(p.grad.abs().sum() > 0 for p in trainable.values() if p.grad is not None)
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-4)
    optimizer.step()
    assert {s["exp_avg"].dtype for s in optimizer.state.values()} == {torch.float32}


def test_bf16_compute_gives_what_peft_computes_in_fp32(demo_model: Path) -> None:
    """The same adapter (B made non-zero: at initialisation LoRA adds nothing), once in our arrangement and once
    as peft leaves it (inputs cast to fp32, A and B in fp32): the same loss within bf16's precision."""
    hp, _ = parse_hyperparameters({"lora_dropout": "0"})
    ours = load_model(str(demo_model), hp, CPU, torch.bfloat16)
    reference = bf16_model(demo_model)
    prepare_base_model(reference, gradient_checkpointing=False)
    reference = add_lora_adapter(reference, hp, torch.float32)  # fp32 compute: peft's own casting
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for (name, a), (other, b) in zip(ours.named_parameters(), reference.named_parameters(), strict=True):
            assert name == other
            if "lora_B" in name:
                a.copy_(torch.randn(a.shape, generator=generator) * 0.1)
                b.copy_(a)
    assert {type(a) for a in lora_linears(ours)} == {LinearInInputDtype}
    assert {type(a) for a in lora_linears(reference)} == {torch.nn.Linear}
    ids = torch.tensor([[1, 5, 9, 14, 20, 33, 40, 41, 60, 61]])

    losses = [F.cross_entropy(m(input_ids=ids).logits[0, :-1].float(), ids[0, 1:]).item() for m in (ours, reference)]
    base = F.cross_entropy(bf16_model(demo_model)(input_ids=ids).logits[0, :-1].float(), ids[0, 1:]).item()

    assert losses[0] == pytest.approx(losses[1], rel=2e-2)
    assert abs(losses[1] - base) > 10 * abs(losses[0] - losses[1])  # the adapter's effect is well above the noise
