from __future__ import annotations

from pydantic import Field

from deploy import resources
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    files_table: str = Field(resources.FILES_TABLE, alias="DYNAMODB_FILES_TABLE")
    inbox_table: str = Field(resources.FILES_INBOX_TABLE, alias="FILES_INBOX_TABLE")
    bucket: str = Field(resources.BUCKET, alias="S3_BUCKET_NAME")
    events_topic: str = Field(resources.FILES_TOPIC, alias="FILES_EVENTS_TOPIC")
    work_queue: str = Field(resources.FILES_QUEUE, alias="FILES_WORK_QUEUE")
    max_file_bytes: int = 512 * 1024 * 1024  # OpenAI's per-file limit for the files API
    upload_part_bytes: int = 8 * 1024 * 1024  # memory held per upload: one part
    # Validation: lines longer than this are an error rather than a memory hazard.
    max_line_bytes: int = 4 * 1024 * 1024

    model_config = ServiceSettings.model_config | {"populate_by_name": True}
