"""Where in the one bucket each process, and each SageMaker role, works: prefixes, never the whole bucket.

The prefixes are the services' own key layouts:
- `files/{user}/{file}`: a file's bytes as uploaded, and direct uploads in flight (services/files/object_keys.py);
  training writes a succeeded job's results CSV there too (services/training/results_file.py), which files then
  registers and serves, and training's artifact links point at.
- `normalized/{user}/{file}.jsonl`, `reports/{user}/{file}.json`: what files' validation derives from a file.
  The trainer reads the normalised examples (the `train` channel); evaluations read them too.
- `training-jobs/{user}/{job}/...`: SageMaker's output (the adapter `output/model.tar.gz`, `output/output.tar.gz`
  with the metrics), checkpoints, the trainer's merged model (services/training/training_job_request.py).
- `base-models/...`: copies of base models (services/training/catalog.json's artifact_prefix), which the operator
  uploads; jobs and endpoints read them.
- `evaluations/{user}/{evaluation}.json`: evaluation results (services/inference/evaluations.py).
- `code/{digest}/`: the trainer's source bundle, used only in LAUNCH_MODE=script (the local emulator); the
  deployment launches the trainer image (LAUNCH_MODE=image), so no role is granted it.
"""

from __future__ import annotations

from dataclasses import dataclass

FILES = "files/"
NORMALIZED = "normalized/"
REPORTS = "reports/"
TRAINING_JOBS = "training-jobs/"
BASE_MODELS = "base-models/"
EVALUATIONS = "evaluations/"


@dataclass(frozen=True)
class BucketPrefixes:
    """A process's part of the bucket."""

    owns: tuple[str, ...]  # its service's own objects: read, written, listed and deleted
    reads: tuple[str, ...] = ()  # what other services wrote, read only (GetObject, and presigned GETs of it)
    writes: tuple[str, ...] = ()  # another service's prefix it adds objects to, write only (PutObject)


_FILES = BucketPrefixes(owns=(FILES, NORMALIZED, REPORTS))
# The API lists checkpoints and links to artifacts (its own) and to the results CSV (under files/: read only);
# the worker and the reconciler (both settle a finished job) write that CSV, read it back when a repeated
# Completed finds the job already succeeded (results_file.written_results), and remove a deleted model's or
# user's artifacts.
_TRAINING_SETTLES = BucketPrefixes(owns=(TRAINING_JOBS,), reads=(FILES,), writes=(FILES,))

BUCKET_PREFIXES: dict[str, BucketPrefixes] = {
    "files": _FILES,
    "files-worker": _FILES,
    "training": BucketPrefixes(owns=(TRAINING_JOBS,), reads=(FILES,)),
    "training-worker": _TRAINING_SETTLES,
    "training-reconciler": _TRAINING_SETTLES,
    "inference": BucketPrefixes(owns=(EVALUATIONS,)),
    # Evaluates the normalised examples of a file (files writes them).
    "inference-worker": BucketPrefixes(owns=(EVALUATIONS,), reads=(NORMALIZED,)),
    "inference-reconciler": BucketPrefixes(owns=(EVALUATIONS,)),
}

# The SageMaker execution role (training jobs): its input channels (the normalised examples of the training and
# validation files, a base model's copy), and its output, checkpoints and merged model under the job's own prefix
# (read back when a spot job resumes from its checkpoints). Not files/: a job's files are validated ones, which
# have normalised examples (TrainingFile.train_uri falls back to the original only for files validated before
# normalising existed, which no deployment made since holds; such a file is uploaded again).
SAGEMAKER_JOB_READS = (NORMALIZED, BASE_MODELS)
SAGEMAKER_JOB_OWNS = (TRAINING_JOBS,)
