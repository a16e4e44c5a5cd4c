"""What the public API answers, beyond what the services' FastAPI apps tell: the JSON Schema of each success body
the routes build by hand (`dict[str, Any]` in their signatures), the error statuses each operation can answer,
and the routes the apps cannot describe (the streamed multipart upload, the gateway's own event stream).

deploy/openapi.py merges this into the services' own OpenAPI documents. When a route's answers change, change
them here: the schemathesis test (tests/e2e/test_openapi.py) fails on a status or a body this file does not
allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

STRING: Json = {"type": "string"}
INTEGER: Json = {"type": "integer"}
NUMBER: Json = {"type": "number"}
BOOLEAN: Json = {"type": "boolean"}
OBJECT: Json = {"type": "object"}


def nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


def const(value: str) -> Json:
    return {"type": "string", "const": value}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(**properties: Json) -> Json:
    """An object whose listed keys are all present (the routes always send them); others may follow."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def listing(item: str, **extra: Json) -> Json:
    return obj(object=const("list"), data={"type": "array", "items": ref(item)}, **extra)


def deleted(kind: str) -> Json:
    return obj(id=STRING, object=const(kind), deleted={"type": "boolean", "const": True})


ERROR_ENVELOPE: Json = {
    "type": "object", "title": "Error", "required": ["error"], "additionalProperties": False,
    "description": "Every error, from every route: OpenAI's error envelope.",
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": STRING, "type": STRING, "param": nullable(STRING), "code": nullable(STRING)}}},
}

