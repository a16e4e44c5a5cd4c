"""Every AWS resource LLM Tuner needs, described once, as data: the contract of names every part reads.

The services' settings take their default names from here; `deploy.local.provision` applies this description to
the embedded AWS (idempotently), the deployment turns it into CloudFormation and IAM, the doctor checks it.
Subscriptions name their event types through the producers' contract modules. Nothing here calls AWS.
Names are the defaults; services read theirs from the environment (e.g. DYNAMODB_USERS_TABLE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared.contracts import auth_events, files_events, inference_events, sagemaker_events, training_events

PREFIX = "llm-tuner"

KeyType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class Key:
    name: str
    type: KeyType = "S"


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: Key
    range_key: Key | None = None


@dataclass(frozen=True)
class Table:
    name: str
    owner: str
    hash_key: Key
    range_key: Key | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None


@dataclass(frozen=True)
class Bucket:
    name: str
    versioning: bool = True
    encryption: Literal["AES256", "aws:kms"] = "AES256"
    # Browsers PUT upload parts straight to presigned URLs: the web app's origins, and the ETag they must read.
    cors_origins: tuple[str, ...] = ("http://localhost:5000",)
    # Parts of direct uploads nobody completed or aborted are stored (and billed) until S3 drops them.
    abort_incomplete_uploads_days: int = 2


@dataclass(frozen=True)
class Topic:
    name: str
    owner: str  # the one producer that publishes to it


@dataclass(frozen=True)
class Queue:
    name: str
    owner: str  # the one consumer that reads it
    visibility_timeout_s: int = 60
    max_receives: int = 5  # then SQS (and our consumer) move a message to the DLQ
    retention_s: int = 4 * 24 * 3600
    dlq_retention_s: int = 14 * 24 * 3600

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"


@dataclass(frozen=True)
class Subscription:
    topic: str
    queue: str
    event_types: tuple[str, ...]  # the filter policy on the `type` message attribute
    raw_delivery: bool = True


@dataclass(frozen=True)
class ReplicaSubscription:
    """Each replica of `owner` creates its own queue (`queue_prefix` + replica id) at start, subscribed to
    `topic` for `event_types`, and deletes it at stop: events every replica must see (revocations, live
    updates). The deployment grants the owner the right to manage queues with that prefix."""

    topic: str
    owner: str
    queue_prefix: str
    event_types: tuple[str, ...]


@dataclass(frozen=True)
class EventRule:
    name: str
    description: str
    pattern: dict[str, list[str]]
    queue: str


@dataclass(frozen=True)
class Resources:
    tables: tuple[Table, ...]
    bucket: Bucket
    topics: tuple[Topic, ...]
    queues: tuple[Queue, ...]
    subscriptions: tuple[Subscription, ...]
    rules: tuple[EventRule, ...]
    replica_subscriptions: tuple[ReplicaSubscription, ...] = ()
    log_groups: tuple[str, ...] = field(default=("/aws/sagemaker/TrainingJobs",))

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)

    def queue(self, name: str) -> Queue:
        return next(q for q in self.queues if q.name == name)


USERS_TABLE = f"{PREFIX}-users"
SESSIONS_TABLE = f"{PREFIX}-auth-sessions"
API_KEYS_TABLE = f"{PREFIX}-auth-api-keys"
RATE_LIMITS_TABLE = f"{PREFIX}-auth-rate-limits"
OAUTH_STATES_TABLE = f"{PREFIX}-auth-oauth-states"
AUDIT_TABLE = f"{PREFIX}-auth-audit"
FILES_TABLE = f"{PREFIX}-files"
JOBS_TABLE = f"{PREFIX}-training-jobs"
JOB_EVENTS_TABLE = f"{PREFIX}-training-events"
TRAINING_FILES_TABLE = f"{PREFIX}-training-files"
FILES_INBOX_TABLE = f"{PREFIX}-files-inbox"
FILES_USAGE_TABLE = f"{PREFIX}-files-usage"
TRAINING_INBOX_TABLE = f"{PREFIX}-training-inbox"
TRAINING_THROUGHPUT_TABLE = f"{PREFIX}-training-throughput"
INFERENCE_MODELS_TABLE = f"{PREFIX}-inference-models"
INFERENCE_DEPLOYMENTS_TABLE = f"{PREFIX}-inference-deployments"
INFERENCE_EVALUATIONS_TABLE = f"{PREFIX}-inference-evaluations"
INFERENCE_INBOX_TABLE = f"{PREFIX}-inference-inbox"
INFERENCE_FILES_TABLE = f"{PREFIX}-inference-files"
INFERENCE_RATE_LIMITS_TABLE = f"{PREFIX}-inference-rate-limits"

AUTH_TOPIC = f"{PREFIX}-auth-events"
FILES_TOPIC = f"{PREFIX}-files-events"
TRAINING_TOPIC = f"{PREFIX}-training-events"
INFERENCE_TOPIC = f"{PREFIX}-inference-events"
# auth's alerts for people (operators subscribe by email or chat): repeated failed sign-ins to one account.
SECURITY_TOPIC = f"{PREFIX}-security-alerts"

FILES_QUEUE = f"{PREFIX}-files-worker"
TRAINING_QUEUE = f"{PREFIX}-training-worker"
INFERENCE_QUEUE = f"{PREFIX}-inference-worker"
GATEWAY_REPLICA_QUEUE_PREFIX = f"{PREFIX}-gateway-replica-"

# What every gateway replica must hear at once: a revoked key or session stops working everywhere.
GATEWAY_AUTH_EVENTS = (auth_events.APIKEY_REVOKED, auth_events.SESSION_REVOKED, auth_events.USER_DELETED)
# What every replica passes on to the browsers connected to it (live updates over Server-Sent Events).
FILE_EVENTS = (files_events.FILE_UPLOADED, files_events.FILE_VALIDATED, files_events.FILE_REJECTED,
               files_events.FILE_DELETED)
GATEWAY_FILE_EVENTS = FILE_EVENTS
GATEWAY_TRAINING_EVENTS = (*(model.TYPE for model in training_events.JOB_STATUS_EVENTS.values()),
                           training_events.JOB_METRICS)
GATEWAY_LIVE_FILES_QUEUE_PREFIX = f"{GATEWAY_REPLICA_QUEUE_PREFIX}files-"
GATEWAY_LIVE_TRAINING_QUEUE_PREFIX = f"{GATEWAY_REPLICA_QUEUE_PREFIX}training-"
GATEWAY_INFERENCE_EVENTS = (*(model.TYPE for model in inference_events.DEPLOYMENT_STATUS_EVENTS.values()),
                            *(model.TYPE for model in inference_events.EVALUATION_STATUS_EVENTS.values()))
GATEWAY_LIVE_INFERENCE_QUEUE_PREFIX = f"{GATEWAY_REPLICA_QUEUE_PREFIX}inference-"

BUCKET = f"{PREFIX}-local"

SAGEMAKER_STATE_RULE = f"{PREFIX}-sagemaker-training-state"


def describe(bucket_name: str = BUCKET, web_origins: tuple[str, ...] = ("http://localhost:5000",)) -> Resources:
    """`web_origins`: where the web app is served from, the origins its browsers PUT upload parts from."""
    message_id = Key("message_id")
    return Resources(
        tables=(
            Table(USERS_TABLE, "auth", Key("id"), indexes=(Index("email-index", Key("email")),)),
            Table(SESSIONS_TABLE, "auth", Key("session_id"), indexes=(Index("user-index", Key("user_id")),),
                  ttl_attribute="expires_at"),
            Table(API_KEYS_TABLE, "auth", Key("key_id"),
                  indexes=(Index("user-index", Key("user_id"), Key("created_at", "N")),)),
            Table(RATE_LIMITS_TABLE, "auth", Key("bucket"), ttl_attribute="expires_at"),
            Table(OAUTH_STATES_TABLE, "auth", Key("state"), ttl_attribute="expires_at"),
            # Each user's security events (newest first by `entry`) and the addresses they signed in from.
            Table(AUDIT_TABLE, "auth", Key("user_id"), Key("entry"), ttl_attribute="expires_at"),
            Table(FILES_TABLE, "files", Key("file_id"), indexes=(Index("user-files-index", Key("user_id")),)),
            Table(FILES_INBOX_TABLE, "files", message_id, ttl_attribute="expires_at"),
            Table(FILES_USAGE_TABLE, "files", Key("user_id")),  # bytes stored per user, for the quota
            # status-index is sparse: only unfinished jobs carry `active_status` (their status), so the
            # reconciler finds queued and running jobs by a Query whose cost follows their number.
            # TTL: only the notes a deleted account's jobs leave (services/training/deleted_jobs.py) carry expires_at.
            Table(JOBS_TABLE, "training", Key("job_id"),
                  indexes=(Index("user-index", Key("user_id"), Key("created_at")),
                           Index("status-index", Key("active_status"), Key("created_at"))),
                  ttl_attribute="expires_at"),
            Table(JOB_EVENTS_TABLE, "training", Key("job_id"), Key("event_id")),
            Table(TRAINING_FILES_TABLE, "training", Key("file_id"), indexes=(Index("user-index", Key("user_id")),)),
            Table(TRAINING_INBOX_TABLE, "training", message_id, ttl_attribute="expires_at"),
            # Measured seconds and tokens per (model, instance type): what estimates learn from.
            Table(TRAINING_THROUGHPUT_TABLE, "training", Key("model_instance")),
            # The models inference serves: each user's fine-tuned ones, projected from training.job.succeeded.
            Table(INFERENCE_MODELS_TABLE, "inference", Key("model_id"), indexes=(Index("user-index", Key("user_id")),)),
            # status-index is sparse like the jobs': only deployments not yet deleted carry `active_status`.
            Table(INFERENCE_DEPLOYMENTS_TABLE, "inference", Key("deployment_id"),
                  indexes=(Index("user-index", Key("user_id"), Key("created_at")),
                           Index("status-index", Key("active_status"), Key("created_at")))),
            Table(INFERENCE_EVALUATIONS_TABLE, "inference", Key("evaluation_id"),
                  indexes=(Index("user-index", Key("user_id"), Key("created_at")),)),
            # inference's own projection of the files evaluations read (fed by files' events).
            Table(INFERENCE_FILES_TABLE, "inference", Key("file_id")),
            Table(INFERENCE_INBOX_TABLE, "inference", message_id, ttl_attribute="expires_at"),
            Table(INFERENCE_RATE_LIMITS_TABLE, "inference", Key("bucket"), ttl_attribute="expires_at"),
        ),
        bucket=Bucket(bucket_name, cors_origins=web_origins),
        topics=(Topic(AUTH_TOPIC, "auth"), Topic(FILES_TOPIC, "files"), Topic(TRAINING_TOPIC, "training"),
                Topic(INFERENCE_TOPIC, "inference"), Topic(SECURITY_TOPIC, "auth")),
        queues=(
            Queue(FILES_QUEUE, "files", visibility_timeout_s=120),
            # Launching waits on SageMaker's API; state changes are quick. Long handlers extend visibility.
            Queue(TRAINING_QUEUE, "training", visibility_timeout_s=120),
            # Evaluations run many generations; their handler extends its visibility while it works.
            Queue(INFERENCE_QUEUE, "inference", visibility_timeout_s=120),
        ),
        subscriptions=(
            Subscription(FILES_TOPIC, FILES_QUEUE, (files_events.FILE_UPLOADED,)),
            # A deleted account's data goes with it, in every service that holds some.
            Subscription(AUTH_TOPIC, FILES_QUEUE, (auth_events.USER_DELETED,)),
            # A succeeded job's results CSV becomes a file (purpose fine-tune-results).
            Subscription(TRAINING_TOPIC, FILES_QUEUE, (training_events.JOB_SUCCEEDED,)),
            Subscription(AUTH_TOPIC, TRAINING_QUEUE, (auth_events.USER_DELETED,)),
            # training keeps its own projection of the files its jobs use.
            Subscription(FILES_TOPIC, TRAINING_QUEUE, FILE_EVENTS),
            # A fine-tuned model its owner deleted: training removes the job's artifacts.
            Subscription(INFERENCE_TOPIC, TRAINING_QUEUE, (inference_events.MODEL_DELETED,)),
            # inference's own projections: the fine-tuned models it serves, the files evaluations read.
            Subscription(TRAINING_TOPIC, INFERENCE_QUEUE, (training_events.JOB_SUCCEEDED,)),
            Subscription(FILES_TOPIC, INFERENCE_QUEUE, FILE_EVENTS),
            Subscription(AUTH_TOPIC, INFERENCE_QUEUE, (auth_events.USER_DELETED,)),
        ),
        rules=(
            EventRule(
                SAGEMAKER_STATE_RULE,
                "SageMaker training job state changes, to the training service's queue",
                {"source": [sagemaker_events.EVENTBRIDGE_SOURCE],
                 "detail-type": [sagemaker_events.EVENTBRIDGE_DETAIL_TYPE]},
                TRAINING_QUEUE,
            ),
        ),
        replica_subscriptions=(
            ReplicaSubscription(AUTH_TOPIC, "gateway", GATEWAY_REPLICA_QUEUE_PREFIX, GATEWAY_AUTH_EVENTS),
            ReplicaSubscription(FILES_TOPIC, "gateway", GATEWAY_LIVE_FILES_QUEUE_PREFIX, GATEWAY_FILE_EVENTS),
            ReplicaSubscription(TRAINING_TOPIC, "gateway", GATEWAY_LIVE_TRAINING_QUEUE_PREFIX,
                                GATEWAY_TRAINING_EVENTS),
            ReplicaSubscription(INFERENCE_TOPIC, "gateway", GATEWAY_LIVE_INFERENCE_QUEUE_PREFIX,
                                GATEWAY_INFERENCE_EVENTS),
        ),
    )
