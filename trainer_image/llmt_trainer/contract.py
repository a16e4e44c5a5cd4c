"""SageMaker training entry point: LoRA fine-tuning of a causal LM on chat-format JSONL.

Runs as the container's ENTRYPOINT (SageMaker appends the argument `train`), in SageMaker script mode
(hyperparameters also arrive as `--name value` arguments), or locally:
`python finetune.py [--name value ...]`.

Contract (SageMaker training container; every path may be overridden by its environment variable):
  SM_INPUT_CONFIG_DIR   /opt/ml/input/config      hyperparameters.json: every value a string
  SM_CHANNEL_TRAIN      /opt/ml/input/data/train  one or more JSONL files (any name), read in sorted order
  SM_CHANNEL_VALIDATION (optional)                 same format; its loss is evaluated after every epoch
                                                   (none: hyperparameter validation_split holds out that
                                                   share of the train examples instead, chosen by the seed)
  SM_CHANNEL_MODEL      (optional)                 a base model + tokenizer saved with save_pretrained;
                                                   when present it is used instead of `model_id`
  SM_CHANNEL_ADAPTER    (optional)                 a LoRA adapter to start training from (adapter_start.py): a
                                                   folder written by peft's save_pretrained (adapter_config.json +
                                                   adapter_model.safetensors: a finished job's model dir), a
                                                   model.tar.gz of one, or one of our checkpoint folders; looked for
                                                   in the channel, then in its subfolders. Its LoRA config (r, alpha,
                                                   dropout, target modules) wins over the lora_* hyperparameters (a
                                                   warning names each difference); optimizer and schedule start fresh;
                                                   the weights file's sha256 is part of the resume fingerprint. None
                                                   there: the run fails ("the adapter channel holds no
                                                   adapter_config.json ..."). The result is one adapter on the base.
  SM_CHECKPOINT_DIR     /opt/ml/checkpoints       checkpoints at each epoch end, every checkpoint_interval_s
                                                   (900) within an epoch, and on SIGTERM; a run
                                                   restarted on the same data, hyperparameters (method and beta
                                                   too) and starting adapter resumes from the newest. Each holds
                                                   adapter_config.json (so it is an adapter a job can start from)
                                                   and the metrics records up to its step, which a resumed run
                                                   writes back into SM_OUTPUT_DATA_DIR before its own steps
  SM_MODEL_DIR          /opt/ml/model             on success: the LoRA adapter, the tokenizer and
                                                   training_summary.json; with merge_adapter=true also merged/:
                                                   base + adapter merged. Written into .incomplete/ inside it and
                                                   moved into place once complete: a failed or stopped run leaves
                                                   nothing there (SageMaker uploads this folder for those too)
  SM_OUTPUT_DATA_DIR    /opt/ml/output/data       metrics.jsonl (every logged step exactly once, a resume's
                                                   earlier steps included), results.csv (step, train_loss,
                                                   train_accuracy, valid_loss, valid_mean_token_accuracy,
                                                   reward_accuracy, reward_margin, chosen_logps, rejected_logps,
                                                   valid_reward_accuracy: a method's columns empty for the other)
                                                   and a copy of training_summary.json ("method"; for DPO
                                                   "final_reward_accuracy")
  SM_OUTPUT_DIR         /opt/ml/output            `failure`: the reason, when the run fails or is stopped

Processes (launch.py, distributed.py): one per GPU of every host, data parallel. The hosts come from
resourceconfig.json in SM_INPUT_CONFIG_DIR (`hosts`, `current_host`; SageMaker writes it on every instance), else
from SM_HOSTS (a JSON list) and SM_CURRENT_HOST; GPUs per host from SM_NUM_GPUS, else the CUDA devices visible.
One process in all (one host, at most one GPU): the run is this process, as ever. More, and either several hosts
or the hyperparameter sagemaker_torch_distributed_enabled=true (SageMaker's distribution={"torch_distributed":
{"enabled": True}}): this process becomes torchrun (`python -m torch.distributed.run --nnodes H --node_rank R
--nproc_per_node P --master_addr A --master_port M finetune.py <same args>`), A = MASTER_ADDR or the first of the
sorted hosts, M = MASTER_PORT or 7777; started under torchrun already (LOCAL_RANK, WORLD_SIZE set), it is one rank.
The ranks join over gloo (CPU) or nccl (CUDA), each trains its share of every optimizer step's rows and the LoRA
gradients are summed: the update is the one-process update of the same global batch. Where the model does not fit
one GPU the base weights are sharded over all (FSDP). Only rank 0 (the first host's first process) writes
checkpoints, metrics, the model and the summary; each host's SM_CHECKPOINT_DIR is read on resume (a host without
the newest checkpoint gets rank 0's). A stop signal stops every rank at the same optimizer step (checked once per
step); a failing rank fails the run (torchrun ends the others) and the first failure's reason is the host's
`failure` file. Under torchrun the process's exit status is torchrun's (non-zero after a stop or a failure; the
reason is in `failure`).

Data: one JSON object per line, in the platform's internal example form (what the files service normalises
every upload to), or OpenAI's chat line (the same as the first without "type"):
  {"type": "chat", "messages": [{"role": "system|user|assistant|tool", "content": "...", "weight": 0|1}, ...]}
      loss on assistant tokens only; `"weight": 0` leaves an assistant message out of the loss
  {"type": "text", "text": "..."}    continued pre-training: loss on every token (an end-of-text token added)
  {"type": "preference", "messages": [...the prompt, ending with a user message...],
   "chosen": {"role": "assistant", "content": "..."}, "rejected": {"role": "assistant", "content": "..."}}
      (optionally "tools") DPO's preference pair: needs method=dpo, and method=dpo needs only these (either
      mix fails the run, naming the lines)

Methods (hyperparameter `method`): "supervised" (default): cross-entropy on the labelled tokens. "dpo": Direct
Preference Optimization (dpo.py) with `beta` ("auto" = 0.1, else 0 < beta <= 2): loss per pair
-logsigmoid(beta x ((pi_c - ref_c) - (pi_r - ref_r))) on the replies' summed log-probs, the mean over a step's
pairs; the reference is the base with the adapter off, or, when starting from an adapter, that starting model.

Stdout carries one line per logged step, JSON after a fixed prefix (SageMaker MetricDefinitions parse it):
  METRICS {"step": 3, "epoch": 0.5, "train_loss": 2.3104, "train_accuracy": 0.41, "learning_rate": 0.0002, ...}
with "valid_loss" and "valid_mean_token_accuracy" added on the step that ends an epoch when there is
validation data. With method=dpo the keys are "step", "epoch", "train_loss" (the DPO loss), "reward_accuracy"
(share of pairs whose chosen reward beats the rejected one's, a reward being beta x (pi - ref)), "reward_margin"
(mean chosen minus rejected reward), "chosen_logps", "rejected_logps" (mean policy summed log-probs),
"learning_rate", "total_steps", "trained_tokens" (a pair counts both sequences), and on epoch ends with validation
pairs "valid_loss" and "valid_reward_accuracy". After a resume from step N the lines start at step N + 1.
A tokenizer without a chat template gets a ChatML fallback template.

GPU: bf16 (where supported) and SDPA attention. Options: gradient_checkpointing=true, load_in_4bit=true (QLoRA:
needs CUDA and bitsandbytes, imported only then; the run fails saying so when either is missing). On a GPU
instance type (resourceconfig.json's current_instance_type) without usable CUDA the run fails at once, before the
model is downloaded; LLMT_ALLOW_CPU_ON_GPU_INSTANCE=1 lets it train on the CPU instead (set by the local SageMaker
emulator only, which runs GPU instance types on a CPU machine on purpose; logged as a warning).

Test-only: LLMT_TRAINER_HOLD_AT_CHECKPOINT=<file>: after the first checkpoint this process writes, the trainer
holds until <file> exists or SIGTERM/SIGINT arrives (then it stops as usual, keeping that checkpoint), so a
test can interrupt a run at a known step instead of racing the machine's speed. "{job}" in <file> is replaced by
the TRAINING_JOB_NAME environment variable (SageMaker and the local emulator set it), so one setting serves many
jobs, each released by its own file. A release file whose content (stripped) is "fail" fails the run right there
(exit 1, reason "test-only: failed after the checkpoint at step N as the release file asked"; the checkpoint of
step N stays); any other content releases it. Never set in a real job; a hold that nothing ends fails the run
after 120 s.

Exit status: 0 success, 1 failure (reason in `failure`), 143 stopped by SIGTERM/SIGINT in any phase (the reason,
"Training stopped by SIGTERM...", in `failure`; a checkpoint kept when it came during training; nothing published
in SM_MODEL_DIR). SageMaker documents 0 as Completed and any other code as Failed; a job it stops itself
(StopTrainingJob, MaxRuntimeInSeconds, a spot interruption: SIGTERM, then up to 120 s of grace) gets its status
from that stop (Stopped, with SecondaryStatus Stopped, MaxRuntimeExceeded or Interrupted and a restart). So a stop
must never exit 0, which would claim a complete model; 143 = 128 + SIGTERM is the status of a process ended by
that signal, the same whether or not the trainer got to handle it (before its handler is installed, during the
first imports, the signal's default action ends the process with nothing written). A stop that arrives while
the finished model is being moved into place is noted and the run completes (exit 0): the model is whole then.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

METRICS_PREFIX = "METRICS "
EXIT_FAILED = 1
EXIT_STOPPED = 128 + signal.SIGTERM  # 143, what a shell reports for a process ended by SIGTERM
FAILURE_REASON_LIMIT = 1024  # SageMaker truncates FailureReason to this length
FAILURE_FILE = "failure"
HOLD_AT_CHECKPOINT_ENV = "LLMT_TRAINER_HOLD_AT_CHECKPOINT"  # test-only, see above
MODEL_STAGING_DIR = ".incomplete"  # inside SM_MODEL_DIR: the model being written, see outputs.py


@dataclass(frozen=True)
class Paths:
    model_dir: Path
    output_data_dir: Path
    output_dir: Path
    input_config_dir: Path
    train_channel: Path
    validation_channel: Path | None
    model_channel: Path | None
    checkpoint_dir: Path
    hold_at_checkpoint: Path | None = None  # test-only: LLMT_TRAINER_HOLD_AT_CHECKPOINT
    adapter_channel: Path | None = None  # a LoRA adapter to start training from

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Paths:
        input_dir = Path(env.get("SM_INPUT_DIR", "/opt/ml/input"))

        def optional_channel(name: str) -> Path | None:
            # A bring-your-own container gets no SM_CHANNEL_* variables: look where SageMaker mounts channels.
            value = env.get(f"SM_CHANNEL_{name.upper()}")
            if value:
                return Path(value)
            default = input_dir / "data" / name
            return default if default.is_dir() else None

        return cls(
            model_dir=Path(env.get("SM_MODEL_DIR", "/opt/ml/model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")),
            output_dir=Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output")),
            input_config_dir=Path(env.get("SM_INPUT_CONFIG_DIR", str(input_dir / "config"))),
            train_channel=Path(env.get("SM_CHANNEL_TRAIN", str(input_dir / "data" / "train"))),
            validation_channel=optional_channel("validation"),
            model_channel=optional_channel("model"),
            checkpoint_dir=Path(env.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints")),
            hold_at_checkpoint=_hold_path(env),
            adapter_channel=optional_channel("adapter"),
        )

    @property
    def failure_file(self) -> Path:
        return self.output_dir / FAILURE_FILE

    @property
    def model_staging_dir(self) -> Path:
        return self.model_dir / MODEL_STAGING_DIR


def _hold_path(env: Mapping[str, str]) -> Path | None:
    """The test-only release file, "{job}" in it replaced by TRAINING_JOB_NAME (one setting serves many jobs)."""
    value = env.get(HOLD_AT_CHECKPOINT_ENV)
    return Path(value.replace("{job}", env.get("TRAINING_JOB_NAME", ""))) if value else None


def write_failure(paths: Paths, reason: str, *, keep_existing: bool = False) -> None:
    """The reason into the failure file; with `keep_existing`, only when no other process wrote one first."""
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        with paths.failure_file.open("x" if keep_existing else "w", encoding="utf-8") as failure:
            failure.write(reason[:FAILURE_REASON_LIMIT])
    except FileExistsError:
        log.info("the failure file was already written by another process: kept")
    except OSError as exc:
        log.error("could not write the failure file in %s: %s", paths.output_dir, exc)
