"""The bucket (S3_BUCKET_NAME): reachable, versioned, encrypted by default, not public, and open to browser
uploads from the public address (CORS), as shared/contracts/resources.py describes it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from deploy.doctor.context import Context
from deploy.doctor.model import Check, failed, passed, warned

_BLOCK_ALL = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_NOT_IMPLEMENTED = {"NotImplemented", "501", "InternalError", "500"}


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


async def bucket(ctx: Context) -> list[Check]:
    name = ctx.name(ctx.resources.bucket.name)
    s3 = await ctx.client("s3")
    try:
        await s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if _code(exc) in ("403", "AccessDenied"):
            return [failed("bucket", f"bucket {name} exists but this identity may not use it (403)",
                           "the name belongs to another account, or the identity lacks s3:ListBucket on "
                           f"arn:aws:s3:::{name}; set S3_BUCKET_NAME to your bucket")]
        return [failed("bucket", f"bucket {name} not found ({_code(exc)})",
                       f"{ctx.provision_fix}; or `{ctx.aws_cli('s3api', f'create-bucket --bucket {name}')}`")]
    return [passed("bucket", f"bucket {name} is reachable"),
            *[await step(ctx, s3, name) for step in (_versioning, _encryption, _public_access, _cors)]]


async def _versioning(ctx: Context, s3: Any, name: str) -> Check:
    status = (await s3.get_bucket_versioning(Bucket=name)).get("Status", "never enabled")
    if status == "Enabled":
        return passed("bucket.versioning", f"versioning is Enabled on {name}")
    return failed("bucket.versioning", f"versioning is {status} on {name}: deleted or overwritten data is lost",
                  ctx.aws_cli("s3api", f"put-bucket-versioning --bucket {name} "
                                       "--versioning-configuration Status=Enabled"))


async def _encryption(ctx: Context, s3: Any, name: str) -> Check:
    algorithm = ctx.resources.bucket.encryption
    fix = ctx.aws_cli("s3api", f"put-bucket-encryption --bucket {name} --server-side-encryption-configuration "
                               f"'{{\"Rules\":[{{\"ApplyServerSideEncryptionByDefault\":"
                               f"{{\"SSEAlgorithm\":\"{algorithm}\"}}}}]}}'")
    try:
        rules = (await s3.get_bucket_encryption(Bucket=name))["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:
        if _code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    algorithms = [r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules]
    if not any(algorithms):
        return failed("bucket.encryption", f"no default encryption on {name}", fix)
    return passed("bucket.encryption", f"default encryption {', '.join(a for a in algorithms if a)} on {name}")


async def _public_access(ctx: Context, s3: Any, name: str) -> Check:
    fix = ctx.aws_cli("s3api", f"put-public-access-block --bucket {name} --public-access-block-configuration "
                               + ",".join(f"{flag}=true" for flag in _BLOCK_ALL))
    try:
        config = (await s3.get_public_access_block(Bucket=name))["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if _code(exc) in _NOT_IMPLEMENTED:
            return warned("bucket.public-access", f"this S3 cannot report public access blocks ({_code(exc)})",
                          f"on AWS: {ctx.aws_cli('s3api', f'get-public-access-block --bucket {name}')}")
        if _code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        return failed("bucket.public-access", f"no public access block on {name}", fix)
    open_flags = [flag for flag in _BLOCK_ALL if not config.get(flag)]
    if open_flags:
        return failed("bucket.public-access", f"public access not fully blocked on {name}: "
                      f"{', '.join(open_flags)} off", fix)
    return passed("bucket.public-access", f"all public access blocked on {name}")


async def _cors(ctx: Context, s3: Any, name: str) -> Check:
    origin = origin_of(ctx.auth.base_url)
    rule = {"AllowedOrigins": [origin], "AllowedMethods": ["PUT"], "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}
    fix = ctx.aws_cli("s3api", f"put-bucket-cors --bucket {name} --cors-configuration "
                               f"'{json.dumps({'CORSRules': [rule]})}'")
    try:
        rules = (await s3.get_bucket_cors(Bucket=name)).get("CORSRules", [])
    except ClientError as exc:
        if _code(exc) != "NoSuchCORSConfiguration":
            raise
        rules = []
    for r in rules:
        if (origin in r.get("AllowedOrigins", []) or "*" in r.get("AllowedOrigins", [])) \
                and "PUT" in r.get("AllowedMethods", []):
            if "etag" not in {h.lower() for h in r.get("ExposeHeaders", [])}:
                return failed("bucket.cors", f"CORS on {name} allows PUT from {origin} but does not expose ETag: "
                              "browsers cannot complete direct uploads", fix)
            return passed("bucket.cors", f"CORS on {name} allows direct uploads (PUT) from {origin}")
    return failed("bucket.cors", f"CORS on {name} does not allow PUT from {origin} (BASE_URL): "
                  "direct uploads from the web app fail", fix)