# The bodies the routes build by hand, by name (components/schemas).
SCHEMAS: dict[str, Json] = {
    "Error": ERROR_ENVELOPE,
    "User": obj(id=STRING, object=const("user"), email=STRING, name=nullable(STRING), created_at=INTEGER,
                providers={"type": "array", "items": STRING}),
    "Session": obj(access_token=STRING, token_type=const("bearer"), expires_in=INTEGER, user=ref("User"),
                   session=obj(id=STRING, expires_at=INTEGER)),
    "Providers": obj(password=BOOLEAN, google=BOOLEAN),
    "ApiKey": obj(id=STRING, object=const("api_key"), name=STRING, prefix=STRING, created_at=INTEGER,
                  last_used_at=nullable(INTEGER)),
    "CreatedApiKey": {"allOf": [ref("ApiKey"), obj(key=STRING)],
                  "description": "The key itself is in this answer only."},
    "ApiKeyList": listing("ApiKey", has_more=BOOLEAN),
    "ApiKeyDeleted": deleted("api_key"),
    "AuditEvent": obj(id=STRING, object=const("audit_event"), type=STRING, created_at=INTEGER,
                      ip_address=nullable(STRING), user_agent=nullable(STRING), details=nullable(OBJECT)),
    "AuditEventList": listing("AuditEvent", has_more=BOOLEAN, first_id=nullable(STRING), last_id=nullable(STRING)),
    "Jwks": obj(keys={"type": "array", "items": OBJECT}),
    "File": obj(id=STRING, object=const("file"), bytes=INTEGER, created_at=INTEGER, filename=STRING,
                purpose=STRING, status=STRING, status_details=nullable(STRING), expires_at={"type": "null"}),
    "FileList": listing("File", has_more=BOOLEAN, first_id=nullable(STRING), last_id=nullable(STRING)),
    "FileDeleted": deleted("file"),
    "FineTuningJob": obj(id=STRING, object=const("fine_tuning.job"), created_at=INTEGER,
                         finished_at=nullable(INTEGER), model=STRING, organization_id=STRING, status=STRING,
                         fine_tuned_model=nullable(STRING), error=nullable(OBJECT), hyperparameters=OBJECT,
                         result_files={"type": "array", "items": STRING}, trained_tokens=nullable(INTEGER),
                         training_file=STRING, validation_file=nullable(STRING), seed=nullable(INTEGER)),
    "FineTuningJobList": listing("FineTuningJob", has_more=BOOLEAN),
    "RetriedJob": {"allOf": [{"$ref": "#/components/schemas/FineTuningJob"},
                             obj(retry=obj(from_step=nullable(INTEGER), checkpoint=nullable(STRING),
                                           message=STRING))]},
    "FineTuningJobEvent": obj(id=STRING, object=const("fine_tuning.job.event"), created_at=INTEGER,
                              level=STRING, message=STRING),
    "FineTuningJobEventList": listing("FineTuningJobEvent", has_more=BOOLEAN),
    "FineTuningJobCheckpoint": obj(id=STRING, object=const("fine_tuning.job.checkpoint"), created_at=INTEGER,
                                   fine_tuned_model_checkpoint=STRING, fine_tuning_job_id=STRING,
                                   step_number=INTEGER, metrics=OBJECT),
    "FineTuningJobCheckpointList": listing("FineTuningJobCheckpoint", has_more=BOOLEAN, first_id=nullable(STRING),
                                           last_id=nullable(STRING)),
    "Estimate": obj(object=const("fine_tuning.estimate"), model=STRING, instance_type=STRING,
                    instance_count=INTEGER, processes=INTEGER, spot=BOOLEAN,
                    examples=INTEGER, trained_tokens=INTEGER, steps=INTEGER, estimated_duration_s=INTEGER,
                    estimated_cost_usd=NUMBER, cost_on_demand_usd=NUMBER, cost_spot_usd=NUMBER, currency=STRING,
                    memory=nullable(OBJECT), inputs=OBJECT),
    "ArtifactLink": obj(name=STRING, kind={"type": "string", "enum": ["adapter", "merged_model", "results"]},
                        url=STRING, bytes=INTEGER, expires_at=INTEGER),
    "ArtifactLinkList": listing("ArtifactLink"),
    "MetricsHistory": obj(object=const("list"), data={"type": "array", "items": obj(step=INTEGER)},
                          total_points=INTEGER),
    "LogLines": obj(object=const("list"), data={"type": "array", "items": obj(timestamp=INTEGER, message=STRING,
                                                                                   host=nullable(STRING))},
                    truncated=BOOLEAN),
    "Upload": obj(id=STRING, object=const("upload"), status={"type": "string",
                                                             "enum": ["pending", "completed", "cancelled"]},
                  filename=STRING, purpose=STRING, bytes=INTEGER, created_at=INTEGER, expires_at=nullable(INTEGER),
                  file=nullable(ref("File"))),
    "FilePreview": obj(object=const("list"), file_id=STRING, format=nullable(STRING), data={
        "type": "array", "items": obj(index=INTEGER, example=OBJECT, truncated={"type": "array"})}, has_more=BOOLEAN),
    "Model": obj(id=STRING, object=const("model"), created=INTEGER, owned_by=STRING),
    "ModelList": listing("Model"),
    "ModelDeleted": deleted("model"),
    "ChatCompletion": obj(id=STRING, object=const("chat.completion"), created=INTEGER, model=STRING,
                          choices={"type": "array", "items": OBJECT}),
    "Deployment": obj(id=STRING, object=const("deployment"), model=STRING, base_model=nullable(STRING),
                      instance_type=STRING, status=STRING, created_at=INTEGER),
    "DeploymentList": listing("Deployment"),
    "Evaluation": obj(id=STRING, object=const("evaluation"), status=STRING, models={"type": "array",
                                                                                        "items": STRING},
                      file=STRING, max_examples=INTEGER, created_at=INTEGER),
    "EvaluationList": listing("Evaluation"),
    "EvaluationDeleted": deleted("evaluation"),
}


@dataclass(frozen=True)
class Answers:
    """One operation's answers: its success body (a name in SCHEMAS) and the errors it can answer beyond those
    every operation of its kind has (401 without a token, 404 for an unknown id in the path, 400 for a bad
    parameter or body, 413 for a body over the limit)."""

    body: str | None = None
    errors: dict[int, str] = field(default_factory=dict)
    other: dict[int, Json] = field(default_factory=dict)  # answers that are neither JSON nor errors


