"""inference's HTTP entry: OpenAI's models and chat completions APIs, and the platform's deployments,
evaluations and serving catalog."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Response
from fastapi.responses import StreamingResponse

from services.inference import chat, deployments, deps, evaluations, model_lifecycle, served_models
from services.inference.bootstrap import build_deps
from services.inference.models import ChatRequest, CreateDeployment, CreateEvaluation
from services.inference.settings import Settings
from shared.tokens import Caller
from shared.web import app_deps, create_service_app

Deps = Annotated[deps.Deps, Depends(app_deps)]


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app("inference", settings, build_deps)
    invoker = chat.Invoker(settings.max_concurrent_invocations)

    @app.get("/v1/models")
    async def list_models(caller: Caller, d: Deps) -> dict[str, Any]:
        return {"object": "list", "data": await served_models.list_models(caller.user_id, d)}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await served_models.retrieve_model(model_id, caller.user_id, d)

    @app.delete("/v1/models/{model_id:path}")
    async def delete_model(model_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await model_lifecycle.delete_model(model_id, caller.user_id, d)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest, caller: Caller, d: Deps) -> dict[str, Any] | StreamingResponse:
        if body.stream:
            events = await chat.chat_stream(body, caller.user_id, d, invoker)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await chat.chat(body, caller.user_id, d, invoker)

    @app.get("/api/serving/catalog")
    async def serving_catalog(_: Caller, d: Deps) -> dict[str, Any]:
        return d.catalog.public(d.config.deploy_on_demand)

    @app.post("/api/deployments", status_code=201)
    async def create_deployment(body: CreateDeployment, caller: Caller, d: Deps, response: Response) -> dict[str, Any]:
        deployment, created = await deployments.create_deployment(body, caller.user_id, d)
        if not created:
            response.status_code = 200
        return deployment.public()

    @app.get("/api/deployments")
    async def list_deployments(caller: Caller, d: Deps,
                               include_deleted: bool = False) -> dict[str, Any]:
        listed = [x.public() for x in await d.deployments.for_user(caller.user_id)
                  if include_deleted or x.status != "deleted"]
        return {"object": "list", "data": listed}

    @app.get("/api/deployments/{deployment_id}")
    async def get_deployment(deployment_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return (await deployments.get_deployment(deployment_id, caller.user_id, d)).public()

    @app.delete("/api/deployments/{deployment_id}")
    async def delete_deployment(deployment_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return (await deployments.delete_deployment(deployment_id, caller.user_id, d)).public()

    @app.post("/api/evaluations", status_code=201)
    async def create_evaluation(body: CreateEvaluation, caller: Caller, d: Deps) -> dict[str, Any]:
        return (await evaluations.create_evaluation(body, caller.user_id, d)).public()

    @app.get("/api/evaluations")
    async def list_evaluations(caller: Caller, d: Deps,
                               job_id: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
        listed = [e.public() for e in await d.evaluations.for_user(caller.user_id)
                  if job_id is None or e.job_id == job_id]
        return {"object": "list", "data": listed}

    @app.get("/api/evaluations/{evaluation_id}")
    async def get_evaluation(evaluation_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        evaluation = await evaluations.get_evaluation(evaluation_id, caller.user_id, d)
        return evaluation.public(await evaluations.results_of(evaluation, d))

    @app.delete("/api/evaluations/{evaluation_id}")
    async def delete_evaluation(evaluation_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await evaluations.delete_evaluation(evaluation_id, caller.user_id, d)

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5004), log_config=None)


if __name__ == "__main__":
    main()
