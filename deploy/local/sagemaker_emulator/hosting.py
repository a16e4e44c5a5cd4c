"""Hosting: endpoints and inference components brought up and down in the background, as SageMaker does it
(every Create and Delete answers at once; Describe shows Creating -> InService or Failed, and Deleting), and
where an invocation goes.

- An endpoint is InService at once: its variants only describe instances, and this emulator hosts inference
  components only (a variant naming a ModelName fails the endpoint, saying so).
- A base inference component (Specification.ModelName) gets its model's files (see model_artifacts.py) and a
  generation server process; InService once the server answers /ping, Failed with the tail of its output if
  it exits first (or later).
- An adapter inference component (Specification.BaseInferenceComponentName + Container.ArtifactUrl) waits for
  its base, unpacks the adapter and has the base's server load it; deleting it unloads it.
- Deleting an endpoint deletes its inference components (SageMaker's console does the same; its API may want
  them deleted first); deleting a base component deletes its adapters.
- Records survive a restart (endpoint_store.py): what was Creating or InService is brought up again (a
  server restarts from the model files already on disk, adapters are reloaded), what was Deleting is deleted.
  Until a server is back, invocations are answered 503 ServiceUnavailable.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .endpoint_records import (
    CREATING,
    DELETING,
    FAILED,
    IN_SERVICE,
    EndpointRecord,
    InferenceComponentRecord,
    ModelRecord,
)
from .endpoint_store import EndpointStore
from .model_artifacts import ArtifactError, fetch_adapter, fetch_model, model_source
from .model_servers import ModelServer, ServerFailed, start_server
from .settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

HOSTING_DIR = ".hosting"
COMPONENT_LOG_GROUP = "/aws/sagemaker/InferenceComponents/{}"
MAX_FAILURE_REASON = 1024
POLL_S = 0.2
T = TypeVar("T")
Component = InferenceComponentRecord
ALIVE = (CREATING, IN_SERVICE)


class ProvisionError(Exception):
    """A component cannot be brought up; it ends Failed with this reason."""


class NoTarget(Exception):
    """An invocation with nowhere to go: the runtime error type (ValidationError, ServiceUnavailable)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message


@dataclass(frozen=True)
class Target:
    url: str  # the generation server
    adapter: str | None  # the adapter component to run (None: the base model)
    variant: str
    log_stream_arn: str


