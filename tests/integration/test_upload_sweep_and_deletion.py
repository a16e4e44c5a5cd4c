"""Direct uploads that cannot carry more than declared, are capped per user, are swept on a schedule, and leave
nothing behind when their account is deleted while they are in flight. Against the embedded AWS over HTTP; the
races are made deterministic by running auth's deletion event at the exact step of the upload under test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from services.files import worker
from services.files.app import build_app as build_files_app
from services.files.bootstrap import build_deps
from services.files.deps import Deps
from services.files.direct_uploads import CompleteUpload, CreateUpload, complete_upload, create_upload
from services.files.event_handlers import delete_user_data
from services.files.quota import AccountDeleted
from services.files.settings import Settings as FilesSettings
from services.files.upload_reservations import sweep_old_uploads
from shared.aws import AwsClients
from shared.contracts import resources
from shared.contracts.auth_events import UserDeleted
from shared.contracts.training_events import JobSucceeded, ResultFile
from shared.envelope import Event, new_event
from shared.errors import NotFound
from tests.integration.test_file_uploads import SMALL, assert_error, complete, open_uploads, put_parts, usage, versions
from tests.integration.test_file_uploads import create_upload as create
from tests.support.accounts import bearer, register
from tests.support.files import upload
from tests.support.polling import poll
from tests.support.servers import serve
from tests.support.workers import drain

MiB = 1024 * 1024


def usage_item(session: dict[str, Any]) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(TableName=resources.FILES_USAGE_TABLE, ConsistentRead=True,
                                             Key={"user_id": {"S": session["user"]["id"]}}).get("Item")
    return {k: int(v["N"]) for k, v in (item or {}).items() if "N" in v}


def records(session: dict[str, Any]) -> list[str]:
    items = boto3.client("dynamodb").scan(TableName=resources.FILES_TABLE, FilterExpression="user_id = :u",
                                          ExpressionAttributeValues={":u": {"S": session["user"]["id"]}})["Items"]
    return [i["file_id"]["S"] for i in items]


def everything_stored(session: dict[str, Any]) -> list[Any]:
    user = session["user"]["id"]
    return [*(versions(p) for p in (f"files/{user}/", f"normalized/{user}/", f"reports/{user}/") if versions(p)),
            *open_uploads(session), *records(session)]


def with_deps(body: Callable[[Deps], Awaitable[Any]], settings: FilesSettings | None = None) -> Any:
    """Run `body` with the files service's real dependencies (as its API and worker build them)."""
    async def run() -> Any:
        aws = AwsClients(settings or FilesSettings())
        try:
            return await body(await build_deps(aws, settings or FilesSettings()))
        finally:
            await aws.close()
    return asyncio.run(run())


def deletion(session: dict[str, Any]) -> UserDeleted:
    return UserDeleted(user_id=session["user"]["id"], until=int(time.time()) + 3600)


def publish(topic: str, event: Event) -> None:
    envelope = new_event(event, user_id=getattr(event, "user_id", None))
    boto3.client("sns").publish(TopicArn=topic, Message=envelope.model_dump_json(),
                                MessageAttributes={"type": {"DataType": "String", "StringValue": envelope.type}})


# ---- a part carries what was declared, no more ---------------------------------------------------------------

@pytest.mark.parametrize("extra", [-10, MiB], ids=["shorter", "longer"])
def test_a_part_of_another_size_than_declared_discards_the_upload(files_url: str, auth_url: str,
                                                                   extra: int) -> None:
    """Each part URL signs its length, so S3 itself refuses a part of another size (its form: test_presign.py).
    The embedded AWS checks no signature, so completion checks each stored part (ListParts) too: a longer part
    would otherwise store bytes past the quota."""
    session = register(auth_url)
    body = create(files_url, session, len(SMALL)).json()
    url = body["parts"][0]["url"]
    assert parse_qs(urlsplit(url).query)["X-Amz-SignedHeaders"] == ["content-length;host"]
    content = SMALL[:extra] if extra < 0 else SMALL + b"x" * extra
    sent = httpx.put(url, content=content, timeout=60)
    assert sent.status_code == 200, sent.text
    response = complete(files_url, session, body["id"], [{"part_number": 1, "etag": sent.headers["etag"]}])
    error = assert_error(response, 400, "part_size_mismatch")
    assert error["param"] == "parts" and f"{len(content)} bytes" in error["message"]
    assert everything_stored(session) == [] and usage(session) == 0 and usage_item(session)["open_uploads"] == 0
    assert_error(complete(files_url, session, body["id"], [{"part_number": 1, "etag": "x"}]), 404)


