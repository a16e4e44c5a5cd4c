"""The stack's bucket, where users' data lives (files, training artifacts, evaluations), and its policy: TLS only,
and the training jobs' execution role on its prefixes, as in its own policy (deploy.aws.sagemaker_roles)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy.aws import bucket_access
from deploy.aws.cfn import Json, get_att, objects_arn, ref, sub
from deploy.aws.sagemaker_roles import SAGEMAKER_LISTING, sagemaker_job_objects
from shared.contracts.resources import Bucket

Add = Callable[..., Any]

# Browsers PUT direct-upload parts to presigned URLs and read back each part's ETag (deploy/local/provision.py).
CORS_RULE = {"AllowedMethods": ["PUT"], "AllowedHeaders": ["*"], "ExposedHeaders": ["ETag"], "MaxAge": 3600}


def bucket(add: Add, b: Bucket, prefix: str, tags: list[Json]) -> None:
    """The one bucket (users' data): versioned, encrypted, private, TLS only, kept when the stack goes."""
    lifecycle = [
        {"Id": "abort-incomplete-multipart-uploads", "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": b.abort_incomplete_uploads_days}},
        # Deletes and overwrites keep the old version (versioning): gone for good after this many days.
        {"Id": "expire-noncurrent-versions", "Status": "Enabled",
         "NoncurrentVersionExpiration": {"NoncurrentDays": ref("NoncurrentVersionDays")},
         "ExpiredObjectDeleteMarker": True},
        # Finished jobs' artifacts (adapters, merged models, checkpoints) are read rarely after the first
        # days: Intelligent-Tiering moves what nobody reads to cheaper tiers, and back on access.
        {"Id": "finished-job-artifacts", "Status": "Enabled", "Prefix": bucket_access.TRAINING_JOBS,
         "Transitions": [{"StorageClass": "INTELLIGENT_TIERING",
                          "TransitionInDays": ref("ArtifactsTieringDays")}]},
    ]
    properties: Json = {
        "BucketName": sub(f"{prefix}-${{AWS::AccountId}}-${{AWS::Region}}"),
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": b.encryption}, "BucketKeyEnabled": True}]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LifecycleConfiguration": {"Rules": lifecycle},
        # The local origins of the description become the deployment's one origin: the public domain.
        "CorsConfiguration": {"CorsRules": [{**CORS_RULE, "AllowedOrigins": [sub("https://${DomainName}")]}]},
        "Tags": tags,
    }
    if b.versioning:
        properties["VersioningConfiguration"] = {"Status": "Enabled"}
    # Users' data, with every version: never deleted with the stack (`make teardown` says how to empty it).
    add("Bucket", "AWS::S3::Bucket", properties, DeletionPolicy="Retain", UpdateReplacePolicy="Retain")
    bucket_arn = get_att("Bucket", "Arn")
    all_objects = objects_arn(bucket_arn, "*")
    role = {"AWS": get_att("SageMakerExecutionRole", "Arn")}
    reads, owns = sagemaker_job_objects(bucket_arn)
    add("BucketPolicy", "AWS::S3::BucketPolicy", {"Bucket": ref("Bucket"), "PolicyDocument": {
        "Version": "2012-10-17", "Statement": [
            {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": [bucket_arn, all_objects], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            # The setup guide's SageMaker access. SageMaker reaches S3 as the execution role it assumes, so
            # the grant names that role rather than the sagemaker.amazonaws.com service at large.
            # Its prefixes only, as in its own policy: a bucket policy grant alone would be enough.
            {"Sid": "AllowSageMakerList", "Effect": "Allow", "Principal": role,
             "Action": "s3:ListBucket", "Resource": bucket_arn, "Condition": SAGEMAKER_LISTING},
            {"Sid": "AllowSageMakerLocation", "Effect": "Allow", "Principal": role,
             "Action": "s3:GetBucketLocation", "Resource": bucket_arn},
            {"Sid": "AllowSageMakerReads", "Effect": "Allow", "Principal": role,
             "Action": "s3:GetObject", "Resource": reads},
            {"Sid": "AllowSageMakerObjects", "Effect": "Allow", "Principal": role,
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": owns},
        ]}})
