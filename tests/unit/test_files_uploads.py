"""Pure pieces of uploads and storage: the streamed multipart form, filenames and Content-Disposition, quota
arithmetic and reservations, the part plan of direct uploads, the objects a file owns, encryption arguments,
and which handler each consumed event reaches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.files import event_handlers
from services.files.direct_uploads import MAX_PARTS, MiB, part_plan
from services.files.filenames import clean_filename, content_disposition
from services.files.models import FileRecord
from services.files.multipart_form import StreamedForm
from services.files.object_keys import stored_keys
from services.files.quota import (
    CONFLICT_ATTEMPTS,
    AccountDeleted,
    QuotaExceeded,
    Reservation,
    TooManyOpenUploads,
    UsageStore,
    reservation_step,
    usage_ceiling,
)
from shared.contracts.auth_events import USER_DELETED
from shared.contracts.files_events import FILE_UPLOADED
from shared.contracts.training_events import JOB_SUCCEEDED
from shared.errors import InvalidRequest
from shared.s3 import sse_args
from shared.worker import route_table


@pytest.mark.parametrize(("sent", "shown"), [
    ("train.jsonl", "train.jsonl"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\data.jsonl", "data.jsonl"),
    ("tab\there\x00\x1b[31m.jsonl", "tabhere[31m.jsonl"),
    ("right\u202eto-left.jsonl", "rightto-left.jsonl"),
    ("  spaced  ", "spaced"),
    ("cafe\u0301.jsonl", "caf\u00e9.jsonl"),  # NFC
    ("", "upload"), (None, "upload"), ("..", "upload"), ("dir/", "upload"), ("\x00\x01", "upload"),
    ("x" * 1000 + ".jsonl", "x" * 249 + ".jsonl"),
    ("x" * 1000, "x" * 255),
    ("x" * 300 + "." + "y" * 40, ("x" * 300 + "." + "y" * 40)[:255]),  # no real extension to keep
])
def test_clean_filename(sent: str | None, shown: str) -> None:
    assert clean_filename(sent) == shown
    assert len(clean_filename(sent)) <= 255


@pytest.mark.parametrize(("name", "header"), [
    ("train.jsonl", 'attachment; filename="train.jsonl"'),
    ('say "hi".txt', "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt"),
    ("back\\slash", 'attachment; filename="slash"'),  # a path separator: the last segment
    ("100%.csv", "attachment; filename=\"100_.csv\"; filename*=UTF-8''100%25.csv"),
    ("données.csv", "attachment; filename=\"donn_es.csv\"; filename*=UTF-8''donn%C3%A9es.csv"),
    ("日本.txt", "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
    ("a\r\nSet-Cookie: x=1", 'attachment; filename="aSet-Cookie: x=1"'),  # no header injection
])
def test_content_disposition_is_rfc_6266_safe(name: str, header: str) -> None:
    value = content_disposition(name)
    assert value == header
    value.encode("latin-1")  # a valid header value: never raises
    assert "\r" not in value and "\n" not in value


def test_usage_ceiling() -> None:
    assert usage_ceiling(100, 30) == 70
    assert usage_ceiling(100, 100) == 0
    assert usage_ceiling(100, 0) == 100
    assert usage_ceiling(100, 101) is None  # larger than the whole quota: never fits
    assert usage_ceiling(100, -1) is None


@pytest.mark.parametrize(("reserved", "needed", "step", "ceiling", "more"), [
    (0, 10, 8, 100, 10),    # more than a step is needed: exactly that
    (0, 1, 8, 100, 8),      # a whole step at a time
    (8, 8, 8, 100, 0),      # covered
    (8, 9, 8, 100, 8),
    (96, 97, 8, 100, 4),    # never beyond the file limit
    (96, 100, 8, 100, 4),
])
def test_reservation_step(reserved: int, needed: int, step: int, ceiling: int, more: int) -> None:
    assert reservation_step(reserved, needed, step, ceiling) == more


class FakeUsage:
    def __init__(self, used: int = 0) -> None:
        self.used = used
        self.calls: list[int] = []

    async def reserve(self, user_id: str, n: int, quota: int) -> None:
        self.calls.append(n)
        if usage_ceiling(quota, n) is None or self.used > quota - n:
            raise QuotaExceeded(quota)
        self.used += n

    async def release(self, user_id: str, n: int) -> None:
        self.used -= n


def _reservation(usage: FakeUsage, quota: int = 100, step: int = 8, on_full: Any = None) -> Reservation:
    return Reservation(usage, "u", quota, step=step, ceiling=1000, on_full=on_full)


def test_a_reservation_grows_by_steps_then_settles_to_the_file() -> None:
    usage = FakeUsage()
    r = _reservation(usage)

    async def scenario() -> None:
        for total in (1, 5, 8, 9, 20):
            await r.cover(total)
        await r.settle(20)

    asyncio.run(scenario())
    assert usage.calls == [8, 8, 8] and usage.used == 20 and r.reserved == 20


def test_near_the_quota_a_reservation_falls_back_to_what_the_write_needs() -> None:
    usage = FakeUsage(used=95)
    r = _reservation(usage)
    asyncio.run(r.cover(3))  # a whole step (8) does not fit, 3 does
    assert usage.used == 98 and r.reserved == 3
    with pytest.raises(QuotaExceeded):
        asyncio.run(r.cover(6))
    asyncio.run(r.cancel())
    assert usage.used == 95 and r.reserved == 0


def test_a_full_quota_tries_to_free_space_once() -> None:
    usage = FakeUsage(used=100)
    freed: list[int] = []

    async def sweep() -> bool:
        freed.append(1)
        usage.used = 50
        return True

    r = _reservation(usage, on_full=sweep)
    asyncio.run(r.cover(40))
    assert usage.used == 90 and freed == [1]
    usage.used = 100
    with pytest.raises(QuotaExceeded):
        asyncio.run(r.cover(60))
    assert freed == [1]  # not again


@pytest.mark.parametrize("total", [1, 8 * MiB - 1, 8 * MiB, 8 * MiB + 1, 9 * MiB, 512 * MiB, 80 * 1024 * MiB,
                                   80 * 1024 * MiB + 1, 5 * 1024**4])
def test_part_plan(total: int) -> None:
    plan = part_plan(total)
    sizes = plan.sizes(total)
    assert plan.part_bytes >= 8 * MiB and plan.part_bytes % MiB == 0
    assert plan.count == len(sizes) <= MAX_PARTS
    assert sum(sizes) == total and all(0 < s <= plan.part_bytes for s in sizes)
    assert all(s == plan.part_bytes for s in sizes[:-1])  # S3: every part but the last is full size


def test_part_plan_grows_parts_only_past_ten_thousand() -> None:
    assert part_plan(9 * MiB).part_bytes == 8 * MiB
    assert part_plan(80 * 1024 * MiB).part_bytes == 9 * MiB  # 80 GiB / 10,000 parts rounds up to 9 MiB


def test_a_file_owns_its_object_and_what_validation_derived() -> None:
    record = FileRecord(file_id="file-1", user_id="u", filename="f", purpose="fine-tune", bytes=1, created_at=0,
                        s3_key="files/u/file-1", report_key="reports/u/file-1.json",
                        normalized_key="elsewhere/u/file-1.jsonl")
    assert stored_keys(record) == ["files/u/file-1", "normalized/u/file-1.jsonl", "reports/u/file-1.json",
                                   "elsewhere/u/file-1.jsonl"]


def test_sse_args() -> None:
    assert sse_args(None) == {"ServerSideEncryption": "AES256"}
    assert sse_args("") == {"ServerSideEncryption": "AES256"}
    assert sse_args("alias/llm-tuner") == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/llm-tuner"}


FORM_TYPE = "multipart/form-data; boundary=b"


def _field(name: str, value: str) -> bytes:
    return f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def _file(content: bytes, filename: str = "t.jsonl") -> bytes:
    return (f'--b\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'.encode()
            + content + b"\r\n")


def _read(form: StreamedForm) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in form.file_chunks()])
    return asyncio.run(collect())


async def _body(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 20])
def test_a_streamed_form_hands_on_the_file_and_keeps_the_fields_in_any_order(chunk_bytes: int) -> None:
    content = b'{"a": 1}\n' * 50
    body = _field("purpose", "fine-tune") + _file(content, "d\u00e9j\u00e0.jsonl") \
        + _field("format", "jsonl") + b"--b--\r\n"
    form = StreamedForm(FORM_TYPE, _body(body, chunk_bytes))
    assert _read(form) == content
    assert form.fields == {"purpose": "fine-tune", "format": "jsonl"}
    assert form.saw_file and form.filename == "d\u00e9j\u00e0.jsonl"  # UTF-8 as sent, decoded once


def test_a_form_without_a_file_says_so_once_read() -> None:
    form = StreamedForm(FORM_TYPE, _body(_field("purpose", "fine-tune") + b"--b--\r\n", 64))
    assert _read(form) == b"" and not form.saw_file and form.filename is None


@pytest.mark.parametrize(("content_type", "body", "message"), [
    ("text/plain", b"plain body", "multipart/form-data"),
    ("multipart/form-data", b"", "multipart/form-data"),  # no boundary
    (FORM_TYPE, _file(b"1") + _file(b"2") + b"--b--\r\n", "exactly one 'file' part"),
    (FORM_TYPE, _field("purpose", "x" * 5000) + b"--b--\r\n", "too long"),
])
def test_a_form_that_cannot_be_an_upload_is_refused_while_read(content_type: str, body: bytes,
                                                               message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        _read(StreamedForm(content_type, _body(body, 16)))


def test_the_worker_routes_each_consumed_event_to_its_handler() -> None:
    table = route_table(event_handlers.ROUTES)
    assert {t: r.handler for t, r in table.items()} == {
        FILE_UPLOADED: event_handlers.validate_file, USER_DELETED: event_handlers.delete_user_data,
        JOB_SUCCEEDED: event_handlers.register_results_file}


class _Cancelled(Exception):
    def __init__(self, *codes: str) -> None:
        super().__init__("cancelled")
        self.response = {"CancellationReasons": [{"Code": c} for c in codes]}


class _Conflict(Exception):
    pass


class _ConditionFailed(Exception):
    pass


class FakeDynamo:
    """The usage table's client, failing each call with the next of `failures` (then succeeding)."""

    class exceptions:
        TransactionCanceledException = _Cancelled
        TransactionConflictException = _Conflict
        ConditionalCheckFailedException = _ConditionFailed

    def __init__(self, *failures: Exception, item: dict[str, Any] | None = None) -> None:
        self.failures = list(failures)
        self.item = item or {}
        self.writes: list[dict[str, Any]] = []

    async def _write(self, **request: Any) -> dict[str, Any]:
        self.writes.append(request)
        if self.failures:
            raise self.failures.pop(0)
        return {}

    transact_write_items = update_item = _write

    async def get_item(self, **_: Any) -> dict[str, Any]:
        return {"Item": self.item} if self.item else {}


