"""The trainer's fast path (fast_path.py): each switch that runs on this CPU gives the plain path's loss (and, where
it has a backward pass here, the LoRA weights' gradients) on the same inputs and weights; the switches that need
CUDA are tested for their selection only.

GPU only, not run here: flex attention's backward (torch 2.13 has no FlexAttention backward on the CPU, so only
its forward loss is compared), Liger's kernels (Triton needs CUDA; liger_kernel is not installed here), and the
attention, Liger and autocast choices taking effect in a real CUDA run."""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig

from tests.support.trainer_job import demo_examples
from trainer_image.demo_model import build_demo_model
from trainer_image.llmt_trainer import fast_path, loss, memory
from trainer_image.llmt_trainer.errors import HyperparameterError
from trainer_image.llmt_trainer.fast_path import Available, FastPath, choose, compute_autocast
from trainer_image.llmt_trainer.hyperparameters import parse_hyperparameters
from trainer_image.llmt_trainer.masking import TokenizedExample
from trainer_image.llmt_trainer.model_loading import choose_fast_path, load_model
from trainer_image.llmt_trainer.packing import PackedBatch, pack

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
CPU = torch.device("cpu")
CUDA = torch.device("cuda")
CATALOG_FILE = Path(__file__).resolve().parents[2] / "services" / "training" / "catalog.json"
EVERYTHING = Available(flex_attention=True, flash_attention=True, liger=True)
PLAIN = FastPath(attention=None, liger_loss=False, liger_kernels=None, autocast=None, compile=False)


@pytest.fixture(autouse=True)
def _no_switches_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fast_path.FAST_PATH_OFF_ENV, raising=False)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


@pytest.fixture(scope="module")
def examples(demo_dir: Path) -> list[TokenizedExample]:
    return demo_examples(demo_dir, 8)


def _model(demo_dir: Path, path: FastPath = PLAIN, dtype: torch.dtype = torch.float32) -> Any:
    """The demo model with LoRA, its adapter's B matrices made non-zero (seeded, so every model here has the same
    weights): with B at its initial zero the adapter would not change the loss and its A matrices get no gradient."""
    hp, _ = parse_hyperparameters({"lora_dropout": "0", "seed": "3"})
    model = load_model(str(demo_dir), hp, CPU, dtype, fast_path=path)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def _loss(model: Any, batch: PackedBatch) -> loss.LossSum:
    return loss.loss_over_targets(model, batch.input_ids, batch.position_ids, batch.target_positions, batch.targets,
                                  chunk_tokens=1024)


