"""What the files worker does for each event on its queue (`llm-tuner-files-worker`), and ROUTES, which maps each
event's contract model to its handler:

- `file.uploaded` (its own, shared/contracts/files_events.py) -> validate the object, announce `file.validated`
  or `file.rejected`;
- `user.deleted` (auth's, shared/contracts/auth_events.py) -> remove every file of that user, all object versions
  included, each announced as `file.deleted`;
- `training.job.succeeded` (training's, shared/contracts/training_events.py) -> register the job's results CSV
  as a file (purpose fine-tune-results, status processed), once.
"""

from __future__ import annotations

import logging
import time

from services.files import validation
from services.files.deps import Deps
from services.files.filenames import clean_filename
from services.files.models import FileRecord, file_event_fields
from services.files.object_keys import files_prefix, object_key, user_prefixes
from services.files.quota import AccountDeleted
from shared.contracts.auth_events import UserDeleted
from shared.contracts.files_events import FileDeleted, FileRejected, FileUploaded, FileValidated
from shared.contracts.training_events import JobSucceeded
from shared.envelope import new_event
from shared.s3 import abort_multipart_uploads, delete_key_versions, delete_object_versions
from shared.worker import Route, on

log = logging.getLogger(__name__)
MAX_ERRORS_IN_EVENT = 20  # the whole list is in the report


async def validate_file(event: FileUploaded, deps: Deps) -> None:
    """Stream a fine-tune file from S3 through validation (its normalised examples and report go to S3), record
    the outcome and the report's summary, announce it. Files of other purposes are stored as they are."""
    record = await deps.files.get(event.file_id)
    if record is not None and record.status in ("processed", "error"):
        # Validated before, yet the message is back: the inbox drops a message once handled to the end, so the
        # handling that recorded the outcome stopped before its end (its worker killed, AWS refusing), maybe
        # before the announcement, which nobody would ever send then. Announced again: consumers take it once.
        await deps.events.publish(new_event(recorded_outcome(record, deps.bucket), user_id=record.user_id))
        return
    if record is None or record.status != "uploaded":
        return  # deleted, or not uploaded yet: nothing to do
    fields = file_event_fields(record, deps.bucket)
    if record.purpose not in validation.VALIDATED_PURPOSES:
        if await deps.files.set_result(record.file_id, "processed", None, 0):
            await deps.events.publish(new_event(FileValidated(**fields, examples=0), user_id=record.user_id))
        return
    result = await validation.validate_object(record, deps)
    report = result.report
    status = "processed" if report.ok else "error"
    summary = {**report.summary(), "report_key": result.report_key}
    if result.normalized_key:
        summary["normalized_key"] = result.normalized_key
    if not await deps.files.set_result(record.file_id, status, report.status_details(), report.examples, summary):
        if await deps.files.get(record.file_id) is None:  # deleted while it was being validated: leave nothing
            for key in (result.report_key, result.normalized_key):
                if key:
                    await delete_key_versions(deps.s3, deps.bucket, key)
        return
    fields |= {"examples": report.examples, "format": report.body["format"],
               "example_type": report.body["example_type"],
               "estimated_tokens": report.body["statistics"]["estimated_tokens"],
               "normalized_uri": f"s3://{deps.bucket}/{result.normalized_key}" if result.normalized_key else None,
               "report_uri": f"s3://{deps.bucket}/{result.report_key}"}
    outcome = FileValidated(**fields) if report.ok else FileRejected(
        **fields, error=report.status_details(), errors=report.errors[:MAX_ERRORS_IN_EVENT])
    await deps.events.publish(new_event(outcome, user_id=record.user_id))
    log.info("file validated", extra={"file_id": record.file_id, "status": status, "examples": report.examples,
                                      "format": report.body["format"]})


def recorded_outcome(record: FileRecord, bucket: str) -> FileValidated | FileRejected:
    """A validated file's outcome event from its record (the rejection's first errors are in its report)."""
    fields = {**file_event_fields(record, bucket), "examples": record.examples or 0, "format": record.format,
              "example_type": record.example_type, "estimated_tokens": record.estimated_tokens,
              "normalized_uri": f"s3://{bucket}/{record.normalized_key}" if record.normalized_key else None,
              "report_uri": f"s3://{bucket}/{record.report_key}" if record.report_key else None}
    if record.status == "processed":
        return FileValidated(**fields)
    return FileRejected(**fields, error=record.status_details or "The file is not valid.")


async def delete_user_data(event: UserDeleted, deps: Deps) -> None:
    """A deleted account's files go with it: every object version, every record, its direct uploads in flight
    (idempotent). The account's tombstone comes first, so that an upload still in flight cannot reserve, open
    or complete anything afterwards (its late object is removed by whoever completes it)."""
    user_id = event.user_id
    await deps.usage.forget(user_id)
    for record in await deps.files.list_for_user(user_id):
        await delete_object_versions(deps.s3, deps.bucket, record.s3_key)
        await deps.files.delete(record.file_id)
        deleted = FileDeleted(**file_event_fields(record, deps.bucket), reason="user_deleted")
        await deps.events.publish(new_event(deleted, user_id=user_id))
    await abort_multipart_uploads(deps.s3, deps.bucket, files_prefix(user_id))  # direct uploads in flight
    for prefix in user_prefixes(user_id):
        await delete_object_versions(deps.s3, deps.bucket, prefix)  # objects that never got a record
    log.info("user's files removed", extra={"user_id": user_id})


async def register_results_file(event: JobSucceeded, deps: Deps) -> None:
    """The job's results CSV, which training wrote under this user's files, becomes a file (purpose
    fine-tune-results, status processed). Once, however often the event arrives."""
    result, user_id = event.result_file, event.user_id
    key = object_key(user_id, result.file_id)
    if result.s3_key != key:
        log.warning("result file outside its user's keys; ignored", extra={"file_id": result.file_id})
        return
    if await deps.files.get(result.file_id) is not None:
        return  # registered by an earlier delivery
    record = FileRecord(file_id=result.file_id, user_id=user_id, filename=clean_filename(result.filename),
                        purpose="fine-tune-results", bytes=result.bytes, created_at=int(time.time()),
                        status="processed", s3_key=key)
    try:  # results count against the quota, and are never refused; the record and its bytes together, once
        if not await deps.usage.put_file(record, count_bytes=record.bytes):
            return  # a concurrent delivery registered it
    except AccountDeleted:  # the job ended after its owner's account went: nothing of it stays
        await delete_key_versions(deps.s3, deps.bucket, key)
        log.info("result file of a deleted account removed", extra={"file_id": result.file_id})
        return
    log.info("result file registered", extra={"file_id": result.file_id, "job_id": event.job_id})


ROUTES: tuple[Route[Deps], ...] = (on(FileUploaded, validate_file), on(UserDeleted, delete_user_data),
                                   on(JobSucceeded, register_results_file))
