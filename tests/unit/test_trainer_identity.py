"""A run's fingerprint must not hold a path of its container: a paused job resumes in a new SageMaker job (a new
container, its channels mounted elsewhere) and must find its checkpoint its own (job.model_identity)."""

from __future__ import annotations

import shutil
from pathlib import Path

from trainer_image.llmt_trainer.job import model_identity


def _model(folder: Path, hidden: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(f'{{"hidden_size": {hidden}}}')
    (folder / "model.safetensors").write_bytes(b"w" * hidden)
    return folder


def test_the_same_model_in_another_place_is_the_same_model(tmp_path: Path) -> None:
    first = _model(tmp_path / "job" / "opt_ml" / "input" / "data" / "model", 64)
    moved = shutil.copytree(first, tmp_path / "job-2" / "opt_ml" / "input" / "data" / "model")
    assert model_identity(first) == model_identity(Path(moved))


def test_another_model_is_another_identity(tmp_path: Path) -> None:
    assert model_identity(_model(tmp_path / "a", 64)) != model_identity(_model(tmp_path / "b", 32))
