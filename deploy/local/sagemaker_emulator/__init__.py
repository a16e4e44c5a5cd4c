"""A local stand-in for the SageMaker training-job API that really runs the jobs.

It speaks SageMaker's JSON 1.1 protocol, so an unchanged `boto3.client("sagemaker")` pointed at it
(`AWS_ENDPOINT_URL_SAGEMAKER`) creates, describes, lists and stops training jobs. Each job runs the
trainer's entry point as a subprocess under SageMaker's container contract (`/opt/ml` layout in a work
dir, `SM_*` variables), with input channels and checkpoints from S3, logs to CloudWatch Logs, the model
to S3 and "SageMaker Training Job State Change" events to EventBridge, all through the standard AWS
configuration (moto's server locally).

Layout: `app.py` (HTTP edge, JSON 1.1 protocol, `bootstrap()`), `handlers.py` (one function per
operation), `validation.py` (request checks), `errors.py` (the error types SageMaker answers with),
`models.py` (the job record and its wire shapes), `store.py` (jobs in memory and on disk), `runner.py`
(bounded worker pool, stop and max runtime), `container.py` (the container contract), `storage.py` (S3
transfers), `logstream.py` (CloudWatch Logs), `metrics.py` (MetricDefinitions), `events.py` (EventBridge),
`settings.py`.

Not emulated: other SageMaker resources (endpoints, models, tuning jobs...), more than one instance,
Pipe/FastFile input, ManifestFile channels, spot interruptions. A missing training job is answered with
`ValidationException: Requested resource not found.`, as SageMaker does (not the ResourceNotFound its
API model declares).
"""
