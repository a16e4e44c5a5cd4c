"""training's message entry: which handler each message on its work queue goes to, parsed into its contract
model first (shared/worker.py). The launch command is training's own; the rest are other producers' events."""

from __future__ import annotations

from services.training.bootstrap import build_deps
from services.training.deps import Deps
from services.training.file_projection import project_file
from services.training.launch import launch_job
from services.training.model_deletion import delete_model_artifacts
from services.training.sagemaker_state import on_sagemaker_state
from services.training.settings import Settings
from services.training.user_deletion import delete_user_data
from shared.contracts.auth_events import UserDeleted
from shared.contracts.files_events import FileDeleted, FileRejected, FileUploaded, FileValidated
from shared.contracts.inference_events import ModelDeleted
from shared.contracts.sagemaker_events import TrainingJobStateChanged
from shared.contracts.training_events import LaunchRequested
from shared.worker import Route, on, run_worker

ROUTES: tuple[Route[Deps], ...] = (
    on(LaunchRequested, launch_job),
    on(FileUploaded, project_file),
    on(FileValidated, project_file),
    on(FileRejected, project_file),
    on(FileDeleted, project_file),
    on(TrainingJobStateChanged, on_sagemaker_state),
    on(UserDeleted, delete_user_data),
    on(ModelDeleted, delete_model_artifacts),
)


def main() -> None:
    settings = Settings()
    run_worker("training", settings, settings.work_queue, settings.inbox_table,
               lambda aws: build_deps(aws, settings), ROUTES)


if __name__ == "__main__":
    main()
