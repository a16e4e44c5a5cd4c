"""The part of the platform a benchmark request crosses: the embedded AWS, auth, training and the gateway.

The full `Cluster` also runs the SageMaker emulator, the files service and two SQS workers; none of them is on
the path of `GET /v1/fine_tuning/jobs`, and on a small machine their polling would only add noise.

With `dynalite` set, it also starts two dynalites, `dynalite-small` and `dynalite-large`, each with its own
training process (`training-dynalite-small`, `training-dynalite-large`), so that the small table and the large
one exist at once and their samples can be taken in turn. Those training processes get their DynamoDB from
`AWS_ENDPOINT_URL_DYNAMODB`, which botocore prefers to `AWS_ENDPOINT_URL` for that service; their SNS, SQS
and STS stay on moto. Auth and the gateway stay on moto: auth's register is a TransactWriteItems, which
dynalite 4 does not implement, and the gateway uses no DynamoDB.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
from botocore.config import Config

from bench.dynalite import Dynalite
from deploy.local import provision
from deploy.local.cluster import Cluster, Process, free_port, port_in_use
from shared.contracts import resources

DYNALITES = ("dynalite-small", "dynalite-large")


def _free_ports() -> dict[str, int]:
    return {name: free_port() for name in DYNALITES}


@dataclass
class RequestPathCluster(Cluster):
    dynalite: Dynalite | None = None
    dynalite_ports: dict[str, int] = field(default_factory=_free_ports)  # by dynalite
    training_dynalite_ports: dict[str, int] = field(default_factory=_free_ports)  # by the dynalite it uses
    notes: list[str] = field(default_factory=list)  # what the bench should say about how it was set up

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        py, p = sys.executable, self.ports
        first = [self.spawn_moto()]
        for name in self.dynalites:
            assert self.dynalite is not None
            first.append(self._spawn(name, self.dynalite.argv(self.dynalite_ports[name]),
                                     f"{self.dynamodb_url(name)}/"))
        self._wait_healthy(first)
        self.provision()
        for name in self.dynalites:
            self.provision_dynalite(name)
        services = [
            self._spawn("auth", [py, "-m", "services.auth.app"], f"http://127.0.0.1:{p.auth}/healthz",
                        p.auth),
            self._spawn("training", [py, "-m", "services.training.app"],
                        f"http://127.0.0.1:{p.training}/healthz", p.training),
            self._spawn("gateway", [py, "-m", "services.gateway.app"], f"http://127.0.0.1:{p.gateway}/healthz",
                        p.gateway),
        ]
        for name in self.dynalites:
            services.append(self._spawn_with({"AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_url(name)},
                                             f"training-{name}", [py, "-m", "services.training.app"],
                                             f"{self.training_urls[name]}/healthz",
                                             self.training_dynalite_ports[name]))
        self._wait_healthy(services)

    def _spawn_with(self, env: dict[str, str], name: str, argv: list[str], health_url: str, port: int) -> Process:
        saved = self.extra_env
        self.extra_env = {**saved, **env}
        try:
            return self._spawn(name, argv, health_url, port)
        finally:
            self.extra_env = saved

    @property
    def dynalites(self) -> tuple[str, ...]:
        return DYNALITES if self.dynalite else ()

    def check_ports(self) -> None:
        super().check_ports()
        ports = [port for name in self.dynalites
                 for port in (self.dynalite_ports[name], self.training_dynalite_ports[name])]
        busy = [str(port) for port in ports if port_in_use(port)]
        if busy:
            raise RuntimeError(f"ports already in use: {', '.join(busy)}")

    def provision_dynalite(self, name: str) -> None:
        """Training's tables, into one dynalite. dynalite 4 has no UpdateTimeToLive, so tables with a TTL (the
        inbox, which the bench never writes) are created without one rather than failing the whole run."""
        db = self.dynamodb_client(name)
        for table in resources.describe().tables:
            if table.owner != "training":
                continue
            if table.ttl_attribute:
                note = (f"dynalite: {table.name} created without its TTL on {table.ttl_attribute} (dynalite has "
                        "no UpdateTimeToLive; the bench never writes that table)")
                if note not in self.notes:
                    self.notes.append(note)
                table = replace(table, ttl_attribute=None)
            provision.ensure_table(db, table)

    @property
    def training_url(self) -> str:
        return self.training_urls["moto"]

    @property
    def training_urls(self) -> dict[str, str]:
        """Training's URL by the DynamoDB it stands on: "moto", and each of `dynalites`."""
        return {"moto": f"http://127.0.0.1:{self.ports.training}",
                **{name: f"http://127.0.0.1:{self.training_dynalite_ports[name]}" for name in self.dynalites}}

    def dynamodb_url(self, name: str) -> str:
        return self.aws_url if name == "moto" else f"http://127.0.0.1:{self.dynalite_ports[name]}"

    def dynamodb_client(self, name: str, pool: int = 10) -> Any:
        env = self.env()
        return boto3.client("dynamodb", endpoint_url=self.dynamodb_url(name),
                            region_name=env["AWS_DEFAULT_REGION"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            config=Config(max_pool_connections=pool, read_timeout=300,
                                          retries={"mode": "standard", "max_attempts": 4}))