# ---- open uploads capped per user ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def capped_files_url(auth_url: str) -> Iterator[str]:
    with serve(build_files_app(FilesSettings(max_open_uploads=2))) as url:
        yield url


def test_open_uploads_are_capped_per_user(capped_files_url: str, auth_url: str) -> None:
    url = capped_files_url
    session, other = register(auth_url), register(auth_url)
    first, second = (create(url, session, len(SMALL)).json() for _ in range(2))
    refused = assert_error(create(url, session, len(SMALL)), 429, "too_many_open_uploads")
    assert refused["type"] == "rate_limit_error"
    # The refused one holds nothing: no S3 upload, no record, no quota.
    assert len(open_uploads(session)) == 2 and len(records(session)) == 2 and usage(session) == 2 * len(SMALL)
    assert create(url, other, len(SMALL)).status_code == 200  # the cap is per user

    # Completing one, or aborting one, gives its place back.
    assert complete(url, session, first["id"], put_parts(first, SMALL)).status_code == 200
    assert create(url, session, len(SMALL)).status_code == 200
    assert_error(create(url, session, len(SMALL)), 429, "too_many_open_uploads")
    assert httpx.delete(f"{url}/api/uploads/{second['id']}", headers=bearer(session)).status_code == 200
    assert create(url, session, len(SMALL)).status_code == 200
    assert usage_item(session)["open_uploads"] == 2 and len(open_uploads(session)) == 2


# ---- swept on a schedule -------------------------------------------------------------------------------------