SPEND = "The job's cost ceiling would pass your monthly spend limit (MONTHLY_SPEND_LIMIT_USD)."
ACTIVE = "You have as many active jobs as MAX_ACTIVE_JOBS_PER_USER allows."
LIMITED = "Too many attempts from this address or for this account: wait for Retry-After."
NOT_CONFIRMED = "The password given to confirm is wrong (or the access token is bad)."
CSRF = "The refresh cookie came without its CSRF token, or from another site."
TOO_LARGE = "The file is larger than the limit, or storing it would exceed the storage quota."
NOT_READY = "The file is not processed (still being validated, or it failed validation)."

GOOGLE_ERRORS = {404: "Google sign-in is not configured on this server.", 429: LIMITED}
GOOGLE_ANSWERS: dict[int, Json] = {
    302: {"description": "Redirect mode: on to Google's consent page, or back to `next` (signed in) or to "
                         "`/login?error=<code>`.", "headers": {"Location": {"schema": STRING}}},
    200: {"description": "Popup mode: a page that hands the result to the window that opened it, and closes.",
          "content": {"text/html": {"schema": STRING}}},
}

OPERATIONS: dict[tuple[str, str], Answers] = {
    ("GET", "/auth/providers"): Answers("Providers"),
    ("POST", "/auth/register"): Answers("Session", {409: "An account with this email exists.", 429: LIMITED}),
    ("POST", "/auth/login"): Answers("Session", {401: "Wrong email or password.", 429: LIMITED}),
    ("POST", "/auth/refresh"): Answers("Session", {401: "No session to refresh, or it ended.", 403: CSRF}),
    ("POST", "/auth/logout"): Answers(None, {401: "The refresh cookie's secret is wrong.", 403: CSRF}),
    ("GET", "/auth/me"): Answers("User", {404: "The account was deleted."}),
    ("DELETE", "/auth/me"): Answers(None, {401: NOT_CONFIRMED, 404: "The account was deleted.", 429: LIMITED}),
    ("POST", "/auth/password"): Answers(None, {401: NOT_CONFIRMED, 404: "The account was deleted.", 429: LIMITED}),
    ("GET", "/api/audit"): Answers("AuditEventList"),
    ("GET", "/auth/api-keys"): Answers("ApiKeyList"),
    ("POST", "/auth/api-keys"): Answers("CreatedApiKey"),
    ("DELETE", "/auth/api-keys/{key_id}"): Answers("ApiKeyDeleted"),
    ("GET", "/.well-known/jwks.json"): Answers("Jwks"),
    ("GET", "/auth/google/login"): Answers(None, GOOGLE_ERRORS, GOOGLE_ANSWERS),
    ("GET", "/auth/google/callback"): Answers(None, GOOGLE_ERRORS, GOOGLE_ANSWERS),
    ("POST", "/v1/files"): Answers("File", {413: TOO_LARGE}),
    ("GET", "/v1/files"): Answers("FileList"),
    ("GET", "/v1/files/{file_id}"): Answers("File"),
    ("DELETE", "/v1/files/{file_id}"): Answers("FileDeleted"),
    ("GET", "/v1/files/{file_id}/content"): Answers(None, other={200: {
        "description": "The file's bytes, as uploaded.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType":
                                                            "application/octet-stream"}}}}}),
    ("POST", "/api/uploads"): Answers("Upload", {413: TOO_LARGE, 429: "Too many direct uploads open at once: complete "
                                                                 "or abort one (MAX_OPEN_UPLOADS)."}),
    ("POST", "/api/uploads/{file_id}/complete"): Answers("Upload", {409: "The upload is already complete."}),
    ("DELETE", "/api/uploads/{file_id}"): Answers("Upload", {409: "The upload is already complete."}),
    ("GET", "/api/files/{file_id}/report"): Answers(None, {409: NOT_READY}),
    ("GET", "/api/files/{file_id}/preview"): Answers("FilePreview", {409: NOT_READY}),
    ("POST", "/v1/fine_tuning/jobs"): Answers("FineTuningJob", {
        404: "`model` names no `ft:` model of yours, or `from_checkpoint` no checkpoint of yours.",
        402: SPEND, 429: ACTIVE}),
    ("GET", "/v1/fine_tuning/jobs"): Answers("FineTuningJobList", {404: "`after` names no job of yours."}),
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): Answers("FineTuningJob"),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): Answers("FineTuningJobEventList"),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): Answers("FineTuningJob", {409: "The job has ended."}),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): Answers("FineTuningJobCheckpointList"),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/pause"): Answers("FineTuningJob"),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/resume"): Answers("FineTuningJob", {402: SPEND, 429: ACTIVE}),
    ("POST", "/api/jobs/{job_id}/retry"): Answers("RetriedJob", {402: SPEND, 429: ACTIVE}),
    ("POST", "/api/estimates"): Answers("Estimate", {
        404: "`model` names no `ft:` model of yours, or `from_checkpoint` no checkpoint of yours."}),
    ("GET", "/api/jobs/{job_id}/artifacts"): Answers("ArtifactLinkList"),
    ("GET", "/api/jobs/{job_id}/metrics"): Answers("MetricsHistory"),
    ("GET", "/api/jobs/{job_id}/logs"): Answers("LogLines"),
    ("GET", "/v1/models"): Answers("ModelList"),
    ("GET", "/v1/models/{model_id}"): Answers("Model"),
    ("DELETE", "/v1/models/{model_id}"): Answers("ModelDeleted"),
    ("POST", "/v1/chat/completions"): Answers("ChatCompletion", {
        404: "No such model.", 503: "The model's deployment is starting: retry after Retry-After."}, {
        200: {"description": "The completion; with `stream: true`, its chunks as Server-Sent Events.",
              "content": {"application/json": {"schema": ref("ChatCompletion")},
                          "text/event-stream": {"schema": STRING}}}}),
    ("POST", "/api/deployments"): Answers("Deployment", {404: "No such model."}),
    ("GET", "/api/deployments"): Answers("DeploymentList"),
    ("GET", "/api/deployments/{deployment_id}"): Answers("Deployment"),
    ("DELETE", "/api/deployments/{deployment_id}"): Answers("Deployment"),
    ("POST", "/api/evaluations"): Answers("Evaluation", {404: "No such model or file."}),
    ("GET", "/api/evaluations"): Answers("EvaluationList"),
    ("GET", "/api/evaluations/{evaluation_id}"): Answers("Evaluation"),
    ("DELETE", "/api/evaluations/{evaluation_id}"): Answers("EvaluationDeleted"),
}

# The routes whose request the apps read by hand, so their documents lack it.
UPLOAD_FORM: Json = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "purpose"], "additionalProperties": False,
        "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream"},
                       "purpose": {"type": "string", "enum": ["fine-tune", "assistants", "batch", "user_data",
                                                              "evals", "vision"]},
                       "format": {"type": "string", "enum": ["auto", "jsonl", "json", "csv", "txt"],
                                  "description": "How to read the file; left out (or auto): detected."}}}}},
}
REQUEST_BODIES: dict[tuple[str, str], Json] = {("POST", "/v1/files"): UPLOAD_FORM}

# The gateway's own public routes (its app does not describe them: it serves them by hand).
GATEWAY_PATHS: dict[str, Json] = {
    "/api/events": {"get": {
        "summary": "Live events",
        "description": "Server-Sent Events: the caller's own files and training events, live; resumes after "
                       "`Last-Event-ID` (or `?last_event_id=`); ends when the access token expires.",
        "operationId": "live_events_api_events_get",
        "parameters": [
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": STRING},
            {"name": "last_event_id", "in": "query", "required": False, "schema": STRING}],
        "responses": {"200": {"description": "The event stream.",
                              "content": {"text/event-stream": {"schema": STRING}}}},
    }},
}
