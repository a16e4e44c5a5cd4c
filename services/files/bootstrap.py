"""Builds the files service's dependencies once, for the API and the worker alike."""

from __future__ import annotations

from services.files.deps import Deps
from services.files.formats import Limits
from services.files.quota import UsageStore
from services.files.settings import Settings
from services.files.store import FilesStore
from shared.aws import AwsClients
from shared.envelope import Publisher
from shared.s3 import sse_args


async def build_deps(aws: AwsClients, settings: Settings) -> Deps:
    return Deps(files=FilesStore(await aws.get("dynamodb"), settings.files_table), s3=await aws.get("s3"),
                bucket=settings.bucket,
                events=Publisher(await aws.get("sns"), await aws.topic_arn(settings.events_topic)),
                max_file_bytes=settings.max_file_bytes, upload_part_bytes=settings.upload_part_bytes,
                limits=Limits(max_line_bytes=settings.max_line_bytes,
                              context_tokens=settings.validation_context_tokens,
                              text_chunk_chars=settings.text_chunk_chars),
                usage=UsageStore(await aws.get("dynamodb"), settings.usage_table, settings.files_table),
                user_quota_bytes=settings.user_quota_bytes, max_direct_upload_bytes=settings.max_direct_upload_bytes,
                upload_url_ttl_s=settings.upload_url_ttl_s, sse=sse_args(settings.s3_kms_key_id),
                max_open_uploads=settings.max_open_uploads, upload_max_age_s=settings.upload_max_age_s)
