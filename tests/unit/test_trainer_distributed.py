"""The trainer on N processes: two "hosts" (two finetune.py processes, each with its own SM_* folders and its own
resourceconfig.json, as SageMaker starts a 2-instance job) that each become torchrun and train data parallel over
gloo on this CPU; and the pure parts (the row split, the per-row seed, the launcher's decision, the memory model's
strategy, fused AdamW).

Tolerance of "the same adapter": the 2-process update sums the same per-row gradients in another order (each rank's
rows, then an all-reduce), so the weights differ by float32 rounding only: 1e-6 relative per step, grown over the
few steps here by AdamW's normalisation at most to ~1e-5. atol 1e-5 + rtol 1e-4 leaves room for that and fails on
any real difference (a wrong divisor, a lost row, other dropout masks: 1e-3 and more).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support.trainer_job import sagemaker_env
from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl
from trainer_image.llmt_trainer.contract import HOLD_AT_CHECKPOINT_ENV
from trainer_image.llmt_trainer.distributed import row_seed, seed_row, split_rows
from trainer_image.llmt_trainer.hyperparameters import parse_hyperparameters
from trainer_image.llmt_trainer.launch import Layout, relaunch_command, torchrun_argv
from trainer_image.llmt_trainer.loop import build_optimizer
from trainer_image.llmt_trainer.memory import GIB, Architecture, distributed_plan

FINETUNE_SCRIPT = Path(__file__).resolve().parents[2] / "trainer_image" / "finetune.py"
RUN_TIMEOUT_S = 240
HOSTS = ("algo-1", "algo-2")
# 20 examples in steps of 4, one epoch: 5 steps. Rows of at most 64 tokens hold one example each, so a step has
# several rows to split. A checkpoint after every step (the interval far below a step's time).
HYPERPARAMETERS = {"n_epochs": "1", "batch_size": "4", "learning_rate": "0.003", "seed": "7", "max_seq_length": "64",
                   "micro_batch_tokens": "64", "checkpoint_interval_s": "1e-9"}
TOTAL_STEPS = 5
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


# ------------------------------------------------------------------------------------- jobs on two hosts


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def host_env(root: Path, model: Path, host: str | None, port: int, **extra: str) -> dict[str, str]:
    """One host's container: its own SM_* folders under root/<host>, resourceconfig.json naming both hosts (none
    for the one-process reference), the rendezvous on the loopback."""
    folder = root / (host or "single")
    (folder / "config").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "hyperparameters.json").write_text(json.dumps({**HYPERPARAMETERS, "model_id": str(model)}))
    if host is not None:
        (folder / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": list(HOSTS), "current_instance_type": "ml.m5.xlarge"}))
    write_jsonl(make_demo_dataset(20, seed=0), folder / "train" / "part-0.jsonl")
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("SM_", "MASTER_", "LOCAL_", "RANK", "WORLD_", "TORCHELASTIC", "GROUP_"))}
    return {**inherited, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "TRAINING_JOB_NAME": "distributed-test", **sagemaker_env(folder), **extra}


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, str(FINETUNE_SCRIPT), "train"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def finish(processes: list[subprocess.Popen[bytes]], deadline: float) -> list[int]:
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


def run_hosts(root: Path, model: Path, **extra: str) -> list[int]:
    port = free_port()
    processes = [start(host_env(root, model, host, port, **extra), root / f"{host}.log") for host in HOSTS]
    return finish(processes, time.monotonic() + RUN_TIMEOUT_S)


def output(root: Path, host: str) -> str:
    return (root / f"{host}.log").read_text(errors="replace")


def adapter(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "adapter_model.safetensors"))


def assert_same_adapter(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys() and got
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-5, rtol=1e-4, msg=name)


@pytest.fixture(scope="module")
def single_run(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same job in one process (no resourceconfig.json: one host, no GPU)."""
    root = tmp_path_factory.mktemp("single")
    env = host_env(root, demo_model, None, free_port())
    returncode = finish([start(env, root / "single.log")], time.monotonic() + RUN_TIMEOUT_S)[0]
    assert returncode == 0, output(root, "single")
    return root


