"""The local SageMaker emulator running a fake, fast trainer script, with SageMaker clients pointed at it:
for the training service's integration tests (the real trainer runs in the e2e and spot tests)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from deploy.local.demo_model import DEMO_MODEL_PREFIX
from shared.contracts import resources
from tests.support.aws import ROOT, start_emulator_process


@contextmanager
def emulator_with_fake_trainer(work: Path, trainer_script: str, **settings: str) -> Iterator[str]:
    """Start it (`settings` are SAGEMAKER_EMULATOR_* variables), yield its URL, stop it, restore the env."""
    # The catalog's demo model is a `model` channel; a fake trainer never reads it, but it must exist.
    boto3.client("s3").put_object(Bucket=resources.BUCKET, Key=f"{DEMO_MODEL_PREFIX}config.json", Body=b"{}")
    script = work / "fake_trainer.py"
    script.write_text(trainer_script)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **settings,
           "SAGEMAKER_EMULATOR_ENTRYPOINT": json.dumps([sys.executable, str(script)])}
    proc, url = start_emulator_process(work / "jobs", env, work / "emulator.log")
    saved = os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER")
    os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] = url
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL_SAGEMAKER", None)
        else:
            os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] = saved