class Hosting:
    def __init__(self, settings: Settings, store: EndpointStore, s3: Any, logs: Any) -> None:
        self.settings, self.store, self._s3, self._logs = settings, store, s3, logs
        self.directory = store.directory
        self._work = ThreadPoolExecutor(max_workers=settings.hosting_workers, thread_name_prefix="hosting")
        # Servers are started from this one thread, which lives as long as the emulator: PR_SET_PDEATHSIG
        # signals a child when the thread that forked it ends.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawn")
        self._servers: dict[str, ModelServer] = {}  # base component -> its server
        self._adapters: set[str] = set()  # adapter components loaded into their base's server
        self._lock = threading.Lock()
        self._closing = threading.Event()

    # --- what the API calls -------------------------------------------------------------------------

    def bring_up_endpoint(self, name: str) -> None:
        self._submit(self._endpoint_up, name)

    def bring_up_component(self, name: str) -> None:
        self._submit(self._component_up, name)

    def delete_endpoint(self, name: str) -> None:
        self.store.update(EndpointRecord, name, status=DELETING)
        for component in self._components(lambda c: c.endpoint_name == name):
            self.store.update(Component, component.name, status=DELETING)
        self._submit(self._endpoint_down, name)

    def delete_component(self, name: str) -> None:
        doomed = [c.name for c in self._components(lambda c: c.base_name == name)] + [name]  # adapters first
        for component in doomed:
            self.store.update(Component, component, status=DELETING)
        self._submit(self._components_down, doomed)

    def restore(self) -> None:
        """After a restart: finish what was under way, bring back what was up (bases before adapters)."""
        for endpoint in self.store.all(EndpointRecord):
            if endpoint.status == CREATING:
                self.bring_up_endpoint(endpoint.name)
            elif endpoint.status == DELETING:
                self._submit(self._endpoint_down, endpoint.name)
        for component in sorted(self.store.all(Component), key=lambda c: c.base_name is not None):
            if component.status in ALIVE:
                self.bring_up_component(component.name)
            elif component.status == DELETING:
                self._submit(self._components_down, [component.name])

    def target(self, endpoint_name: str, component_name: str | None) -> Target:
        account = self.settings.account_id
        endpoint = self.store.find(EndpointRecord, endpoint_name)
        if endpoint is None:
            raise NoTarget("ValidationError", f"Endpoint {endpoint_name} of account {account} not found.")
        if endpoint.status != IN_SERVICE:
            raise NoTarget("ValidationError", f"Endpoint {endpoint_name} of account {account} is not in service "
                                              f"(status {endpoint.status}).")
        if not component_name:
            raise NoTarget("ValidationError", "Inference Component Name header is required for endpoints to which "
                                              "you plan to deploy inference components. Please include Inference "
                                              "Component Name header or consider using SageMaker models.")
        component = self.store.find(Component, component_name)
        if component is None or component.endpoint_name != endpoint_name:
            raise NoTarget("ValidationError", f"Inference Component {component_name} of account {account} not "
                                              f"found on endpoint {endpoint_name}.")
        if component.status != IN_SERVICE:
            raise NoTarget("ValidationError", f"Inference Component {component_name} is not in service (status "
                                              f"{component.status}).")
        base = component.base_name or component.name
        with self._lock:
            server = self._servers.get(base)
            loaded = component.base_name is None or component.name in self._adapters
        if server is None or not server.ready.is_set() or not loaded:
            raise NoTarget("ServiceUnavailable", f"The model server of inference component {base} is (re)starting "
                                                 "after an emulator restart; retry shortly.")
        stream_arn = (f"arn:aws:logs:{self.settings.aws_default_region}:{account}:log-group:{server.log_group}"
                      f":log-stream:{server.log_stream}")
        return Target(server.url, component.name if component.base_name else None, component.variant_name,
                      stream_arn)

    def shutdown(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after the grace) and the background work."""
        self._closing.set()
        self._work.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        stoppers = [threading.Thread(target=s.stop, args=(self.settings.shutdown_grace_s,)) for s in servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=self.settings.shutdown_grace_s + 10)
        self._spawner.shutdown(wait=True)

    # --- background work ----------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("hosting work failed", extra={"work": fn.__name__, "args": repr(args)})

        if not self._closing.is_set():
            self._work.submit(run)

    def _endpoint_up(self, name: str) -> None:
        endpoint = self.store.find(EndpointRecord, name)
        if endpoint is None or endpoint.status != CREATING:
            return
        with_model = [v["VariantName"] for v in endpoint.variants if v.get("ModelName")]
        if with_model:
            self._fail(EndpointRecord, name, (
                f"This emulator hosts inference components only, and variant {with_model[0]} names a ModelName. "
                "Create the endpoint configuration without ModelName and deploy the model with "
                "CreateInferenceComponent."))
            return
        self.store.update(EndpointRecord, name, when=lambda r: r.status == CREATING, status=IN_SERVICE)

    def _component_up(self, name: str) -> None:
        component = self.store.find(Component, name)
        if component is None or component.status not in ALIVE:
            return
        try:
            self._await(lambda: self._endpoint_ready(component.endpoint_name), self.settings.serving_startup_s)
            if component.base_name:
                self._adapter_up(component)
            else:
                self._base_up(component)
        except (ArtifactError, ServerFailed, ProvisionError) as exc:
            self._fail(Component, name, str(exc))
            return
        except Exception as exc:
            log.exception("inference component failed", extra={"component": name})
            self._fail(Component, name, f"InternalServerError: {exc}")
            return
        self.store.update(Component, name, when=lambda r: r.status == CREATING, status=IN_SERVICE)

    def _base_up(self, component: Component) -> None:
        model_name = component.specification["ModelName"]
        model = self.store.find(ModelRecord, model_name)
        if model is None:
            raise ProvisionError(f'Could not find model "{self.store.arn(ModelRecord, model_name)}".')
        source = model_source(model.container)
        location = fetch_model(self._s3, source, self.directory / "models" / component.name)
        model_args = ["--hub-id", location] if source.kind == "hub_id" else ["--model-dir", location]
        env = {**os.environ, **(model.container.get("Environment") or {}),
               **((component.specification.get("Container") or {}).get("Environment") or {})}
        if self.settings.serving_torch_threads:
            env["GENERATION_SERVER_TORCH_THREADS"] = str(self.settings.serving_torch_threads)
        command = [*self.settings.serving_command, *model_args,
                   "--max-waiting", str(self.settings.serving_max_waiting)]
        server = start_server(component.name, command, env, REPO_ROOT, self.directory / "logs", self._logs,
                              COMPONENT_LOG_GROUP.format(component.name), self.settings.log_flush_s,
                              self._spawn, self._server_exited)
        with self._lock:
            previous = self._servers.pop(component.name, None)
            self._servers[component.name] = server
        if previous is not None:
            previous.stop(self.settings.stop_grace_s)
        try:
            server.wait_ready(self.settings.serving_startup_s,
                              lambda: not self._closing.is_set() and self._alive(component.name))
        except ServerFailed:
            with self._lock:
                if self._servers.get(component.name) is server:
                    del self._servers[component.name]
            server.stop(self.settings.stop_grace_s)
            raise

    def _adapter_up(self, component: Component) -> None:
        base = component.base_name
        assert base is not None and component.artifact_url is not None
        server = self._await(lambda: self._ready_server(base), self.settings.serving_startup_s)
        path = fetch_adapter(self._s3, component.artifact_url, self.directory / "adapters" / component.name)
        server.load_adapter(component.name, path)
        with self._lock:
            self._adapters.add(component.name)
        if not self._alive(component.name):  # deleted while it loaded: the deletion may have run already
            self._unload(component.name, base)

    def _endpoint_down(self, name: str) -> None:
        components = self._components(lambda c: c.endpoint_name == name)
        self._components_down([c.name for c in sorted(components, key=lambda c: c.base_name is None)])
        self.store.remove(EndpointRecord, name)

    def _components_down(self, names: list[str]) -> None:
        for name in names:
            component = self.store.find(Component, name)
            if component is None:
                continue
            try:
                if component.base_name:
                    self._unload(name, component.base_name)
                    shutil.rmtree(self.directory / "adapters" / name, ignore_errors=True)
                else:
                    with self._lock:
                        server = self._servers.pop(name, None)
                    if server is not None:
                        server.stop(self.settings.stop_grace_s)
                    shutil.rmtree(self.directory / "models" / name, ignore_errors=True)
            finally:
                self.store.remove(Component, name)

    # --- helpers -------------------------------------------------------------------------------------

    def _spawn(self, popen: Callable[[], T]) -> T:
        return self._spawner.submit(popen).result()

    def _server_exited(self, server: ModelServer, code: int) -> None:
        with self._lock:
            if self._servers.get(server.name) is not server:
                return
            del self._servers[server.name]
        log.warning("model server exited", extra={"server": server.name, "code": code})
        self._fail(Component, server.name, f"The model server exited with code {code}. Its last output:\n"
                                           f"{server.tail()}")

    def _unload(self, adapter: str, base: str) -> None:
        with self._lock:
            server = self._servers.get(base)
            self._adapters.discard(adapter)
        if server is not None and server.ready.is_set():
            try:
                server.unload_adapter(adapter)
            except ServerFailed as exc:  # never loaded (404), or the server is going away
                log.info("adapter unload skipped", extra={"adapter": adapter, "reason": str(exc)})

    def _components(self, keep: Callable[[Component], bool]) -> list[Component]:
        return [c for c in self.store.all(Component) if keep(c)]

    def _alive(self, name: str) -> bool:
        component = self.store.find(Component, name)
        return component is not None and component.status in ALIVE

    def _endpoint_ready(self, name: str) -> bool | None:
        endpoint = self.store.find(EndpointRecord, name)
        if endpoint is None or endpoint.status in (FAILED, DELETING):
            raise ProvisionError(f"The endpoint {name} is {endpoint.status if endpoint else 'gone'}.")
        return True if endpoint.status == IN_SERVICE else None

    def _ready_server(self, base: str) -> ModelServer | None:
        component = self.store.find(Component, base)
        if component is None or component.status not in ALIVE:
            raise ProvisionError(f"The base inference component {base} is "
                                 f"{component.status if component else 'gone'}.")
        with self._lock:
            server = self._servers.get(base)
        ready = component.status == IN_SERVICE and server is not None and server.ready.is_set()
        return server if ready else None

    def _await(self, probe: Callable[[], T | None], timeout_s: float) -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            value = probe()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise ProvisionError(f"Timed out after {timeout_s:g} s waiting for the endpoint or base component.")
            if self._closing.wait(POLL_S):
                raise ProvisionError("The emulator is shutting down.")

    def _fail(self, cls: type[EndpointRecord] | type[Component], name: str, reason: str) -> None:
        """Failed with the reason, unless the record is being deleted or the emulator is stopping (a restart
        picks the work up again)."""
        if self._closing.is_set():
            return
        self.store.update(cls, name, when=lambda r: r.status in ALIVE, status=FAILED,
                          failure_reason=_clip(reason))


def _clip(reason: str) -> str:
    """FailureReason holds 1024 characters: the first line (what happened) and the end (a server's last words)."""
    if len(reason) <= MAX_FAILURE_REASON:
        return reason
    first = reason.split("\n", 1)[0][:300]
    return f"{first}\n...\n{reason[-(MAX_FAILURE_REASON - len(first) - 5):]}"
