"""Presigned URLs as AWS will see them: SigV4 on the regional endpoint (buckets created since 2020 refuse SigV2,
and the global endpoint redirects outside us-east-1), part URLs that sign their length, and download links. The
clients are made by shared/aws.py as in production, without an endpoint override and with dummy credentials
(signing needs no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.aws import AwsClients, is_aws_endpoint, s3_config
from shared.settings import ServiceSettings

BUCKET = "llm-tuner-123456789012-data"
KEY = "files/user_1/file-abc"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[pytest.MonkeyPatch]:
    """botocore's configuration as on AWS: no endpoint override anywhere, credentials from the environment."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))  # no file: no endpoint_url from it
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    yield monkeypatch


def presign(region: str, method: str, params: dict[str, Any], http_method: str | None = None) -> str:
    async def run() -> str:
        aws = AwsClients(ServiceSettings(aws_default_region=region))
        try:
            s3 = await aws.get("s3")
            extra = {"HttpMethod": http_method} if http_method else {}
            return str(await s3.generate_presigned_url(method, Params=params, ExpiresIn=900, **extra))
        finally:
            await aws.close()
    return asyncio.run(run())


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def part_url(region: str, length: int = 8 * 1024 * 1024) -> str:
    return presign(region, "upload_part", {"Bucket": BUCKET, "Key": KEY, "UploadId": "up-1", "PartNumber": 3,
                                           "ContentLength": length}, "PUT")


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-southeast-2"])
def test_part_urls_are_sigv4_on_the_regional_virtual_hosted_endpoint(aws_env: pytest.MonkeyPatch,
                                                                     region: str) -> None:
    url = part_url(region)
    parts = urlsplit(url)
    assert parts.scheme == "https"
    assert parts.netloc == f"{BUCKET}.s3.{region}.amazonaws.com"  # us-east-1 too: never s3.amazonaws.com
    assert parts.path == f"/{KEY}"
    q = query(url)
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    key_id, date, credential_region, service, terminator = q["X-Amz-Credential"].split("/")
    assert (key_id, credential_region, service, terminator) == ("AKIAIOSFODNN7EXAMPLE", region, "s3", "aws4_request")
    assert len(date) == 8 and date.isdigit()
    assert q["X-Amz-Expires"] == "900"
    assert len(q["X-Amz-Signature"]) == 64
    assert (q["uploadId"], q["partNumber"]) == ("up-1", "3")
    assert not {"Signature", "AWSAccessKeyId", "Expires"} & set(q)  # nothing of SigV2


def test_a_part_url_signs_its_length(aws_env: pytest.MonkeyPatch) -> None:
    """S3 refuses a PUT whose Content-Length is not the signed one: a part cannot carry more than declared."""
    url = part_url("eu-west-1", 5 * 1024 * 1024)
    assert query(url)["X-Amz-SignedHeaders"].split(";") == ["content-length", "host"]
    # The length is in the signature: another length gives another URL.
    assert query(part_url("eu-west-1", 5 * 1024 * 1024 + 1))["X-Amz-Signature"] != query(url)["X-Amz-Signature"]


def test_download_links_are_sigv4_on_the_regional_endpoint(aws_env: pytest.MonkeyPatch) -> None:
    """training's artifact links (services/training/artifacts.py) come from the same client."""
    url = presign("eu-central-1", "get_object", {"Bucket": BUCKET, "Key": "training-jobs/u/j/output/model.tar.gz",
                                                 "ResponseContentDisposition": 'attachment; filename="model.tar.gz"'})
    assert urlsplit(url).netloc == f"{BUCKET}.s3.eu-central-1.amazonaws.com"
    q = query(url)
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and "/eu-central-1/s3/aws4_request" in q["X-Amz-Credential"]
    assert q["X-Amz-SignedHeaders"] == "host"
    assert q["response-content-disposition"] == 'attachment; filename="model.tar.gz"'


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4566", "http://localhost:5000", "http://moto:5000"])
def test_an_endpoint_override_gets_path_style_sigv4(aws_env: pytest.MonkeyPatch, endpoint: str) -> None:
    """The embedded AWS, LocalStack or compose's emulator: a bucket label cannot go in front of their host."""
    aws_env.setenv("AWS_ENDPOINT_URL", endpoint)
    url = part_url("us-east-1")
    assert url.startswith(f"{endpoint}/{BUCKET}/{KEY}?")
    assert query(url)["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query(url)["X-Amz-SignedHeaders"] == "content-length;host"


@pytest.mark.parametrize(("url", "on_aws"), [
    ("https://s3.us-east-1.amazonaws.com", True), ("https://s3.cn-north-1.amazonaws.com.cn", True),
    ("https://s3.amazonaws.com", True), ("http://127.0.0.1:5000", False), ("http://localhost:4566", False),
    ("https://amazonaws.com.example.org", False), (None, False)])
def test_is_aws_endpoint(url: str | None, on_aws: bool) -> None:
    assert is_aws_endpoint(url) is on_aws
    assert s3_config(on_aws)["s3"]["addressing_style"] == ("virtual" if on_aws else "path")
    assert s3_config(on_aws)["signature_version"] == "s3v4"
