"""inference's message entry: which handler each message on its work queue goes to (shared/worker.py)."""

from __future__ import annotations

from services.inference.bootstrap import build_deps
from services.inference.deployments import advance
from services.inference.deps import Deps
from services.inference.evaluations import run_evaluation
from services.inference.model_lifecycle import project_fine_tuned_model
from services.inference.projections import delete_user_data, project_file
from services.inference.settings import Settings
from shared.contracts.auth_events import UserDeleted
from shared.contracts.files_events import FileDeleted, FileRejected, FileUploaded, FileValidated
from shared.contracts.inference_events import DeploymentChanged, EvaluationRequested
from shared.contracts.training_events import JobSucceeded
from shared.worker import Route, on, run_worker


async def advance_deployment(event: DeploymentChanged, deps: Deps) -> None:
    await advance(event.deployment_id, deps)


ROUTES: tuple[Route[Deps], ...] = (
    on(DeploymentChanged, advance_deployment),
    on(EvaluationRequested, run_evaluation),
    on(JobSucceeded, project_fine_tuned_model),
    on(FileUploaded, project_file),
    on(FileValidated, project_file),
    on(FileRejected, project_file),
    on(FileDeleted, project_file),
    on(UserDeleted, delete_user_data),
)


def main() -> None:
    settings = Settings()
    run_worker("inference", settings, settings.work_queue, settings.inbox_table,
               lambda aws: build_deps(aws, settings), ROUTES)


if __name__ == "__main__":
    main()
