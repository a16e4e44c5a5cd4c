"""A local stand-in for the SageMaker API (training jobs, and hosting on endpoints) that really runs the work.

It speaks SageMaker's JSON 1.1 protocol, so an unchanged `boto3.client("sagemaker")` pointed at it
(`AWS_ENDPOINT_URL_SAGEMAKER`) creates, describes, lists and stops training jobs. Each job runs the
trainer's entry point as a subprocess under SageMaker's container contract (`/opt/ml` layout in a work
dir, `SM_*` variables), with input channels and checkpoints from S3, logs to CloudWatch Logs, the model
to S3 and "SageMaker Training Job State Change" events to EventBridge, all through the standard AWS
configuration (moto's server locally).

It also hosts models as SageMaker endpoints built on inference components (CreateModel, CreateEndpointConfig,
CreateEndpoint, CreateInferenceComponent and their Describe/Delete/List), with a real CPU generation server
per base inference component (deploy/local/generation_server, LMI's chat schema) and LoRA adapters as adapter
inference components; the runtime API (InvokeEndpoint, InvokeEndpointWithResponseStream) answers on the same
port, so `boto3.client("sagemaker-runtime")` pointed at it (`AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`) works.

Layout: `app.py` (HTTP edge, JSON 1.1 protocol, `bootstrap()`), `handlers.py` (one function per training
operation), `validation.py` (request checks), `errors.py` (the error types SageMaker answers with),
`models.py` (the job record and its wire shapes), `job_store.py` (jobs in memory and on disk), `runner.py`
(bounded worker pool, stop and max runtime), `container.py` (the container contract), `s3_transfers.py` (S3
transfers), `logstream.py` (CloudWatch Logs), `metrics.py` (MetricDefinitions), `state_change_events.py`
(EventBridge), `settings.py`. Hosting: `endpoint_handlers.py` (one function per hosting operation),
`endpoint_validation.py`, `endpoint_records.py`, `endpoint_store.py`, `hosting.py` (background bring-up and
tear-down, where an invocation goes), `model_artifacts.py` (model and adapter files from S3),
`model_servers.py` (the generation server processes), `runtime.py` (the runtime API), `eventstream.py` (AWS's
binary event stream encoder), `paging.py`.

Not emulated: other SageMaker resources (tuning jobs, batch transform...), endpoints whose variants name a
model (inference components only), more than one instance, Pipe/FastFile input, ManifestFile channels. A
missing training job is answered with `ValidationException: Requested resource not found.`, as SageMaker does
(not the ResourceNotFound its API model declares).
"""
