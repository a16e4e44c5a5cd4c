"""Uploads and storage against the embedded AWS over HTTP: direct uploads over presigned part URLs, quotas,
deleting every version, streamed content, the official openai SDK through a gateway, isolation, bad input,
a client that goes away, and a training job's results file."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import openai
import pytest

from services.files.app import build_app as build_files_app
from services.files.settings import Settings as FilesSettings
from services.gateway.app import build_app as build_gateway_app
from services.gateway.settings import Settings as GatewaySettings
from shared.contracts import resources
from shared.contracts.files_events import FILE_DELETED
from shared.contracts.training_events import JobSucceeded, ResultFile
from shared.envelope import new_event
from tests.support.accounts import bearer, register
from tests.support.events_tap import Tap
from tests.support.files import upload
from tests.support.polling import poll
from tests.support.servers import serve
from tests.support.workers import drain

MiB = 1024 * 1024
LINE = json.dumps({"messages": [{"role": "user", "content": "q" * 1000},
                                {"role": "assistant", "content": "a" * 1000}]}).encode() + b"\n"
SMALL = LINE * 12


def chat_jsonl(size: int) -> bytes:
    """Valid chat JSONL of about `size` bytes (whole lines)."""
    return LINE * max(1, size // len(LINE))


# A files service of its own with small limits, so quotas fill with a few MiB.
QUOTA = 12 * MiB
MAX_FILE = 10 * MiB


@pytest.fixture(scope="module")
def small_files_url(auth_url: str) -> Iterator[str]:
    settings = FilesSettings(user_quota_bytes=QUOTA, max_file_bytes=MAX_FILE, max_direct_upload_bytes=QUOTA,
                             upload_part_bytes=5 * MiB)
    with serve(build_files_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def gateway_url(auth_url: str, files_url: str, training_url: str) -> Iterator[str]:
    settings = GatewaySettings(auth_url=auth_url, files_url=files_url, training_url=training_url,
                               auth_jwks_url=f"{auth_url}/.well-known/jwks.json")
    with serve(build_gateway_app(settings)) as url:
        yield url


def chunked_upload(url: str, session: dict[str, Any], content: bytes) -> httpx.Response:
    """The same multipart body without Content-Length: only counting while streaming can stop it."""
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
        for i in range(0, len(content), MiB):
            yield content[i:i + MiB]
        yield b"\r\n--b--\r\n"
    return httpx.post(f"{url}/v1/files", content=body(), timeout=60,
                      headers={**bearer(session), "content-type": "multipart/form-data; boundary=b"})


def create_upload(url: str, session: dict[str, Any], size: int, name: str = "big.jsonl",
                  purpose: str = "fine-tune") -> httpx.Response:
    return httpx.post(f"{url}/api/uploads", headers=bearer(session),
                      json={"filename": name, "purpose": purpose, "bytes": size})


def put_parts(created: dict[str, Any], content: bytes) -> list[dict[str, Any]]:
    """What a browser does: PUT each slice to its presigned URL, keep the ETag S3 answers."""
    parts, offset = [], 0
    for part in created["parts"]:
        response = httpx.put(part["url"], content=content[offset:offset + part["bytes"]], timeout=60)
        assert response.status_code == 200, response.text
        parts.append({"part_number": part["part_number"], "etag": response.headers["etag"]})
        offset += part["bytes"]
    return parts


def complete(url: str, session: dict[str, Any], file_id: str, parts: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{url}/api/uploads/{file_id}/complete", headers=bearer(session), json={"parts": parts},
                      timeout=60)


def usage(session: dict[str, Any]) -> int:
    item = boto3.client("dynamodb").get_item(TableName=resources.FILES_USAGE_TABLE, ConsistentRead=True,
                                             Key={"user_id": {"S": session["user"]["id"]}}).get("Item")
    return int(item["bytes"]["N"]) if item else 0


def versions(key_prefix: str) -> list[dict[str, Any]]:
    listed = boto3.client("s3").list_object_versions(Bucket=resources.BUCKET, Prefix=key_prefix)
    return [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]


def open_uploads(session: dict[str, Any]) -> list[dict[str, Any]]:
    listed = boto3.client("s3").list_multipart_uploads(Bucket=resources.BUCKET,
                                                       Prefix=f"files/{session['user']['id']}/")
    return list(listed.get("Uploads", []))


def file_ids(url: str, session: dict[str, Any]) -> list[str]:
    return [f["id"] for f in httpx.get(f"{url}/v1/files", headers=bearer(session)).json()["data"]]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error


# ---- direct uploads ------------------------------------------------------------------------------------------

def test_direct_upload_through_the_gateway_end_to_end(gateway_url: str) -> None:
    session = register(gateway_url)
    content = chat_jsonl(9 * MiB)  # two parts at the 8 MiB part size
    created = create_upload(gateway_url, session, len(content))
    assert created.status_code == 200, created.text
    body = created.json()
    file_id = body["id"]
    assert body["object"] == "upload" and body["status"] == "pending" and body["part_bytes"] == 8 * MiB
    assert [(p["part_number"], p["bytes"]) for p in body["parts"]] == [(1, 8 * MiB), (2, len(content) - 8 * MiB)]
    assert usage(session) == len(content)  # reserved before a byte is stored
    # Not a file of the /v1 API until it is complete.
    assert file_id not in file_ids(gateway_url, session)
    assert httpx.get(f"{gateway_url}/v1/files/{file_id}", headers=bearer(session)).status_code == 404

    done = complete(gateway_url, session, file_id, put_parts(body, content))
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and done.json()["file"]["status"] == "uploaded"
    again = complete(gateway_url, session, file_id, [{"part_number": 1, "etag": "x"}])
    assert again.status_code == 200 and again.json()["status"] == "completed"  # a retried complete is harmless

    key = f"files/{session['user']['id']}/{file_id}"
    head = boto3.client("s3").head_object(Bucket=resources.BUCKET, Key=key)
    assert head["ContentLength"] == len(content) and head["ServerSideEncryption"] == "AES256"
    asyncio.run(drain("files"))
    retrieved = httpx.get(f"{gateway_url}/v1/files/{file_id}", headers=bearer(session)).json()
    assert retrieved["status"] == "processed" and retrieved["bytes"] == len(content)
    assert file_ids(gateway_url, session) == [file_id] and usage(session) == len(content)


def test_a_size_mismatch_discards_the_upload(files_url: str, auth_url: str) -> None:
    """Every part as declared, but one left out of the completion: S3 assembles fewer bytes than declared.
    (A part of another size is refused before: tests/integration/test_upload_sweep_and_deletion.py.)"""
    session = register(auth_url)
    content = chat_jsonl(9 * MiB)  # two parts
    body = create_upload(files_url, session, len(content)).json()
    response = complete(files_url, session, body["id"], put_parts(body, content)[:1])
    assert_error(response, 400, "size_mismatch")
    assert versions(f"files/{session['user']['id']}/") == [] and open_uploads(session) == []
    assert usage(session) == 0
    assert_error(complete(files_url, session, body["id"], [{"part_number": 1, "etag": "x"}]), 404)


def test_a_wrong_etag_keeps_the_upload_open_for_a_retry(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    body = create_upload(files_url, session, len(SMALL)).json()
    parts = put_parts(body, SMALL)
    assert_error(complete(files_url, session, body["id"], [{"part_number": 1, "etag": '"0000"'}]), 400,
                 "invalid_parts")
    assert complete(files_url, session, body["id"], parts).status_code == 200


def test_abort_drops_parts_record_and_reservation(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    body = create_upload(files_url, session, len(SMALL)).json()
    put_parts(body, SMALL)
    assert len(open_uploads(session)) == 1 and usage(session) == len(SMALL)
    aborted = httpx.delete(f"{files_url}/api/uploads/{body['id']}", headers=bearer(session))
    assert aborted.status_code == 200 and aborted.json()["status"] == "cancelled"
    assert open_uploads(session) == [] and usage(session) == 0
    assert_error(httpx.delete(f"{files_url}/api/uploads/{body['id']}", headers=bearer(session)), 404)
    assert_error(complete(files_url, session, body["id"], [{"part_number": 1, "etag": "x"}]), 404)


def test_a_completed_upload_is_deleted_as_a_file_not_aborted(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    body = create_upload(files_url, session, len(SMALL)).json()
    complete(files_url, session, body["id"], put_parts(body, SMALL))
    assert_error(httpx.delete(f"{files_url}/api/uploads/{body['id']}", headers=bearer(session)), 409,
                 "upload_completed")


def test_an_expired_upload_gives_its_quota_back(small_files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    stale = create_upload(small_files_url, session, 8 * MiB).json()
    an_hour_ago = {":t": {"N": str(int(time.time()) - 3600)}}  # its URLs expired then
    boto3.client("dynamodb").update_item(TableName=resources.FILES_TABLE, Key={"file_id": {"S": stale["id"]}},
                                         UpdateExpression="SET upload_expires_at = :t",
                                         ExpressionAttributeValues=an_hour_ago)
    fresh = create_upload(small_files_url, session, 8 * MiB)  # 16 MiB > quota, unless the stale one goes
    assert fresh.status_code == 200, fresh.text
    assert usage(session) == 8 * MiB and [u["Key"] for u in open_uploads(session)] == [
        f"files/{session['user']['id']}/{fresh.json()['id']}"]


# ---- quotas and limits ---------------------------------------------------------------------------------------

def test_quota_refuses_multipart_and_direct_uploads_until_files_are_deleted(small_files_url: str,
                                                                             auth_url: str) -> None:
    session = register(auth_url)
    first = upload(small_files_url, session, chat_jsonl(7 * MiB))
    assert first.status_code == 200, first.text
    stored = first.json()["bytes"]
    assert usage(session) == stored

    # Content-Length says it will not fit: refused before the body is read.
    assert_error(upload(small_files_url, session, chat_jsonl(7 * MiB)), 413, "quota_exceeded")
    # No Content-Length: refused while streaming, after one 5 MiB part already went to S3 (then aborted).
    assert_error(chunked_upload(small_files_url, session, chat_jsonl(7 * MiB)), 413, "quota_exceeded")
    # A direct upload is refused on its declared size.
    assert_error(create_upload(small_files_url, session, 6 * MiB), 413, "quota_exceeded")
    assert usage(session) == stored and open_uploads(session) == []
    assert file_ids(small_files_url, session) == [first.json()["id"]]
    assert len(versions(f"files/{session['user']['id']}/")) == 1  # nothing half-stored

    deleted = httpx.delete(f"{small_files_url}/v1/files/{first.json()['id']}", headers=bearer(session))
    assert deleted.status_code == 200 and usage(session) == 0
    assert upload(small_files_url, session, chat_jsonl(7 * MiB)).status_code == 200
    assert create_upload(small_files_url, session, 5 * MiB).status_code == 200


def test_the_per_file_limit_applies_with_and_without_content_length(small_files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    too_big = chat_jsonl(MAX_FILE + MiB)
    assert_error(upload(small_files_url, session, too_big), 413, "file_too_large")
    assert_error(chunked_upload(small_files_url, session, too_big), 413, "file_too_large")
    assert_error(create_upload(small_files_url, session, QUOTA + 1), 413, "file_too_large")
    assert open_uploads(session) == [] and usage(session) == 0 and file_ids(small_files_url, session) == []


def test_the_sdk_gets_413_through_the_gateway(auth_url: str, small_files_url: str, training_url: str) -> None:
    settings = GatewaySettings(auth_url=auth_url, files_url=small_files_url, training_url=training_url,
                               auth_jwks_url=f"{auth_url}/.well-known/jwks.json")
    with serve(build_gateway_app(settings)) as gateway:
        session = register(gateway)
        client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=session["access_token"], max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            client.files.create(file=("big.jsonl", chat_jsonl(MAX_FILE + MiB)), purpose="fine-tune")
    assert refused.value.status_code == 413 and refused.value.code == "file_too_large"
    assert usage(session) == 0 and open_uploads(session) == []


def test_a_client_that_goes_away_mid_upload_leaves_nothing(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    host, port = urllib.parse.urlsplit(files_url).netloc.split(":")
    head = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n')
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {session['access_token']}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\n"
                     f"Content-Length: {20 * MiB}\r\n\r\n".encode() + head)
        sock.sendall(chat_jsonl(9 * MiB))  # past the 8 MiB part size: one part is in S3
        poll(lambda: len(open_uploads(session)) == 1, what="one part of the upload in S3")
    poll(lambda: open_uploads(session) == [] and usage(session) == 0, what="the abandoned upload cleaned up")
    assert versions(f"files/{session['user']['id']}/") == [] and file_ids(files_url, session) == []


# ---- storage: delete and content -----------------------------------------------------------------------------

def test_delete_removes_every_version_and_derived_object(files_url: str, auth_url: str,
                                                         provisioned: dict[str, Any]) -> None:
    tap = Tap(provisioned["topics"][resources.FILES_TOPIC])
    session = register(auth_url)
    file_id = upload(files_url, session, SMALL).json()["id"]
    user = session["user"]["id"]
    s3 = boto3.client("s3")
    s3.put_object(Bucket=resources.BUCKET, Key=f"files/{user}/{file_id}", Body=b"a second version")
    s3.put_object(Bucket=resources.BUCKET, Key=f"normalized/{user}/{file_id}.jsonl", Body=b"{}\n")
    s3.put_object(Bucket=resources.BUCKET, Key=f"reports/{user}/{file_id}.json", Body=b"{}")
    assert len(versions(f"files/{user}/{file_id}")) == 2

    response = httpx.delete(f"{files_url}/v1/files/{file_id}", headers=bearer(session))
    assert response.status_code == 200 and response.json() == {"id": file_id, "object": "file", "deleted": True}
    for prefix in (f"files/{user}/", f"normalized/{user}/", f"reports/{user}/"):
        assert versions(prefix) == [], prefix
    assert usage(session) == 0 and file_ids(files_url, session) == []
    assert_error(httpx.get(f"{files_url}/v1/files/{file_id}", headers=bearer(session)), 404)
    assert_error(httpx.delete(f"{files_url}/v1/files/{file_id}", headers=bearer(session)), 404)
    event = tap.wait_for(lambda e: e["type"] == FILE_DELETED and e["data"]["file_id"] == file_id)
    assert event["data"]["reason"] == "deleted" and event["user_id"] == user


def test_content_streams_the_original_bytes(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    content = bytes(range(256)) * 4096 + b"\x00"  # binary, 1 MiB and a byte
    file_id = upload(files_url, session, content, name="données v2.bin", purpose="user_data").json()["id"]
    with httpx.stream("GET", f"{files_url}/v1/files/{file_id}/content", headers=bearer(session)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-length"] == str(len(content))
        assert response.headers["content-disposition"] == (
            "attachment; filename=\"donn_es v2.bin\"; filename*=UTF-8''donn%C3%A9es%20v2.bin")
        assert b"".join(response.iter_bytes()) == content


def test_objects_are_encrypted_with_the_configured_kms_key(auth_url: str) -> None:
    key_id = boto3.client("kms").create_key(Description="llm-tuner test")["KeyMetadata"]["KeyId"]
    with serve(build_files_app(FilesSettings(s3_kms_key_id=key_id))) as url:
        session = register(auth_url)
        small = upload(url, session, SMALL).json()["id"]
        big = chat_jsonl(9 * MiB)  # a multipart upload
        direct = create_upload(url, session, len(big)).json()
        assert complete(url, session, direct["id"], put_parts(direct, big)).status_code == 200
    for file_id in (small, direct["id"]):
        head = boto3.client("s3").head_object(Bucket=resources.BUCKET, Key=f"files/{session['user']['id']}/{file_id}")
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith(key_id)


# ---- the openai SDK ------------------------------------------------------------------------------------------

def test_the_openai_sdk_files_api_through_the_gateway(gateway_url: str) -> None:
    session = register(gateway_url)
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=session["access_token"], max_retries=0)
    created = client.files.create(file=("train.jsonl", SMALL), purpose="fine-tune")
    assert created.id.startswith("file-") and created.filename == "train.jsonl" and created.bytes == len(SMALL)

    worker = threading.Thread(target=lambda: asyncio.run(drain("files")))  # validation runs meanwhile
    worker.start()
    processed = client.files.wait_for_processing(created.id, poll_interval=0.2, max_wait_seconds=30)
    worker.join()
    assert processed.status == "processed"

    others = [client.files.create(file=(f"n{i}.txt", f"note {i}".encode()), purpose="user_data") for i in range(2)]
    everything = [f.id for f in client.files.list(order="asc").data]
    assert sorted(everything) == sorted([created.id, *(o.id for o in others)])
    first = client.files.list(limit=2, order="asc")
    assert [f.id for f in first.data] == everything[:2] and first.has_more is True
    rest = client.files.list(limit=2, order="asc", after=first.data[-1].id)
    assert [f.id for f in rest.data] == everything[2:] and rest.has_more is False
    assert [f.id for f in client.files.list(limit=1, order="asc")] == everything  # the SDK pages on its own
    assert [f.id for f in client.files.list(order="desc").data] == everything[::-1]
    assert [f.id for f in client.files.list(purpose="fine-tune").data] == [created.id]
    raw = httpx.get(f"{gateway_url}/v1/files", params={"limit": 2, "order": "asc"}, headers=bearer(session)).json()
    assert raw["first_id"] == everything[0] and raw["last_id"] == everything[1]

    assert client.files.retrieve(created.id).purpose == "fine-tune"
    assert client.files.content(created.id).read() == SMALL
    deleted = client.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True and deleted.object == "file"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("x.jsonl", SMALL), purpose="fine-tune-results")  # type: ignore[arg-type]
    assert bad.value.param == "purpose"


# ---- isolation and bad input ---------------------------------------------------------------------------------

def test_every_route_is_scoped_to_the_caller(files_url: str, auth_url: str) -> None:
    alice, bob = register(auth_url), register(auth_url)
    file_id = upload(files_url, alice, SMALL).json()["id"]
    pending = create_upload(files_url, alice, len(SMALL)).json()["id"]
    for method, path, body in [
        ("GET", f"/v1/files/{file_id}", None), ("GET", f"/v1/files/{file_id}/content", None),
        ("DELETE", f"/v1/files/{file_id}", None),
        ("POST", f"/api/uploads/{pending}/complete", {"parts": [{"part_number": 1, "etag": "x"}]}),
        ("DELETE", f"/api/uploads/{pending}", None),
    ]:
        response = httpx.request(method, f"{files_url}{path}", headers=bearer(bob), json=body)
        assert_error(response, 404, "not_found")
    assert file_ids(files_url, bob) == []
    # Alice still has both, untouched.
    assert httpx.get(f"{files_url}/v1/files/{file_id}/content", headers=bearer(alice)).content == SMALL
    assert httpx.delete(f"{files_url}/api/uploads/{pending}", headers=bearer(alice)).status_code == 200


@pytest.mark.parametrize(("sent", "shown"), [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\evil.jsonl", "evil.jsonl"),
    ("a\x00b\x1fc\u202e.jsonl", "abc.jsonl"),
    ("x" * 1000 + ".jsonl", "x" * 249 + ".jsonl"),
    ("..", "upload"),
])
def test_filenames_are_cleaned_for_display_and_never_reach_keys(files_url: str, auth_url: str, sent: str,
                                                                shown: str) -> None:
    session = register(auth_url)
    body = create_upload(files_url, session, len(SMALL), name=sent).json()
    assert body["filename"] == shown
    done = complete(files_url, session, body["id"], put_parts(body, SMALL)).json()
    assert done["file"]["filename"] == shown
    assert [v["Key"] for v in versions(f"files/{session['user']['id']}/")] == [
        f"files/{session['user']['id']}/{body['id']}"]


@pytest.mark.parametrize(("payload", "status", "param"), [
    ({"filename": "a.jsonl", "purpose": "fine-tune", "bytes": 0}, 400, "bytes"),
    ({"filename": "a.jsonl", "purpose": "wrong", "bytes": 10}, 400, "purpose"),
    ({"filename": "a.jsonl", "purpose": "fine-tune-results", "bytes": 10}, 400, "purpose"),
    ({"filename": "a.jsonl", "purpose": "fine-tune", "bytes": -1}, 400, "bytes"),
    ({"filename": "a.jsonl", "purpose": "fine-tune"}, 400, "bytes"),
])
def test_bad_direct_uploads_get_the_error_envelope(files_url: str, auth_url: str, payload: dict[str, Any],
                                                   status: int, param: str) -> None:
    session = register(auth_url)
    response = httpx.post(f"{files_url}/api/uploads", headers=bearer(session), json=payload)
    assert assert_error(response, status)["param"] == param
    assert usage(session) == 0 and open_uploads(session) == []


def test_bad_completions_get_the_error_envelope(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    file_id = create_upload(files_url, session, len(SMALL)).json()["id"]
    for parts, code in [([{"part_number": 1, "etag": "a"}, {"part_number": 1, "etag": "b"}], "duplicate_part"),
                        ([{"part_number": 2, "etag": "a"}], "invalid_part_number")]:
        assert_error(complete(files_url, session, file_id, parts), 400, code)
    assert assert_error(complete(files_url, session, file_id, []), 400)["param"] == "parts"


# ---- a training job's results file ---------------------------------------------------------------------------

def test_a_succeeded_jobs_results_file_is_registered_once(files_url: str, auth_url: str,
                                                          provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    user = session["user"]["id"]
    csv = b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,1.5,,,\n"
    file_id = "file-" + uuid.uuid4().hex[:24]
    key = f"files/{user}/{file_id}"
    boto3.client("s3").put_object(Bucket=resources.BUCKET, Key=key, Body=csv)
    event = new_event(JobSucceeded(
        job_id="ftjob-x", user_id=user, model="llm-tuner/tiny-chat", fine_tuned_model="ft:llm-tuner/tiny-chat:x",
        result_file=ResultFile(file_id=file_id, s3_key=key, bytes=len(csv), filename="step_metrics.csv")),
        user_id=user)
    sns = boto3.client("sns")
    for _ in range(2):  # delivered twice: registered once
        sns.publish(TopicArn=provisioned["topics"][resources.TRAINING_TOPIC], Message=event.model_dump_json(),
                    MessageAttributes={"type": {"DataType": "String", "StringValue": event.type}})
    asyncio.run(drain("files", until=lambda: file_id in file_ids(files_url, session)))
    listed = httpx.get(f"{files_url}/v1/files", headers=bearer(session)).json()["data"]
    assert [(f["id"], f["purpose"], f["status"], f["filename"], f["bytes"]) for f in listed] == [
        (file_id, "fine-tune-results", "processed", "step_metrics.csv", len(csv))]
    assert httpx.get(f"{files_url}/v1/files/{file_id}/content", headers=bearer(session)).content == csv
    assert usage(session) == len(csv)
    assert httpx.delete(f"{files_url}/v1/files/{file_id}", headers=bearer(session)).status_code == 200
    assert usage(session) == 0 and versions(key) == []
