"""The checks, in the order they run and print: the guide's "Testing the setup" and "Debug commands", then
what the services need beyond them."""

from __future__ import annotations

from deploy.doctor.checks import bucket, config, identity, messaging, sagemaker, tables
from deploy.doctor.runner import Probe

CHECKS: tuple[Probe, ...] = (
    Probe("credentials", identity.credentials),
    Probe("bucket", bucket.bucket),
    Probe("tables", tables.tables),
    Probe("topics", messaging.topics),
    Probe("queues", messaging.queues),
    Probe("subscriptions", messaging.subscriptions),
    Probe("rules", messaging.rules),
    Probe("sagemaker-role", sagemaker.execution_role),
    Probe("serving-role", sagemaker.serving_role),
    Probe("sagemaker", sagemaker.sagemaker_api),
    Probe("gpu-quotas", sagemaker.gpu_quotas),
    Probe("google-oauth", config.google_oauth),
    Probe("secrets", config.secrets),
)
