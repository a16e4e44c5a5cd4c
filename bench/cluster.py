"""The part of the platform a benchmark request crosses: the embedded AWS, auth, training and the gateway.

The full `Cluster` also runs the SageMaker emulator, the files service and two SQS workers; none of them is on
the path of `GET /v1/fine_tuning/jobs`, and on a small machine their polling would only add noise.
"""

from __future__ import annotations

import sys

from deploy.local.cluster import Cluster


class RequestPathCluster(Cluster):
    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        py, p = sys.executable, self.ports
        moto = self._spawn("moto", [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(p.moto)],
                           f"http://127.0.0.1:{p.moto}/moto-api/")
        self._wait_healthy([moto])
        self.provision()
        self._wait_healthy([
            self._spawn("auth", [py, "-m", "services.auth.app"], f"http://127.0.0.1:{p.auth}/healthz",
                        p.auth),
            self._spawn("training", [py, "-m", "services.training.app"],
                        f"http://127.0.0.1:{p.training}/healthz", p.training),
            self._spawn("gateway", [py, "-m", "services.gateway.app"], f"http://127.0.0.1:{p.gateway}/healthz",
                        p.gateway),
        ])

    @property
    def training_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.training}"
