"""`python -m bench.auth [--quick]`: what signing in costs, as ratios against baselines measured in the same run.

1. gateway_token_verification_rps: requests per second of `GET /v1/fine_tuning/jobs` with an access token
   (the gateway verifies it: signature, claims, revocation set) against `GET /auth/providers`, a public
   route, through the same gateway. Both are proxied to the same do-nothing upstream (bench/stub_upstream.py),
   so the only difference is the verification. Aim: >= 0.8 (verification costs at most a fifth).
2. login_vs_public_latency: the median latency of `POST /auth/login` at BCRYPT_ROUNDS=12 (the production
   cost) against the public route's, one request at a time. No aim: it shows what bcrypt costs a sign-in
   (about a quarter of a second of CPU on purpose), and the absolute login figure is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
import uuid
from dataclasses import dataclass

import httpx

from bench import load, report
from bench.stats import Aim, Result, median, ratio
from deploy.local.cluster import Cluster, Ports, free_port

RESULTS = report.RESULTS


@dataclass
class AuthPathCluster(Cluster):
    """moto, auth at 12 bcrypt rounds, the gateway, and a stub upstream standing in for every service the
    gateway proxies to, auth's routes included (its JWKS still comes from the real auth)."""

    stub_port: int = 0

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        py, p = sys.executable, self.ports
        self.stub_port = self.stub_port or free_port()
        first = [self.spawn_moto(),
                 self._spawn("stub-upstream", [py, "-m", "bench.stub_upstream", str(self.stub_port)],
                             f"http://127.0.0.1:{self.stub_port}/")]
        self._wait_healthy(first)
        self.provision()
        stub = f"http://127.0.0.1:{self.stub_port}"
        # Limits out of the way: the bench signs in far more often than a person would.
        self.extra_env.update(BCRYPT_ROUNDS="12", LOGIN_LIMIT_PER_IP="[1000000, 60]",
                              LOGIN_FAILURES_PER_ACCOUNT="[1000000, 60]", REGISTER_LIMIT_PER_IP="[1000000, 60]")
        auth = self._spawn("auth", [py, "-m", "services.auth.app"], f"http://127.0.0.1:{p.auth}/healthz", p.auth)
        self._wait_healthy([auth])
        self.extra_env.update(AUTH_URL=stub, FILES_URL=stub, TRAINING_URL=stub)
        gateway = self._spawn("gateway", [py, "-m", "services.gateway.app"],
                              f"http://127.0.0.1:{p.gateway}/healthz", p.gateway)
        self._wait_healthy([gateway])

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.auth}"


def run(cluster: AuthPathCluster, quick: bool) -> list[Result]:
    email, password = f"bench-{uuid.uuid4().hex[:12]}@example.com", uuid.uuid4().hex
    load.check(httpx.post(f"{cluster.auth_url}/auth/register", json={"email": email, "password": password},
                          timeout=30), expected=201)
    token = load.check(httpx.post(f"{cluster.auth_url}/auth/login", json={"email": email, "password": password},
                                  timeout=30)).json()["access_token"]
    gateway = cluster.gateway_url
    urls = {"verified": f"{gateway}/v1/fine_tuning/jobs", "public": f"{gateway}/auth/providers"}
    rounds, seconds = (3, 1.5) if quick else (5, 3.0)
    rps = asyncio.run(load.compare_rps(urls, {"Authorization": f"Bearer {token}"}, concurrency=8,
                                       seconds=seconds, rounds=rounds, warmup_s=1.0))
    per_round = [ratio(v, p) for v, p in zip(rps["verified"], rps["public"], strict=True)]
    verification = Result(
        "gateway_token_verification_rps", median(per_round),
        f"verified {median(rps['verified']):.0f} rps / public {median(rps['public']):.0f} rps through the same "
        f"gateway to a stub upstream, 8 clients, {rounds} rounds", Aim(">=", 0.8),
        figures={"verified_rps": rps["verified"], "public_rps": rps["public"]})

    with httpx.Client(timeout=30) as client:
        def sign_in() -> None:
            load.check(client.post(f"{cluster.auth_url}/auth/login", json={"email": email, "password": password}))

        def public() -> None:
            load.check(client.get(f"{gateway}/auth/providers"))

        samples = load.interleaved_latencies({"login": sign_in, "public": public}, samples=7 if quick else 21,
                                             warmup=2)
    login_ms, public_ms = median(samples["login"]) * 1000, median(samples["public"]) * 1000
    login = Result("login_vs_public_latency", ratio(login_ms, public_ms),
                   f"POST /auth/login at 12 bcrypt rounds {login_ms:.0f} ms / a public route {public_ms:.1f} ms, "
                   f"median of {len(samples['login'])}, one at a time", None,
                   note=f"login at 12 rounds: {login_ms:.0f} ms median, about {1000 / login_ms:.1f} logins/s on one "
                        "core; bcrypt's cost is deliberate",
                   figures={"login_ms": login_ms, "public_ms": public_ms})
    return [verification, login]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter rounds, fewer samples")
    args = parser.parse_args(argv)
    data_dir = RESULTS / "auth-cluster"
    shutil.rmtree(data_dir, ignore_errors=True)
    cluster = AuthPathCluster(data_dir=data_dir, ports=Ports.free())
    started = time.monotonic()
    try:
        print("starting moto, auth (12 bcrypt rounds), a stub upstream and the gateway ...", file=sys.stderr)
        cluster.start()
        results = run(cluster, args.quick)
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()
    report.publish("auth", results, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
