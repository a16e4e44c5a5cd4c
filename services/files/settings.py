from __future__ import annotations

from pydantic import Field

from shared.body_limit import upload_routes
from shared.contracts import resources
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    files_table: str = Field(resources.FILES_TABLE, alias="DYNAMODB_FILES_TABLE")
    inbox_table: str = Field(resources.FILES_INBOX_TABLE, alias="FILES_INBOX_TABLE")
    bucket: str = Field(resources.BUCKET, alias="S3_BUCKET_NAME")
    events_topic: str = Field(resources.FILES_TOPIC, alias="FILES_EVENTS_TOPIC")
    work_queue: str = Field(resources.FILES_QUEUE, alias="FILES_WORK_QUEUE")
    max_file_bytes: int = 512 * 1024 * 1024  # OpenAI's per-file limit for the files API
    upload_part_bytes: int = 8 * 1024 * 1024  # memory held per upload: one part
    # Uploads and storage (issue #4): direct browser-to-S3 uploads, the per-user quota, encryption at rest.
    usage_table: str = Field(resources.FILES_USAGE_TABLE, alias="DYNAMODB_FILES_USAGE_TABLE")
    user_quota_bytes: int = 10 * 1024**3  # USER_QUOTA_BYTES: everything one user may store
    max_direct_upload_bytes: int = 8 * 1024**3  # MAX_DIRECT_UPLOAD_BYTES: OpenAI's Uploads API limit
    upload_url_ttl_s: int = 6 * 3600  # presigned part URLs; an upload not completed by then is swept
    max_open_uploads: int = 5  # MAX_OPEN_UPLOADS: direct uploads one user may have open at once (429 beyond)
    # UPLOAD_MAX_AGE_S: the files worker aborts direct uploads older than this (their parts, record and quota),
    # looking every UPLOAD_SWEEP_INTERVAL_S.
    upload_max_age_s: int = 24 * 3600
    upload_sweep_interval_s: float = 3600
    s3_kms_key_id: str | None = None  # S3_KMS_KEY_ID: SSE-KMS with this key, else SSE-S3
    # Validation: lines longer than this are an error rather than a memory hazard.
    max_line_bytes: int = 4 * 1024 * 1024
    # Examples estimated longer than this many tokens are reported as likely to be truncated.
    validation_context_tokens: int = 4096
    text_chunk_chars: int = 2000  # plain text becomes training chunks of about this many characters

    model_config = ServiceSettings.model_config | {"populate_by_name": True}

    def route_body_limits(self) -> dict[tuple[str, str], int]:
        return upload_routes(self.max_file_bytes)
