"""training's HTTP entry: the OpenAI-compatible fine-tuning jobs API and the catalog."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request

from services.training import artifacts, commands, deps, progress
from services.training.bootstrap import build_deps
from services.training.fit import public_catalog
from services.training.models import DEFAULT_DPO_BETA, BudgetBody, CreateJob, EstimateRequest
from services.training.settings import Settings
from shared.tokens import Caller, bearer_token
from shared.web import app_deps, create_service_app

Deps = Annotated[deps.Deps, Depends(app_deps)]
# The training methods a job may ask for (`method.type`), for the dashboard's train page.
METHODS = [{"id": "supervised", "label": "Supervised (SFT)", "example_types": ["chat", "text"]},
           {"id": "dpo", "label": "Preference (DPO)", "example_types": ["preference"],
            "beta": {"default": DEFAULT_DPO_BETA, "min_exclusive": 0, "max": 2}}]


def build_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app("training", settings or Settings(), build_deps)

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(body: CreateJob, caller: Caller, d: Deps, request: Request) -> dict[str, Any]:
        if body.dry_run:  # the estimate, and nothing created
            return await commands.dry_run_job(body, caller.user_id, d)
        return (await commands.create_job(body, caller.user_id, d, bearer_token(request))).openai()

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(caller: Caller, d: Deps, after: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
        jobs, has_more = await commands.list_jobs(caller.user_id, d, limit, after)
        return {"object": "list", "data": [j.openai() for j in jobs], "has_more": has_more}

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def retrieve_job(job_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return (await commands.get_job(job_id, caller.user_id, d)).openai()

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def list_events(job_id: str, caller: Caller, d: Deps, after: str | None = None,
                          limit: Annotated[int, Query(ge=1, le=100)] = 20,
                          event_type: Annotated[Literal["message", "metrics"] | None, Query(alias="type")] = None,
                          ) -> dict[str, Any]:
        """Beyond OpenAI: `type=message` or `type=metrics` lists only that kind (the dashboard's timeline)."""
        events, has_more = await commands.list_events(job_id, caller.user_id, d, limit, after, event_type)
        return {"object": "list", "data": events, "has_more": has_more}

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return (await commands.cancel_job(job_id, caller.user_id, d)).openai()

    @app.post("/v1/fine_tuning/jobs/{job_id}/pause")
    async def pause_job(job_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        """Stop the running job with a checkpoint: `pausing`, then `paused` (OpenAI's jobs.pause)."""
        return (await commands.pause_job(job_id, caller.user_id, d)).openai()

    @app.post("/v1/fine_tuning/jobs/{job_id}/resume")
    async def resume_job(job_id: str, caller: Caller, d: Deps, body: BudgetBody | None = None) -> dict[str, Any]:
        """A paused job carries on from its checkpoint, as a new part under the same id (OpenAI's jobs.resume);
        beyond OpenAI, an optional new `max_cost_usd`."""
        return (await commands.resume_job(job_id, caller.user_id, d, body.max_cost_usd if body else None)).openai()

    @app.post("/api/jobs/{job_id}/retry")
    async def retry_job(job_id: str, caller: Caller, d: Deps, body: BudgetBody | None = None) -> dict[str, Any]:
        """A failed or cancelled job again, from its newest checkpoint (or the start, which `retry` says)."""
        return await commands.retry_job(job_id, caller.user_id, d, body.max_cost_usd if body else None)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def list_checkpoints(job_id: str, caller: Caller, d: Deps, after: str | None = None,
                               limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        job = await commands.get_job(job_id, caller.user_id, d)
        return await artifacts.list_checkpoints(job, d, limit, after)

    @app.get("/api/jobs/{job_id}/artifacts")
    async def job_artifacts(job_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await artifacts.artifact_links(await commands.get_job(job_id, caller.user_id, d), d)

    @app.get("/api/jobs/{job_id}/metrics")
    async def job_metrics(job_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await progress.metrics_history(await commands.get_job(job_id, caller.user_id, d), d)

    @app.get("/api/jobs/{job_id}/logs")
    async def job_logs(job_id: str, caller: Caller, d: Deps,
                       limit: Annotated[int, Query(ge=1, le=progress.MAX_LOG_LINES)] = 200) -> dict[str, Any]:
        job = await commands.get_job(job_id, caller.user_id, d)
        return await progress.log_tail(job, d.logs, d.log_group, limit)

    @app.post("/api/estimates")
    async def estimate(body: EstimateRequest, caller: Caller, d: Deps) -> dict[str, Any]:
        return await commands.estimate_job(body, caller.user_id, d)

    @app.get("/api/catalog")
    async def catalog(caller: Caller, d: Deps) -> dict[str, Any]:
        """The base models and instance types, and the caller's limits (`limits`: each limit, None when there is
        none, and where the caller stands: active jobs, this month's bill and reservations)."""
        # The catalog is a static file: its fit tables (~60 ms of memory-model searches) are made once.
        if getattr(app.state, "public_catalog", None) is None:
            app.state.public_catalog = public_catalog(d.catalog)
        body: dict[str, Any] = app.state.public_catalog
        return {**body, "methods": METHODS, "limits": await commands.user_limits(caller.user_id, d)}

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5003), log_config=None)


if __name__ == "__main__":
    main()