@pytest.fixture(scope="module")
def two_host_run(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two-hosts")
    returncodes = run_hosts(root, demo_model)
    assert returncodes == [0, 0], output(root, "algo-1") + output(root, "algo-2")
    return root


def test_two_hosts_train_the_same_adapter_as_one_process_and_only_rank_0_writes(
    single_run: Path, two_host_run: Path
) -> None:
    log = output(two_host_run, "algo-1")
    assert "torch.distributed.run" in log and "--nnodes 2 --node_rank 0" in log
    assert "distributed: world size 2 (2 hosts x 1 process), data parallel, backend gloo" in log
    assert_same_adapter(adapter(two_host_run / "algo-1" / "model"), adapter(single_run / "single" / "model"))
    metrics = [json.loads(line) for line in (two_host_run / "algo-1" / "output" / "data" / "metrics.jsonl")
               .read_text().splitlines()]
    reference = [json.loads(line) for line in (single_run / "single" / "output" / "data" / "metrics.jsonl")
                 .read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, TOTAL_STEPS + 1))
    assert [m["train_loss"] for m in metrics] == pytest.approx([m["train_loss"] for m in reference], abs=2e-4)
    assert [m["trained_tokens"] for m in metrics] == [m["trained_tokens"] for m in reference]
    # Only rank 0's host wrote: the other's model dir, metrics and checkpoints stay empty.
    other = two_host_run / "algo-2"
    assert not any((other / "model").glob("*")) if (other / "model").exists() else True
    assert not (other / "output" / "data" / "metrics.jsonl").exists()
    assert not (other / "output" / "failure").exists()
    assert not list((other / "checkpoints").glob("checkpoint-*")) if (other / "checkpoints").exists() else True
    assert log.count("METRICS ") == TOTAL_STEPS and "METRICS " not in output(two_host_run, "algo-2")


@pytest.mark.parametrize("on_both_hosts", [True, False], ids=["checkpoint on both hosts", "on algo-1 only"])
def test_a_stopped_two_host_run_resumes_at_its_checkpoint_and_ends_with_the_same_adapter(
    demo_model: Path, two_host_run: Path, tmp_path: Path, on_both_hosts: bool
) -> None:
    """GIVEN both hosts held after their first checkpoint (step 1; test-only hold), WHEN both get SIGTERM, THEN
    they stop at step 1 with rank 0's checkpoint; restarted with that checkpoint on both hosts (as SageMaker
    downloads it into each), or on algo-1's only (algo-2's rank then gets rank 0's over the process group), they
    resume from step 1 and end with the uninterrupted run's adapter."""
    port = free_port()
    hold = {HOLD_AT_CHECKPOINT_ENV: str(tmp_path / "never-released")}
    processes = [start(host_env(tmp_path, demo_model, host, port, **hold), tmp_path / f"{host}.log")
                 for host in HOSTS]
    first = tmp_path / "algo-1" / "checkpoints" / "checkpoint-00000001"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not first.exists() or "holding after the checkpoint" not in output(tmp_path, "algo-1"):
            assert all(p.poll() is None for p in processes), output(tmp_path, "algo-1") + output(tmp_path, "algo-2")
            assert time.monotonic() < deadline, "no checkpoint after the first step"
            time.sleep(0.05)  # a poll interval, bounded by the deadline above
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)  # torchrun forwards it to its worker
    finally:
        returncodes = finish(processes, deadline)
    logs = output(tmp_path, "algo-1") + output(tmp_path, "algo-2")
    assert all(code != 0 for code in returncodes), logs
    failure = (tmp_path / "algo-1" / "output" / "failure").read_text()
    assert "Training stopped by SIGTERM at step 1/5" in failure, logs
    assert [p.name for p in (tmp_path / "algo-1" / "checkpoints").iterdir()] == ["checkpoint-00000001"]
    assert not (tmp_path / "algo-1" / "model" / "adapter_model.safetensors").exists()

    if on_both_hosts:
        shutil.copytree(tmp_path / "algo-1" / "checkpoints", tmp_path / "algo-2" / "checkpoints", dirs_exist_ok=True)
    else:
        assert not list((tmp_path / "algo-2" / "checkpoints").glob("checkpoint-*"))
    for host in HOSTS:
        (tmp_path / f"{host}.log").rename(tmp_path / f"{host}.stopped.log")
    returncodes = run_hosts(tmp_path, demo_model)

    assert returncodes == [0, 0], output(tmp_path, "algo-1") + output(tmp_path, "algo-2")
    log = output(tmp_path, "algo-1")
    assert "resuming from the checkpoint at step 1/5" in log
    assert [json.loads(line.split("METRICS ", 1)[1])["step"] for line in log.splitlines() if "METRICS " in line] == [
        2, 3, 4, 5]
    assert_same_adapter(adapter(tmp_path / "algo-1" / "model"), adapter(two_host_run / "algo-1" / "model"))


# ------------------------------------------------------------------------------------------ pure parts


def test_rows_are_split_greedily_by_tokens_and_the_same_on_every_rank() -> None:
    assert split_rows([10, 50, 30, 20], 2) == [[0, 1], [2, 3]]  # 50 + 10 | 30 + 20
    assert split_rows([5, 5, 5], 2) == [[0, 2], [1]]  # ties: the lower rank, then the earlier row
    assert split_rows([7], 2) == [[0], []]  # a rank may get no row: it contributes zero gradients
    assert split_rows([3, 1, 2], 1) == [[0, 1, 2]]
    parts = split_rows(list(range(1, 40)), 4)
    assert sorted(i for part in parts for i in part) == list(range(39))
    assert split_rows(list(range(1, 40)), 4) == parts


