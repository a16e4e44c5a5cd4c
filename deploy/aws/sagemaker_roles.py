"""The two roles SageMaker assumes: the execution role training jobs run as, and the serving role endpoints run
as. Each reaches only its prefixes of the bucket (`deploy.aws.bucket_access`), its own logs and metrics, and its
image; neither has AWS's managed SageMaker policies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy.aws import bucket_access, iam, images
from deploy.aws.cfn import Json, get_att, objects_arn, ref, sub

Add = Callable[..., Any]

# SageMaker writes training metrics to CloudWatch under this namespace, as the execution role.
SAGEMAKER_METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"
# ...and endpoints' instance and inference-component utilisation under these, as the serving role.
SERVING_METRICS_NAMESPACES = ["/aws/sagemaker/Endpoints", "/aws/sagemaker/InferenceComponents"]
# Each endpoint logs to a group of its own, `/aws/sagemaker/Endpoints/<endpoint name>`, which SageMaker creates.
SERVING_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
# What endpoints load from the bucket: the copies of base models (services/training/catalog.json's
# artifact_prefix) and the adapters, each job's `training-jobs/{user}/{job}/output/model.tar.gz`.
BASE_MODELS_PREFIX = bucket_access.BASE_MODELS
ADAPTER_OBJECTS = f"{bucket_access.TRAINING_JOBS}*/output/model.tar.gz"
# Training jobs list only their own prefixes (a channel's S3Prefix, checkpoints).
SAGEMAKER_LISTING = {"StringLike": {"s3:prefix": [p + "*" for p in (*bucket_access.SAGEMAKER_JOB_READS,
                                                                    *bucket_access.SAGEMAKER_JOB_OWNS)]}}


def sagemaker_job_objects(bucket_arn: Json) -> tuple[list[Json], list[Json]]:
    """What training jobs read, and their own objects (output, checkpoints), as object ARNs by prefix."""
    def objects(prefixes: tuple[str, ...]) -> list[Json]:
        return [objects_arn(bucket_arn, f"{p}*") for p in prefixes]

    return objects(bucket_access.SAGEMAKER_JOB_READS), objects(bucket_access.SAGEMAKER_JOB_OWNS)


def sagemaker_role(add: Add, tags: list[Json], log_groups: list[Json], trainer_repository: Json) -> None:
    """What training jobs run as: their prefixes of the bucket, their logs and metrics, the trainer image."""
    bucket_arn = get_att("Bucket", "Arn")
    reads, owns = sagemaker_job_objects(bucket_arn)
    statements: list[Json] = [
        {"Sid": "BucketListing", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
         "Condition": SAGEMAKER_LISTING},
        {"Sid": "BucketLocation", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": bucket_arn},
        # Its input channels: the normalised examples of its files, a base model's copy (deploy.aws.bucket_access).
        {"Sid": "BucketInputs", "Effect": "Allow", "Action": "s3:GetObject", "Resource": reads},
        # Output, checkpoints (read back when a spot job resumes) and the merged model, under training-jobs/.
        {"Sid": "BucketOutputs", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": owns},
        {"Sid": "TrainingLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": log_groups},
        {"Sid": "TrainingMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": SAGEMAKER_METRICS_NAMESPACE}}},
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullTrainerImage", "Effect": "Allow",
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
         "Resource": trainer_repository},
        # The trainer reads the Hugging Face token itself, for gated models (HF_TOKEN_SECRET_ID).
        {"Fn::If": ["HasHuggingFaceToken", {
            "Sid": "HuggingFaceToken", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
            "Resource": ref("HuggingFaceTokenSecret")}, ref("AWS::NoValue")]},
    ]
    add("SageMakerExecutionRole", "AWS::IAM::Role", {
        "Description": "Assumed by SageMaker training jobs: the bucket, training logs and the trainer image",
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}}]},
        "Policies": [{"PolicyName": "training-job", "PolicyDocument": {
            "Version": "2012-10-17", "Statement": statements}}],
        "Tags": tags})

def serving_role(add: Add, tags: list[Json]) -> None:
    """What SageMaker endpoints run as: they read base models and adapters from the bucket (nothing else
    there, and write nothing), pull the serving image and write their own logs and metrics."""
    bucket_arn = get_att("Bucket", "Arn")
    log_groups = sub(f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:"
                     f"{SERVING_LOG_GROUP_PREFIX}{iam.SERVING_NAME_PREFIX}*")
    statements: list[Json] = [
        # LMI copies a base model's whole prefix (HF_MODEL_ID=s3://...): it lists it first.
        {"Sid": "BaseModelListing", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": [BASE_MODELS_PREFIX + "*"]}}},
        {"Sid": "BucketLocation", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": bucket_arn},
        {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": [objects_arn(bucket_arn, f"{BASE_MODELS_PREFIX}*"), objects_arn(bucket_arn, ADAPTER_OBJECTS)]},
        {"Sid": "EndpointLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [log_groups, {"Fn::Join": ["", [log_groups, ":log-stream:*"]]}]},
        {"Sid": "EndpointMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
         "Condition": {"StringEquals": {"cloudwatch:namespace": SERVING_METRICS_NAMESPACES}}},
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullServingImage", "Effect": "Allow",
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
         "Resource": {"Fn::If": ["HasServingImageRepositoryArn", ref("ServingImageRepositoryArn"),
                                 lmi_repository_arn()]}},
        {"Fn::If": ["HasHuggingFaceToken", {
            "Sid": "HuggingFaceToken", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
            "Resource": ref("HuggingFaceTokenSecret")}, ref("AWS::NoValue")]},
    ]
    add("SageMakerServingRole", "AWS::IAM::Role", {
        "Description": "Assumed by SageMaker endpoints: base models and adapters in the bucket, their logs, "
                       "the serving image",
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}}]},
        "Policies": [{"PolicyName": "serving", "PolicyDocument": {
            "Version": "2012-10-17", "Statement": statements}}],
        "Tags": tags})


def lmi_repository_arn() -> Json:
    lmi = images.lmi_image()
    return sub(f"arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:{lmi.account}:repository/{lmi.repository}")