def _record() -> FileRecord:
    return FileRecord(file_id="file-1", user_id="u", filename="a.jsonl", purpose="fine-tune", bytes=10,
                      created_at=1, status="uploading", s3_key="files/u/file-1", upload_id="up")


def test_a_write_that_met_another_transaction_is_tried_again() -> None:
    db = FakeDynamo(_Cancelled("None", "TransactionConflict"), _Cancelled("TransactionConflict", "None"))
    assert asyncio.run(UsageStore(db, "usage", "files").finish_upload("file-1", "u")) is True
    assert len(db.writes) == 3
    db = FakeDynamo(_Conflict())
    asyncio.run(UsageStore(db, "usage", "files").release("u", 5))
    assert len(db.writes) == 2


def test_a_failed_condition_is_not_tried_again() -> None:
    db = FakeDynamo(_Cancelled("None", "ConditionalCheckFailed"))
    with pytest.raises(TooManyOpenUploads) as refused:
        asyncio.run(UsageStore(db, "usage", "files").open_upload(_record(), 5))
    assert len(db.writes) == 1 and refused.value.status_code == 429 and refused.value.code == "too_many_open_uploads"
    db = FakeDynamo(_Cancelled("None", "ConditionalCheckFailed"), item={"deleted_at": {"N": "1"}})
    with pytest.raises(AccountDeleted):
        asyncio.run(UsageStore(db, "usage", "files").open_upload(_record(), 5))
    db = FakeDynamo(*[_Cancelled("TransactionConflict")] * CONFLICT_ATTEMPTS)
    with pytest.raises(_Cancelled):  # a conflict that does not clear is an error, not a silent False
        asyncio.run(UsageStore(db, "usage", "files").finish_upload("file-1", "u"))


def test_opening_an_upload_counts_it_with_its_record_in_one_transaction() -> None:
    db = FakeDynamo()
    asyncio.run(UsageStore(db, "usage", "files").open_upload(_record(), 5))
    [request] = db.writes
    put, count = request["TransactItems"]
    assert put["Put"]["TableName"] == "files" and put["Put"]["Item"]["file_id"] == {"S": "file-1"}
    update = count["Update"]
    assert update["TableName"] == "usage" and update["UpdateExpression"] == "ADD #o :one"
    assert update["ExpressionAttributeNames"] == {"#o": "open_uploads"}  # only the names it uses
    assert update["ConditionExpression"] == ("(attribute_not_exists(#o) OR #o < :max) "
                                             "AND attribute_not_exists(deleted_at)")
