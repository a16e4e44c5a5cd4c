"""files against the embedded AWS over HTTP: streamed upload to S3, the record, events, async validation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import httpx
import pytest

from shared.contracts import resources
from shared.contracts.files_events import FILE_REJECTED, FILE_UPLOADED, FILE_VALIDATED
from tests.support.accounts import bearer, register
from tests.support.events_tap import Tap
from tests.support.files import GOOD, drain_files_queue, upload

BAD = "\n".join([
    json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
    "{not json",
    json.dumps({"messages": [{"role": "wizard", "content": "x"}]}),
    json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
])


def test_upload_stores_object_records_file_and_publishes(files_url: str, auth_url: str,
                                                          provisioned: dict[str, Any]) -> None:
    tap = Tap(provisioned["topics"][resources.FILES_TOPIC])
    session = register(auth_url)
    response = upload(files_url, session, GOOD.encode(), name="../../etc/my data.jsonl")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "file" and body["status"] == "uploaded" and body["bytes"] == len(GOOD)
    assert body["filename"] == "my data.jsonl"  # cleaned for display; never part of the key
    key = f"files/{session['user']['id']}/{body['id']}"
    head = boto3.client("s3").head_object(Bucket=resources.BUCKET, Key=key)
    assert head["ContentLength"] == len(GOOD) and head["ServerSideEncryption"] == "AES256"
    event = tap.wait_for(lambda e: e["data"].get("file_id") == body["id"])
    assert event["type"] == FILE_UPLOADED and event["user_id"] == session["user"]["id"]
    assert event["correlation_id"] == response.headers["x-request-id"]


def test_worker_validates_good_and_bad_files(files_url: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    tap = Tap(provisioned["topics"][resources.FILES_TOPIC])
    session = register(auth_url)
    good = upload(files_url, session, GOOD.encode()).json()
    bad = upload(files_url, session, BAD.encode()).json()
    asyncio.run(drain_files_queue())
    good_now = httpx.get(f"{files_url}/v1/files/{good['id']}", headers=bearer(session)).json()
    bad_now = httpx.get(f"{files_url}/v1/files/{bad['id']}", headers=bearer(session)).json()
    assert good_now["status"] == "processed" and good_now["status_details"] is None
    assert bad_now["status"] == "error" and "Line 2" in bad_now["status_details"]
    rejected = tap.wait_for(lambda e: e["type"] == FILE_REJECTED and e["data"]["file_id"] == bad["id"])
    assert [e["code"] for e in rejected["data"]["errors"]] == ["invalid_json", "unknown_role", "missing_assistant"]
    assert tap.wait_for(lambda e: e["type"] == FILE_VALIDATED)["data"]["examples"] == 12


def test_big_upload_streams_through_multipart(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    line = json.dumps({"messages": [{"role": "user", "content": "x" * 1000},
                                    {"role": "assistant", "content": "y" * 1000}]}).encode() + b"\n"
    content = line * (12 * 1024 * 1024 // len(line))  # ~12 MB: two S3 parts at the 8 MB part size
    response = upload(files_url, session, content)
    assert response.status_code == 200, response.text
    key = f"files/{session['user']['id']}/{response.json()['id']}"
    head = boto3.client("s3").head_object(Bucket=resources.BUCKET, Key=key)
    assert head["ContentLength"] == len(content) and "-2" in head["ETag"]  # a two-part multipart upload


def test_users_see_only_their_own_files(files_url: str, auth_url: str) -> None:
    alice, bob = register(auth_url), register(auth_url)
    file_id = upload(files_url, alice, GOOD.encode()).json()["id"]
    assert httpx.get(f"{files_url}/v1/files/{file_id}", headers=bearer(bob)).status_code == 404
    assert file_id not in [f["id"] for f in httpx.get(f"{files_url}/v1/files", headers=bearer(bob)).json()["data"]]
    listed = httpx.get(f"{files_url}/v1/files", headers=bearer(alice)).json()
    assert [f["id"] for f in listed["data"]] == [file_id] and listed["has_more"] is False


@pytest.mark.parametrize(("kwargs", "status", "param"), [
    ({"data": {"purpose": "fine-tune"}}, 400, "file"),
    ({"files": {"file": ("a.jsonl", b"{}\n")}}, 400, "purpose"),
    ({"files": {"file": ("a.jsonl", b"{}\n")}, "data": {"purpose": "wrong"}}, 400, "purpose"),
    ({"files": {"file": ("a.jsonl", b"")}, "data": {"purpose": "fine-tune"}}, 400, "file"),
    ({"content": b"plain body", "headers": {"content-type": "text/plain"}}, 400, "file"),
])
def test_bad_uploads_get_the_error_envelope(files_url: str, auth_url: str, kwargs: dict[str, Any], status: int,
                                            param: str) -> None:
    session = register(auth_url)
    headers = {**bearer(session), **kwargs.pop("headers", {})}
    response = httpx.post(f"{files_url}/v1/files", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_unknown_file_and_missing_token(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    assert httpx.get(f"{files_url}/v1/files/file-nope", headers=bearer(session)).status_code == 404
    assert httpx.get(f"{files_url}/v1/files").status_code == 401
