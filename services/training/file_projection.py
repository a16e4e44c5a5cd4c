"""training's own projection of the files its jobs use, fed by files' events (training never reads files' table):
`file.uploaded` -> uploaded, `file.validated` -> processed (with the validation's statistics and the normalised
examples' URI), `file.rejected` -> error, `file.deleted` -> deleted. A state never goes back (store.put_file).

When a file settles (validated, rejected or deleted), every job still in validating_files that names it is woken:
its launch command is sent again, and the launch, reading the file's new state, queues the job or fails it. (A
launch that ran before the file settled recorded nothing more: the job's own record is its wait.) The jobs come
from the jobs table's sparse status-index, which follows the table within a moment: a job created within that
moment of its file settling, whose launch read the file just before, is the reconciler's to launch
(reconcile_stuck_launch_s).
"""

from __future__ import annotations

import logging

from services.training.deps import Deps
from services.training.models import FileView
from shared.contracts.files_events import FileEvent, FileRejected, ValidationResult, file_status
from shared.contracts.training_events import LaunchRequested
from shared.envelope import new_event

log = logging.getLogger(__name__)


def file_view(event: FileEvent) -> FileView:
    report = event if isinstance(event, ValidationResult) else None
    return FileView(file_id=event.file_id, user_id=event.user_id, status=file_status(event), purpose=event.purpose,
                    s3_uri=event.s3_uri, examples=report.examples if report else None,
                    error=event.error if isinstance(event, FileRejected) else None,
                    normalized_uri=report.normalized_uri if report else None,
                    example_type=report.example_type if report else None,
                    estimated_tokens=report.estimated_tokens if report else None)


async def project_file(event: FileEvent, deps: Deps) -> None:
    view = file_view(event)
    await deps.jobs.put_file(view)
    if view.status == "uploaded":
        return  # still validating: the jobs waiting on it wait on
    # After the write: a launch that read the file before it is woken here, one that reads it after sees it settled.
    waiting = await deps.jobs.jobs_waiting_on_file(view.file_id)
    for job in waiting:
        await deps.commands.send(new_event(LaunchRequested(job_id=job.job_id), user_id=job.user_id,
                                           correlation_id=job.correlation_id))
    if waiting:
        log.info("waiting launches woken", extra={"file_id": view.file_id, "status": view.status,
                                                  "jobs": len(waiting)})
