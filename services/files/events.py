"""Events the files service publishes (to `llm-tuner-files-events`) and consumes.

Published:
- `file.uploaded`  {file_id, user_id, purpose, filename, bytes, s3_uri}
- `file.validated` {file_id, user_id, purpose, filename, bytes, s3_uri, status: "processed", examples}
- `file.rejected`  {file_id, user_id, purpose, filename, bytes, s3_uri, status: "error", examples, error, errors[]}
Consumed (its work queue `llm-tuner-files-worker`): `file.uploaded` -> validate the object.
"""

FILE_UPLOADED = "file.uploaded"
FILE_VALIDATED = "file.validated"
FILE_REJECTED = "file.rejected"
FILE_DELETED = "file.deleted"
