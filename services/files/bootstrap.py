"""Builds the files service's dependencies once, for the API and the worker alike."""

from __future__ import annotations

from services.files.handlers import Deps
from services.files.settings import Settings
from services.files.store import FilesStore
from shared.aws import AwsClients
from shared.events import Publisher


async def build_deps(aws: AwsClients, settings: Settings) -> Deps:
    return Deps(files=FilesStore(await aws.get("dynamodb"), settings.files_table), s3=await aws.get("s3"),
                bucket=settings.bucket,
                events=Publisher(await aws.get("sns"), await aws.topic_arn(settings.events_topic)),
                max_file_bytes=settings.max_file_bytes, upload_part_bytes=settings.upload_part_bytes,
                max_line_bytes=settings.max_line_bytes)