def test_the_sweep_aborts_old_uploads_and_releases_their_quota(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    user = session["user"]["id"]
    old, young = (create(files_url, session, len(SMALL)).json() for _ in range(2))
    put_parts(old, SMALL)
    created = int(time.time())
    boto3.client("dynamodb").update_item(  # created a day ago
        TableName=resources.FILES_TABLE, Key={"file_id": {"S": old["id"]}}, UpdateExpression="SET created_at = :t",
        ExpressionAttributeValues={":t": {"N": str(created - 86400)}})
    assert len(open_uploads(session)) == 2 and usage(session) == 2 * len(SMALL)

    swept = with_deps(lambda deps: sweep_old_uploads(deps, created - 3600))  # older than an hour
    assert swept >= 1
    assert [u["Key"] for u in open_uploads(session)] == [f"files/{user}/{young['id']}"]
    assert records(session) == [young["id"]] and usage(session) == len(SMALL)
    assert usage_item(session)["open_uploads"] == 1
    assert_error(complete(files_url, session, old["id"], [{"part_number": 1, "etag": "x"}]), 404)
    with_deps(lambda deps: sweep_old_uploads(deps, created + 60))  # a minute from now: the young one too
    assert open_uploads(session) == [] and records(session) == [] and usage(session) == 0
    assert usage_item(session)["open_uploads"] == 0


def test_the_files_worker_sweeps_on_its_schedule(files_url: str, auth_url: str) -> None:
    """The worker's own wiring (services/files/worker.py), with a short age: the upload goes without any quota
    filling up and without anyone asking."""
    session = register(auth_url)
    put_parts(create(files_url, session, len(SMALL)).json(), SMALL)
    settings = FilesSettings(upload_max_age_s=0, upload_sweep_interval_s=0.2)

    async def run() -> None:
        aws = AwsClients(settings)
        try:
            await worker.deps_and_sweep(aws, settings)
            await asyncio.to_thread(poll, lambda: open_uploads(session) == [] and usage(session) == 0, 20,
                                    "the worker's sweep to abort the old upload")
        finally:
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()
            await aws.close()
    asyncio.run(run())
    assert records(session) == [] and usage_item(session)["open_uploads"] == 0


# ---- account deletion with uploads in flight -----------------------------------------------------------------

def test_account_deletion_removes_uploads_in_flight_and_refuses_late_ones(files_url: str, auth_url: str,
                                                                          provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    user = session["user"]["id"]
    assert upload(files_url, session, SMALL).status_code == 200
    pending = create(files_url, session, len(SMALL)).json()
    parts = put_parts(pending, SMALL)  # every part stored, not yet completed

    publish(provisioned["topics"][resources.AUTH_TOPIC], deletion(session))
    asyncio.run(drain("files", until=lambda: "deleted_at" in usage_item(session)))
    assert everything_stored(session) == [] and set(usage_item(session)) == {"deleted_at"}

    # Requests still carrying the account's token, after its deletion was handled: nothing is stored.
    assert_error(complete(files_url, session, pending["id"], parts), 404)
    assert_error(create(files_url, session, len(SMALL)), 401, "account_deleted")
    assert_error(upload(files_url, session, SMALL), 401, "account_deleted")
    # A job that ends after its owner went: its results file is removed, not registered.
    key = f"files/{user}/file-{uuid.uuid4().hex[:24]}"
    boto3.client("s3").put_object(Bucket=resources.BUCKET, Key=key, Body=b"step,train_loss\n1,1.0\n")
    publish(provisioned["topics"][resources.TRAINING_TOPIC], JobSucceeded(
        job_id="ftjob-late", user_id=user, model="llm-tuner/tiny-chat", fine_tuned_model="ft:llm-tuner/tiny-chat:l",
        result_file=ResultFile(file_id=key.rsplit("/", 1)[1], s3_key=key, bytes=22, filename="step_metrics.csv")))
    asyncio.run(drain("files", until=lambda: versions(key) == []))
    assert everything_stored(session) == [] and set(usage_item(session)) == {"deleted_at"}


@pytest.mark.parametrize("moment", ["assembled", "before_record_update"])
def test_a_completion_racing_the_deletion_is_refused_and_its_object_removed(files_url: str, auth_url: str,
                                                                            moment: str) -> None:
    """The deletion is handled while a completion is half-way: once S3 assembled the object, or after its size
    was checked and before the record says `uploaded`. The completion is refused and nothing stays."""
    session = register(auth_url)
    body = create(files_url, session, len(SMALL)).json()
    parts = CompleteUpload.model_validate({"parts": put_parts(body, SMALL)})
    user = session["user"]["id"]

    async def race(deps: Deps) -> None:
        if moment == "assembled":
            assemble = deps.s3.complete_multipart_upload

            async def assemble_then_delete(**kwargs: Any) -> Any:
                answer = await assemble(**kwargs)
                await delete_user_data(deletion(session), deps)
                return answer
            deps.s3.complete_multipart_upload = assemble_then_delete  # type: ignore[method-assign]
        else:
            finish = deps.usage.finish_upload

            async def delete_then_finish(file_id: str, user_id: str) -> bool:
                await delete_user_data(deletion(session), deps)
                return await finish(file_id, user_id)
            deps.usage.finish_upload = delete_then_finish  # type: ignore[method-assign]
        with pytest.raises(NotFound):
            await complete_upload(body["id"], parts, user, deps)
    with_deps(race)
    assert everything_stored(session) == [] and set(usage_item(session)) == {"deleted_at"}


def test_an_upload_created_while_the_account_is_deleted_is_refused(auth_url: str) -> None:
    """The deletion is handled after the upload's quota was reserved and before its S3 upload is opened."""
    session = register(auth_url)

    async def race(deps: Deps) -> None:
        open_upload = deps.s3.create_multipart_upload

        async def delete_then_open(**kwargs: Any) -> Any:
            await delete_user_data(deletion(session), deps)
            return await open_upload(**kwargs)
        deps.s3.create_multipart_upload = delete_then_open  # type: ignore[method-assign]
        with pytest.raises(AccountDeleted):
            await create_upload(CreateUpload(filename="a.jsonl", purpose="fine-tune", bytes=len(SMALL)),
                                session["user"]["id"], deps)
    with_deps(race)
    assert everything_stored(session) == [] and set(usage_item(session)) == {"deleted_at"}
