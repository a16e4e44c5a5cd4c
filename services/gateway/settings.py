from __future__ import annotations

from pydantic import Field

from shared.body_limit import chat_routes, upload_routes
from shared.contracts import resources
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    auth_url: str = "http://127.0.0.1:5001"
    files_url: str = "http://127.0.0.1:5002"
    training_url: str = "http://127.0.0.1:5003"
    inference_url: str = "http://127.0.0.1:5004"
    upstream_connect_timeout_s: float = 3.0
    # Uploads and downloads stream through; a read may wait on a slow client or a big object.
    upstream_read_timeout_s: float = 300.0
    max_upstream_connections: int = 200

    # Revocations: each replica hears auth's events on a queue of its own, and at start asks auth for the
    # sessions revoked within the lifetime of an access token (the same ACCESS_TOKEN_TTL_S auth signs with).
    auth_events_topic: str = Field(resources.AUTH_TOPIC, alias="AUTH_EVENTS_TOPIC")
    replica_queue_prefix: str = Field(resources.GATEWAY_REPLICA_QUEUE_PREFIX, alias="GATEWAY_REPLICA_QUEUE_PREFIX")
    replica_poll_s: int = Field(2, ge=1, le=20)
    access_token_ttl_s: int = Field(15 * 60, ge=60, le=24 * 3600)
    # How long the start waits for the catch-up (auth may still be starting) before serving; the catch-up
    # goes on in the background for up to `revocation_catch_up_give_up_s`.
    revocation_catch_up_wait_s: float = 10.0
    revocation_catch_up_give_up_s: float = 300.0

    # Live updates (GET /api/events): each replica's own queues on files', training's and inference's events.
    files_events_topic: str = Field(resources.FILES_TOPIC, alias="FILES_EVENTS_TOPIC")
    training_events_topic: str = Field(resources.TRAINING_TOPIC, alias="TRAINING_EVENTS_TOPIC")
    live_files_queue_prefix: str = Field(resources.GATEWAY_LIVE_FILES_QUEUE_PREFIX,
                                         alias="GATEWAY_LIVE_FILES_QUEUE_PREFIX")
    live_training_queue_prefix: str = Field(resources.GATEWAY_LIVE_TRAINING_QUEUE_PREFIX,
                                            alias="GATEWAY_LIVE_TRAINING_QUEUE_PREFIX")
    inference_events_topic: str = Field(resources.INFERENCE_TOPIC, alias="INFERENCE_EVENTS_TOPIC")
    live_inference_queue_prefix: str = Field(resources.GATEWAY_LIVE_INFERENCE_QUEUE_PREFIX,
                                             alias="GATEWAY_LIVE_INFERENCE_QUEUE_PREFIX")
    live_poll_s: int = Field(1, ge=1, le=20)
    # At a stop, how long requests in flight (uploads, live streams) may take before they are closed.
    shutdown_grace_s: int = Field(8, ge=1, alias="GATEWAY_SHUTDOWN_GRACE_S")
    # Where the browser PUTs direct-upload parts (presigned S3 URLs): allowed by the page's CSP connect-src.
    # Empty: the S3 endpoint the services use (AWS_ENDPOINT_URL), else https://<bucket>.s3.<region>.amazonaws.com.
    upload_origin: str = Field("", alias="UPLOAD_ORIGIN")
    bucket: str = Field(resources.BUCKET, alias="S3_BUCKET_NAME")

    # Request bodies (MAX_REQUEST_BODY_BYTES for most routes): the routes that take more, with the services'
    # own variables, so that the gateway never refuses what the service behind it would take.
    max_file_bytes: int = Field(512 * 1024**2, ge=1, alias="MAX_FILE_BYTES")  # files' upload limit
    max_chat_request_bytes: int = Field(4 * 1024**2, ge=1024, alias="MAX_CHAT_REQUEST_BYTES")

    # API keys: a key's exchanged access token is reused until shortly before it expires and for at most
    # `max_age`, so a program's requests do not each cost a call to auth.
    api_key_cache_max_age_s: float = Field(60.0, gt=0)
    api_key_cache_expiry_margin_s: float = Field(30.0, ge=0)
    api_key_cache_size: int = Field(10_000, ge=1)
    # A key auth refused is refused again without asking for this long (a client retrying a bad key).
    api_key_negative_ttl_s: float = Field(5.0, ge=0)
    auth_internal_timeout_s: float = 5.0

    model_config = ServiceSettings.model_config | {"populate_by_name": True}

    def route_body_limits(self) -> dict[tuple[str, str], int]:
        # The same routes as files' and inference's own, with the same settings.
        return {**upload_routes(self.max_file_bytes), **chat_routes(self.max_chat_request_bytes)}