def test_each_row_draws_the_same_dropout_mask_whichever_process_runs_it() -> None:
    dropout = torch.nn.Dropout(0.5)
    seed_row(7, 3, 1)
    first = dropout(torch.ones(64))
    torch.manual_seed(12345)  # whatever ran before on this rank
    seed_row(7, 3, 1)
    assert torch.equal(dropout(torch.ones(64)), first)
    seed_row(7, 3, 2)
    assert not torch.equal(dropout(torch.ones(64)), first)
    assert len({row_seed(7, step, index) for step in range(50) for index in range(50)}) == 2500


def test_the_launcher_runs_one_process_here_and_two_hosts_under_torchrun(tmp_path: Path) -> None:
    script, args = "/opt/ml/code/finetune.py", ["train", "--seed", "3"]
    alone = relaunch_command(tmp_path, {}, {}, script, args, gpus=0)
    assert alone is None  # one host, no GPU: in this process, as before
    (tmp_path / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-2",
                                                              "hosts": ["algo-2", "algo-1"]}))
    command = relaunch_command(tmp_path, {}, {}, script, args, gpus=0)
    assert command == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1",
                       "--nproc_per_node", "1", "--master_addr", "algo-1", "--master_port", "7777",
                       "--shutdown_timeout", "110", script, *args]
    env = {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"}
    assert relaunch_command(tmp_path, env, {}, script, args, gpus=8) == torchrun_argv(
        Layout(("algo-1", "algo-2"), "algo-2", 8), script, args, env)
    assert relaunch_command(tmp_path, {"LOCAL_RANK": "0", "WORLD_SIZE": "16"}, {}, script, args, gpus=8) is None


def test_one_host_with_several_gpus_is_distributed_only_when_the_job_asks(tmp_path: Path) -> None:
    script = "/opt/ml/code/finetune.py"
    assert relaunch_command(tmp_path, {}, {}, script, [], gpus=4) is None
    asked = {"sagemaker_torch_distributed_enabled": '"true"'}  # the SDK JSON-encodes every value
    command = relaunch_command(tmp_path, {"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}, asked, script,
                               ["train"], gpus=4)
    assert command is not None and command[command.index("--nproc_per_node") + 1] == "4"
    assert command[command.index("--nnodes") + 1] == "1"
    env_hosts = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "2"}
    from_env = relaunch_command(tmp_path, env_hosts, {}, script, [])
    assert from_env is not None and from_env[from_env.index("--node_rank") + 1] == "1"
    assert from_env[from_env.index("--nproc_per_node") + 1] == "2"


# Llama-3-8B's shape and Llama-3-70B's.
LLAMA_8B = Architecture(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8,
                        head_dim=128, vocab_size=128256)
LLAMA_70B = Architecture(hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64, num_kv_heads=8,
                         head_dim=128, vocab_size=128256)


def test_the_memory_model_chooses_data_parallel_then_sharded_then_sharded_4bit() -> None:
    strategy, plan = distributed_plan(LLAMA_8B, 80 * GIB, 8, 1, 2048) or ("none", None)
    assert strategy == "ddp" and plan is not None  # 16 GB of bf16 weights fit one 80 GB GPU
    strategy, plan = distributed_plan(LLAMA_70B, 80 * GIB, 8, 1, 2048) or ("none", None)
    assert strategy == "fsdp" and plan is not None  # 140 GB: not on one GPU, 1/8 of it on each
    assert plan.predicted.weights < LLAMA_70B.parameters() * 2 / 4
    strategy, _ = distributed_plan(LLAMA_70B, 24 * GIB, 4, 1, 1024) or ("none", None)
    assert strategy == "fsdp_qlora"  # 35 GB a GPU in bf16 even sharded over 4; in 4-bit it fits
    strategy, _ = distributed_plan(LLAMA_70B, 80 * GIB, 1, 1, 1024) or ("none", None)
    assert strategy == "qlora"  # one GPU: 4-bit, not sharded
    assert distributed_plan(LLAMA_70B, 16 * GIB, 1, 1, 1024) is None
    more_hosts = distributed_plan(LLAMA_70B, 24 * GIB, 4, 4, 1024)
    assert more_hosts is not None and more_hosts[0] == "fsdp"  # 16 GPUs: sharded bf16 fits


def test_fused_adamw_updates_the_weights_as_the_plain_one() -> None:
    hp, _ = parse_hyperparameters({"learning_rate": "0.01", "weight_decay": "0.1"})
    torch.manual_seed(0)
    start, data = torch.randn(32, 16), torch.randn(8, 16)
    fused = torch.nn.Parameter(start.clone())
    plain = torch.nn.Parameter(start.clone())
    optimizer = build_optimizer([fused], hp, torch.device("cpu"))
    assert optimizer.defaults.get("fused") is True  # torch 2.13 has the fused kernel on the CPU
    reference = torch.optim.AdamW([plain], lr=hp.learning_rate, weight_decay=hp.weight_decay)
    for _ in range(5):
        for param, opt in ((fused, optimizer), (plain, reference)):
            (data @ param.T).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(fused.detach(), plain.detach(), atol=1e-6, rtol=1e-5)
    assert not torch.equal(fused.detach(), start)


def test_the_contract_names_what_the_distributed_run_needs() -> None:
    from trainer_image.llmt_trainer import contract

    assert contract.__doc__ is not None
    for name in ("resourceconfig.json", "SM_HOSTS", "MASTER_ADDR", "torchrun", "sagemaker_torch_distributed_enabled"):
        assert name in contract.__doc__, name



# Test-only: the job with the memory plan's strategy forced to "fsdp" (the demo model fits anywhere, so the trainer
# would choose "ddp"), run under torchrun as a container's worker would be.
FORCE_FSDP = """import sys
sys.path.insert(0, {trainer!r})
from llmt_trainer import job, main
planned = job.plan_for_device
def sharded(*args, **kwargs):
    hp, batch_plan, _ = planned(*args, **kwargs)
    return hp, batch_plan, "fsdp"
job.plan_for_device = sharded
sys.exit(main.main(sys.argv[1:]))
"""


def start_sharded(root: Path, model: Path, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """Two processes on one host under torchrun, the strategy forced to FSDP (FORCE_FSDP)."""
    script = root / "force_fsdp.py"
    script.write_text(FORCE_FSDP.format(trainer=str(FINETUNE_SCRIPT.parent)))
    env = host_env(root, model, None, free_port(), **extra)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
             "--master_port", env["MASTER_PORT"], str(script), "train"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_the_sharded_path_trains_the_same_adapter_as_data_parallel(
    demo_model: Path, two_host_run: Path, tmp_path: Path
) -> None:
    """FSDP2 (fully_shard) runs on the CPU over gloo in torch 2.13: two processes with the weights sharded, a
    checkpoint after every step (the adapter and the optimizer state gathered from the shards), end with the data
    parallel run's adapter and losses."""
    process = start_sharded(tmp_path, demo_model, tmp_path / "fsdp.log")
    returncode = finish([process], time.monotonic() + RUN_TIMEOUT_S)[0]
    log = (tmp_path / "fsdp.log").read_text(errors="replace")
    assert returncode == 0, log
    assert "world size 2 (1 host x 2 processes), data parallel, weights sharded (fsdp), backend gloo" in log
    assert_same_adapter(adapter(tmp_path / "single" / "model"), adapter(two_host_run / "algo-1" / "model"))
    losses = [json.loads(line)["train_loss"] for line in
              (tmp_path / "single" / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["train_loss"] for line in
                (two_host_run / "algo-1" / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(expected, abs=2e-4)


def test_a_stopped_sharded_run_resumes_at_its_checkpoint_and_ends_with_the_same_adapter(
    demo_model: Path, two_host_run: Path, tmp_path: Path
) -> None:
    """FSDP: the checkpoint gathered from the shards at step 1 (held there, test-only), then SIGTERM; the run again
    scatters it back into the shards, resumes at step 1 and ends with the data parallel run's adapter."""
    held = start_sharded(tmp_path, demo_model, tmp_path / "held.log",
                         **{HOLD_AT_CHECKPOINT_ENV: str(tmp_path / "never-released")})
    first = tmp_path / "single" / "checkpoints" / "checkpoint-00000001"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not first.exists() or "holding after the checkpoint" not in (tmp_path / "held.log").read_text(
                errors="replace"):
            assert held.poll() is None, (tmp_path / "held.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "no checkpoint after the first step"
            time.sleep(0.05)  # a poll interval, bounded by the deadline above
        os.killpg(held.pid, signal.SIGTERM)  # torchrun forwards it to its workers
    finally:
        finish([held], deadline)
    assert "Training stopped by SIGTERM at step 1/5" in (tmp_path / "single" / "output" / "failure").read_text()

    returncode = finish([start_sharded(tmp_path, demo_model, tmp_path / "resumed.log")],
                        time.monotonic() + RUN_TIMEOUT_S)[0]
    log = (tmp_path / "resumed.log").read_text(errors="replace")
    assert returncode == 0, log
    assert "resuming from the checkpoint at step 1/5" in log
    assert_same_adapter(adapter(tmp_path / "single" / "model"), adapter(two_host_run / "algo-1" / "model"))
