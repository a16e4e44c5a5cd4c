"""files' validation against the embedded AWS over HTTP: corpus files uploaded, the worker drained, then the
record's status, the stored report, the preview of the normalised examples, the objects in S3 and the
`file.validated` / `file.rejected` events checked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from shared.contracts import resources
from shared.contracts.files_events import FILE_REJECTED, FILE_VALIDATED
from tests.support.accounts import bearer, register
from tests.support.events_tap import Tap
from tests.support.workers import drain

CORPUS = Path(__file__).resolve().parents[1] / "data" / "files"
GOOD = {  # corpus file: (format, layout, example type, examples)
    "chat.jsonl": ("jsonl", "chat", "chat", 12),
    "alpaca.json": ("json", "alpaca", "chat", 12),
    "qa_wrapped.json": ("json", "question_answer", "chat", 12),
    "alpaca.csv": ("csv", "alpaca", "chat", 12),
    "preference.jsonl": ("jsonl", "preference", "preference", 12),
    "story.txt": ("txt", "plain_text", "text", 15),
}
BAD = {  # corpus file: the error codes of its report
    "bad_invalid_json.jsonl": ["invalid_json"],
    "bad_unknown_role.jsonl": ["unknown_role"],
    "bad_mixed_formats.jsonl": ["mixed_formats"],
    "bad_ragged_row.csv": ["ragged_row", "ragged_row"],
    "bad_nesting_too_deep.json": ["nesting_too_deep"],
    "bad_binary_content.bin": ["binary_content"],
    "bad_empty_file.jsonl": ["empty_file"],
}


def upload(files_url: str, session: dict[str, Any], name: str, content: bytes | None = None,
           **fields: str) -> dict[str, Any]:
    response = httpx.post(f"{files_url}/v1/files", headers=bearer(session),
                          files={"file": (name, (CORPUS / name).read_bytes() if content is None else content)},
                          data={"purpose": "fine-tune", **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def get(files_url: str, session: dict[str, Any], path: str) -> httpx.Response:
    return httpx.get(f"{files_url}{path}", headers=bearer(session))


def s3_lines(key: str) -> list[dict[str, Any]]:
    body = boto3.client("s3").get_object(Bucket=resources.BUCKET, Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


@pytest.fixture(scope="module")
def tap(provisioned: dict[str, Any]) -> Tap:
    return Tap(provisioned["topics"][resources.FILES_TOPIC])


def test_every_format_is_validated_normalised_reported_and_previewed(files_url: str, auth_url: str,
                                                                    tap: Tap) -> None:
    session = register(auth_url)
    user_id = session["user"]["id"]
    ids = {name: upload(files_url, session, name)["id"] for name in GOOD}

    asyncio.run(drain("files"))

    s3 = boto3.client("s3")
    for name, (file_format, layout, example_type, examples) in GOOD.items():
        file_id = ids[name]
        assert get(files_url, session, f"/v1/files/{file_id}").json()["status"] == "processed", name
        report = get(files_url, session, f"/api/files/{file_id}/report").json()
        assert (report["object"], report["file_id"], report["status"]) == ("file.validation_report", file_id,
                                                                           "processed")
        assert (report["format"], report["layout"], report["example_type"]) == (file_format, layout, example_type)
        assert report["counts"]["examples"] == examples and report["errors"] == []

        key = f"normalized/{user_id}/{file_id}.jsonl"
        normalised = s3_lines(key)
        assert len(normalised) == examples and {e["type"] for e in normalised} == {example_type}
        assert s3.head_object(Bucket=resources.BUCKET, Key=key)["ServerSideEncryption"] in ("AES256", "aws:kms")
        assert s3.head_object(Bucket=resources.BUCKET, Key=f"reports/{user_id}/{file_id}.json")

        preview = get(files_url, session, f"/api/files/{file_id}/preview?limit=3").json()
        assert [item["example"] for item in preview["data"]] == normalised[:3]
        assert [item["index"] for item in preview["data"]] == [1, 2, 3] and preview["has_more"] is True
        assert (preview["format"], preview["example_type"]) == (file_format, example_type)

        event = tap.wait_for(lambda e, f=file_id: e["data"].get("file_id") == f and e["type"] == FILE_VALIDATED)
        assert event["data"]["normalized_uri"] == f"s3://{resources.BUCKET}/{key}"
        assert event["data"]["report_uri"] == f"s3://{resources.BUCKET}/reports/{user_id}/{file_id}.json"
        assert (event["data"]["examples"], event["data"]["example_type"]) == (examples, example_type)


def test_preview_flags_formula_like_cells_and_defaults_to_ten(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    file_id = upload(files_url, session, "alpaca.csv")["id"]
    asyncio.run(drain("files"))

    preview = get(files_url, session, f"/api/files/{file_id}/preview").json()

    assert len(preview["data"]) == 10 and preview["has_more"] is True
    fourth = preview["data"][3]
    assert fourth["example"]["messages"][1]["content"] == "=1+2"  # verbatim in JSON ...
    assert fourth["formula_like"] == ["messages[1].content"]  # ... and flagged for whoever renders CSV
    everything = get(files_url, session, f"/api/files/{file_id}/preview?limit=100").json()
    assert len(everything["data"]) == 12 and everything["has_more"] is False


def test_bad_files_are_rejected_with_their_report_and_no_normalised_examples(files_url: str, auth_url: str,
                                                                            tap: Tap) -> None:
    session = register(auth_url)
    user_id = session["user"]["id"]
    ids = {name: upload(files_url, session, name)["id"] for name in BAD}

    asyncio.run(drain("files"))

    for name, expected in BAD.items():
        file_id = ids[name]
        record = get(files_url, session, f"/v1/files/{file_id}").json()
        report = get(files_url, session, f"/api/files/{file_id}/report").json()
        assert record["status"] == "error" and report["status"] == "error", name
        assert [e["code"] for e in report["errors"]] == expected, name
        # OpenAI's status_details carries the first error.
        assert record["status_details"].startswith(f"Invalid file format. {report['errors'][0]['message']}")

        preview = get(files_url, session, f"/api/files/{file_id}/preview")
        assert preview.status_code == 409 and preview.json()["error"]["code"] == "file_rejected"
        listed = boto3.client("s3").list_objects_v2(Bucket=resources.BUCKET, Prefix=f"normalized/{user_id}/{file_id}")
        assert listed.get("KeyCount", 0) == 0

        event = tap.wait_for(lambda e, f=file_id: e["data"].get("file_id") == f and e["type"] == FILE_REJECTED)
        assert event["data"]["normalized_uri"] is None and event["data"]["error"] == record["status_details"]
        assert [e["code"] for e in event["data"]["errors"]] == expected


def test_an_explicit_format_field_overrides_detection(files_url: str, auth_url: str) -> None:
    session = register(auth_url)
    as_text = upload(files_url, session, "qa.csv", format="txt")["id"]
    refused = httpx.post(f"{files_url}/v1/files", headers=bearer(session), files={"file": ("a.csv", b"a,b\n")},
                         data={"purpose": "fine-tune", "format": "xlsx"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "format"

    asyncio.run(drain("files"))

    report = get(files_url, session, f"/api/files/{as_text}/report").json()
    assert (report["format"], report["format_source"], report["layout"]) == ("txt", "requested", "plain_text")


def test_reports_are_owner_scoped_and_wait_for_validation(files_url: str, auth_url: str) -> None:
    alice, bob = register(auth_url), register(auth_url)
    file_id = upload(files_url, alice, "chat.jsonl")["id"]

    pending = get(files_url, alice, f"/api/files/{file_id}/report")  # not drained yet
    assert pending.status_code == 409 and pending.json()["error"]["code"] == "validation_in_progress"
    assert pending.headers["retry-after"]

    for path in (f"/api/files/{file_id}/report", f"/api/files/{file_id}/preview", "/api/files/file-nope/report"):
        response = get(files_url, bob, path)
        assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}
    for limit in (0, 101):
        assert get(files_url, alice, f"/api/files/{file_id}/preview?limit={limit}").status_code == 400
    assert httpx.get(f"{files_url}/api/files/{file_id}/report").status_code == 401

    other = httpx.post(f"{files_url}/v1/files", headers=bearer(alice), files={"file": ("notes.txt", b"hello")},
                       data={"purpose": "assistants"}).json()["id"]
    asyncio.run(drain("files"))
    assert get(files_url, alice, f"/api/files/{file_id}/report").json()["status"] == "processed"
    not_validated = get(files_url, alice, f"/api/files/{other}/report")
    assert not_validated.status_code == 404 and not_validated.json()["error"]["code"] == "report_not_available"


def test_the_upload_form_takes_only_its_known_fields(files_url: str, auth_url: str) -> None:
    """An unknown or repeated form field is a 400 in the envelope, and the upload leaves no file behind."""
    session = register(auth_url)
    forms: list[dict[str, Any]] = [{"purpose": "fine-tune", "colour": "red"}, {"purpose": ["fine-tune", "fine-tune"]}]
    for data in forms:
        refused = httpx.post(f"{files_url}/v1/files", headers=bearer(session), data=data,
                             files={"file": ("train.jsonl", (CORPUS / "chat.jsonl").read_bytes())})
        assert refused.status_code == 400, refused.text
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        assert refused.json()["error"]["code"] in ("unknown_parameter", "duplicate_parameter")
    assert get(files_url, session, "/v1/files").json()["data"] == []