def _loss_and_grads(model: Any, batch: PackedBatch) -> tuple[float, int, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    result = _loss(model, batch)
    result.loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    return result.loss.item(), int(result.correct.item()), grads


# Switch 1: attention that respects packed boundaries without a dense mask.

def test_attention_is_flex_on_cuda_else_flash_varlen_else_dense_sdpa_and_unchanged_on_the_cpu() -> None:
    assert fast_path.attention_implementation(CPU, EVERYTHING) is None  # transformers' default, as before
    assert fast_path.attention_implementation(CUDA, EVERYTHING) == "flex_attention"
    assert fast_path.attention_implementation(CUDA, Available(flash_attention=True)) == "flash_attention_2"
    assert fast_path.attention_implementation(CUDA, Available()) == "sdpa"
    assert choose(CUDA, torch.bfloat16, EVERYTHING).dense_mask is False
    assert choose(CUDA, torch.bfloat16, Available()).dense_mask is True
    assert choose(CPU, torch.float32, EVERYTHING).dense_mask is True


def test_flex_is_available_where_the_models_class_supports_it_and_not_when_switched_off(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fast_path.detect(LlamaConfig()).flex_attention is True
    assert fast_path.detect(LlamaConfig(attention_dropout=0.1)).flex_attention is False  # flex refuses dropout
    monkeypatch.setenv(fast_path.FAST_PATH_OFF_ENV, "flex, liger")
    assert fast_path.detect(LlamaConfig()) == Available(flex_attention=False, flash_attention=False, liger=False)


def test_the_cpu_path_reads_nothing_and_switches_nothing_on() -> None:
    hp, _ = parse_hyperparameters({})
    assert choose_fast_path("/no/such/model", hp, CPU, torch.float32) == PLAIN  # no config read on the CPU


def test_on_cuda_the_models_config_decides_flex_and_liger_is_off_without_liger_kernel(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The choice load_model makes on a GPU, made here from the demo model's config.json (nothing is loaded)."""
    monkeypatch.setattr(fast_path, "liger_transformers", lambda: None)  # as here: liger_kernel is not installed
    hp, _ = parse_hyperparameters({"torch_compile": "true"})
    assert choose_fast_path(str(demo_dir), hp, CUDA, torch.bfloat16) == FastPath(
        attention="flex_attention", liger_loss=False, liger_kernels=None, autocast=torch.bfloat16, compile=True)


def test_flex_attention_on_a_packed_row_gives_the_dense_paths_loss_and_each_example_alone(
    demo_dir: Path, examples: list[TokenizedExample]
) -> None:
    """Forward only: torch 2.13 has no FlexAttention backward on the CPU (the gradients are GPU only, not run here).
    Tolerance: fp32 throughout; flex attention's online softmax sums in another order than sdpa's, so the summed
    loss (about 200 nats over ~100 tokens) may differ in the last bits: rel 1e-5 is ~100x the float32 epsilon."""
    row = examples[:4]
    dense = _model(demo_dir)
    flex = _model(demo_dir, FastPath("flex_attention", False, None, None, False))
    assert flex.config._attn_implementation == "flex_attention"
    assert dense.config._attn_implementation == "sdpa"
    with torch.no_grad():
        packed = pack(row, CPU)
        by_dense = _loss(dense, packed).loss.item()
        by_flex = _loss(flex, packed)
        alone = sum(_loss(dense, pack([example], CPU)).loss.item() for example in row)
        # The same tokens as one sequence (positions not restarting): the examples now see each other.
        joined = PackedBatch(packed.input_ids, torch.arange(packed.tokens).unsqueeze(0), packed.target_positions,
                             packed.targets, packed.tokens, packed.loss_tokens)
        by_flex_joined = _loss(flex, joined).loss.item()
    assert by_flex.loss.item() == pytest.approx(by_dense, rel=1e-5)
    assert by_flex.loss.item() == pytest.approx(alone, rel=1e-5)
    assert int(by_flex.correct.item()) == int(_loss(dense, packed).correct.item())
    assert abs(by_flex_joined - alone) > 1e-3 * alone  # 100x the tolerance: the comparison tells them apart


def test_flex_attentions_block_mask_is_exactly_per_example_causal_and_skips_the_blocks_between_examples() -> None:
    """transformers builds the BlockMask from the packed position ids (masking_utils.create_causal_mask); four
    examples of 128 tokens (flex attention's block size) leave only the 4 diagonal blocks of the 4 x 4 to compute."""
    from torch.nn.attention.flex_attention import create_mask
    from transformers.masking_utils import create_causal_mask

    config = LlamaConfig(hidden_size=8, num_attention_heads=1, num_key_value_heads=1)
    config._attn_implementation = "flex_attention"
    lengths = (128, 128, 128, 128)
    tokens = sum(lengths)
    position_ids = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    block_mask = create_causal_mask(config=config, inputs_embeds=torch.zeros(1, tokens, 8), attention_mask=None,
                                    cache=None, position_ids=position_ids)
    example = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    expected = (example[:, None] == example[None, :]) & torch.ones(tokens, tokens, dtype=torch.bool).tril()
    got = create_mask(block_mask.mask_mod, 1, 1, tokens, tokens, device="cpu")[0, 0]
    assert torch.equal(got, expected)
    blocks = block_mask.to_dense()[0, 0]  # which 128 x 128 blocks flex attention computes
    assert torch.equal(blocks.bool(), torch.eye(4, dtype=torch.bool))


# Switch 2: the output layer and loss over labelled tokens, Liger's fused kernel on CUDA.

def _fake_liger(calls: list[str]) -> Any:
    """A stand-in for liger_kernel.transformers with LigerFusedLinearCrossEntropyLoss's interface (weight, hidden,
    targets) -> (loss, predicted_tokens), computed with plain torch: the glue around the kernel is what is tested."""

    class FakeLoss:
        def __init__(self, reduction: str, return_predicted_tokens: bool) -> None:
            assert (reduction, return_predicted_tokens) == ("sum", True)

        def __call__(self, weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor) -> Any:
            calls.append("liger")
            logits = F.linear(hidden, weight).float()
            return types.SimpleNamespace(loss=F.cross_entropy(logits, targets, reduction="sum"),
                                         predicted_tokens=logits.argmax(dim=-1))

    return types.SimpleNamespace(LigerFusedLinearCrossEntropyLoss=FakeLoss)


def test_liger_loss_is_chosen_only_on_cuda_with_liger_importable_and_not_switched_off(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    assert loss.liger_loss(CPU) is None
    monkeypatch.setattr(loss, "liger_transformers", lambda: None)  # as here: liger_kernel is not installed
    assert loss.liger_loss(CUDA) is None
    monkeypatch.setattr(loss, "liger_transformers", lambda: _fake_liger([]))
    assert loss.liger_loss(CPU) is None
    assert loss.liger_loss(CUDA) is not None
    monkeypatch.setenv(fast_path.FAST_PATH_OFF_ENV, "liger")
    assert loss.liger_loss(CUDA) is None


def test_without_liger_the_loss_is_todays_and_with_it_the_same_loss_gradients_and_accuracy(
    demo_dir: Path, examples: list[TokenizedExample], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tolerance: both sides are fp32 and compute the same products; the fake sums the whole row's cross-entropy at
    once where loss.py sums chunk by chunk: rel 1e-5 on the loss, 1e-5 absolute on the gradients (as
    test_trainer_batching's chunked-versus-full comparison)."""
    model = _model(demo_dir)
    batch = pack(examples[:4], CPU)
    calls: list[str] = []
    monkeypatch.setattr(loss, "_FusedLinearCrossEntropy", _CountingFused(calls))
    plain = _loss_and_grads(model, batch)
    assert calls == ["own"]  # no liger here: today's fused chunked path
    calls.clear()
    monkeypatch.setattr(loss, "liger_loss", lambda device: _fake_liger(calls).LigerFusedLinearCrossEntropyLoss(
        reduction="sum", return_predicted_tokens=True))
    by_liger = _loss_and_grads(model, batch)
    assert calls == ["liger"]
    assert by_liger[0] == pytest.approx(plain[0], rel=1e-5)
    assert by_liger[1] == plain[1]
    for got, want in zip(by_liger[2], plain[2], strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)


class _CountingFused:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.real = loss._FusedLinearCrossEntropy

    def apply(self, *args: Any) -> Any:
        self.calls.append("own")
        return self.real.apply(*args)


# Switch 3: Liger's RMSNorm, RoPE and SwiGLU.

def test_every_catalog_architecture_has_a_liger_function_and_unknown_ones_are_skipped_with_a_log_line(
    caplog: pytest.LogCaptureFixture
) -> None:
    catalog = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
    model_types = {entry["architecture"]["model_type"] for entry in catalog["models"]}
    liger = Available(liger=True)
    for model_type in model_types:
        assert fast_path.liger_kernel_function(CUDA, liger, model_type) == f"apply_liger_kernel_to_{model_type}"
    assert fast_path.liger_kernel_function(CPU, liger, "llama") is None
    assert fast_path.liger_kernel_function(CUDA, Available(), "llama") is None
    with caplog.at_level(logging.INFO, logger=fast_path.__name__):
        assert fast_path.liger_kernel_function(CUDA, liger, "bert") is None
    assert "no Liger kernels for model type 'bert'" in caplog.text


def test_liger_kernels_are_applied_with_what_each_function_accepts_and_its_losses_off(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, dict[str, bool]] = {}

    def llama(rope: bool = True, cross_entropy: bool = False, fused_linear_cross_entropy: bool = True,
              rms_norm: bool = True, swiglu: bool = True, model: Any = None) -> None:
        seen["llama"] = {"rope": rope, "cross_entropy": cross_entropy, "flce": fused_linear_cross_entropy,
                         "rms_norm": rms_norm, "swiglu": swiglu}

    def gemma(rope: bool = True, cross_entropy: bool = False, fused_linear_cross_entropy: bool = True,
              rms_norm: bool = True, geglu: bool = True, model: Any = None) -> None:
        seen["gemma"] = {"geglu": geglu, "flce": fused_linear_cross_entropy}

    module = types.SimpleNamespace(apply_liger_kernel_to_llama=llama, apply_liger_kernel_to_gemma=gemma)
    monkeypatch.setattr(fast_path, "liger_transformers", lambda: module)
    assert fast_path.apply_liger_kernels("apply_liger_kernel_to_llama")
    assert fast_path.apply_liger_kernels("apply_liger_kernel_to_gemma")
    assert not fast_path.apply_liger_kernels("apply_liger_kernel_to_nothing")
    assert not fast_path.apply_liger_kernels(None)
    assert seen == {"llama": {"rope": True, "cross_entropy": False, "flce": False, "rms_norm": True, "swiglu": True},
                    "gemma": {"geglu": True, "flce": False}}


# Switch 4: bf16 autocast.

def test_autocast_is_a_no_op_in_fp32_and_bf16_autocast_where_the_base_is_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    with compute_autocast(CPU, torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with compute_autocast(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert fast_path.autocast_dtype(CUDA, torch.bfloat16) == torch.bfloat16
    assert fast_path.autocast_dtype(CUDA, torch.float32) is None  # a GPU without bf16 trains in fp32
    monkeypatch.setenv(fast_path.FAST_PATH_OFF_ENV, "autocast")
    assert fast_path.autocast_dtype(CUDA, torch.bfloat16) is None


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


def test_the_loss_under_bf16_autocast_is_within_bf16_rounding_of_fp32(
    demo_dir: Path, examples: list[TokenizedExample]
) -> None:
    """Tolerance: bf16 keeps 8 significant bits, a relative rounding of 2^-9 = 0.2% per value; the products in two
    layers and the output layer accumulate several such roundings, so the mean loss is held to 2%. The gradients
    are sums over ~100 tokens of differences (softmax minus one-hot) in which much cancels, which magnifies the
    rounding: measured 4-11% in norm per LoRA matrix here (cosine >= 0.995), so each is held to 20% and a cosine of
    0.99; a broken backward (a detached or missing path) is off by ~100%."""
    model = _model(demo_dir)
    batch = pack(examples[:4], CPU)
    fp32 = _loss_and_grads(model, batch)
    with compute_autocast(CPU, torch.bfloat16):  # the forward pass under autocast, the backward outside, as the loop
        result = _loss(model, batch)
    result.loss.backward()
    bf16 = (result.loss.item(), 0, [p.grad.detach().clone() for p in model.parameters() if p.requires_grad])
    assert bf16[0] != fp32[0]  # autocast did run in bf16
    assert bf16[0] / batch.loss_tokens == pytest.approx(fp32[0] / batch.loss_tokens, rel=2e-2)
    for got, want in zip(bf16[2], fp32[2], strict=True):
        assert got.dtype == torch.float32  # the master weights' gradients stay fp32
        assert _relative_error(got, want) < 0.2
        assert F.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99


# Switch 5: torch.compile of the decoder layers.

def test_torch_compile_is_a_hyperparameter_off_by_default() -> None:
    assert parse_hyperparameters({})[0].torch_compile is False
    assert parse_hyperparameters({"torch_compile": "true"})[0].torch_compile is True
    with pytest.raises(HyperparameterError, match="torch_compile must be true or false"):
        parse_hyperparameters({"torch_compile": "sometimes"})
    assert "compile on" in choose(CPU, torch.float32, Available(), torch_compile=True).describe()


def test_compiled_decoder_layers_give_the_eager_loss_and_gradients_and_keep_the_state_dict(
    demo_dir: Path, examples: list[TokenizedExample]
) -> None:
    """gcc is on this machine, so inductor compiles for the CPU. Tolerance: fp32; inductor fuses and reorders the
    layers' elementwise ops and reductions: rel 1e-5 on the loss, 1e-5 absolute on the gradients."""
    model = _model(demo_dir)
    rows = [pack(examples[:4], CPU), pack(examples[4:7], CPU)]  # two lengths: dynamic shapes, no second compile
    eager = [_loss_and_grads(model, batch) for batch in rows]
    names = list(model.state_dict())
    torch._dynamo.reset()
    assert fast_path.compile_decoder_layers(model) == 2
    assert list(model.state_dict()) == names  # the adapter saves and checkpoints under the same names
    for batch, (loss_eager, correct_eager, grads_eager) in zip(rows, eager, strict=True):
        compiled = _loss_and_grads(model, batch)
        assert compiled[0] == pytest.approx(loss_eager, rel=1e-5)
        assert compiled[1] == correct_eager
        for got, want in zip(compiled[2], grads_eager, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # compiled, not run eagerly


# Switch 6: the choices together, in one log line; memory.py's mask term.

def test_the_fast_path_is_reported_in_one_line() -> None:
    on_gpu = choose(CUDA, torch.bfloat16, EVERYTHING, "qwen2", torch_compile=False)
    assert on_gpu.describe() == ("fast path: attention flex (packed blocks), loss liger fused-linear-CE, "
                                 "liger rms_norm/rope/swiglu, bf16 autocast, compile off")
    assert choose(CPU, torch.float32, EVERYTHING, "qwen2").describe() == (
        "fast path: attention sdpa (dense packed mask), loss chunked fused-linear-CE, liger kernels off, "
        "no autocast, compile off")


def test_without_a_dense_mask_the_memory_model_counts_no_mask() -> None:
    arch = memory.Architecture(896, 4864, 24, 14, 2, 64, 151_936, True)
    dense = memory.predict(arch, 8192)
    packed = memory.predict(arch, 8192, dense_mask=False)
    assert dense.mask == 8192 * 8192 and packed.mask == 0
    assert dense.total - packed.total == 8192 * 8192
    dense_plan = memory.plan(arch, 24 * memory.GIB, 512)
    packed_plan = memory.plan(arch, 24 * memory.GIB, 512, dense_mask=False)
    assert dense_plan is not None and packed_plan is not None
    assert packed_plan.predicted.mask == 0 and dense_plan.predicted.mask > 0

