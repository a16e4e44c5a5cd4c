"""`python -m bench.load [--quick] [--users N] [--seconds S]`: many users at once through the gateway of the
whole platform (the cluster `make up` runs, on free ports), each signed up, holding its live event stream open,
and for the run's length listing its jobs and files, uploading small fine-tune files, and creating one
fine-tuning job (1 epoch of the demo model) once its first file is processed.

Figures, printed and kept in bench/results/load-latest.json:
- per route: requests, errors, p50 and p95 latency (the stream's is the time to its response headers);
- the live streams: how many stayed up to the end, events received;
- jobs: created (201), then after the load, once every job is terminal or a deadline passes: lost (a 201 whose
  job is missing from its owner's list), duplicated (more jobs listed than created, or other than one SageMaker
  training job per job), and unfinished (not terminal by the deadline). All must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx

from bench import report
from deploy.local.cluster import Cluster, Ports
from deploy.local.demo_model import DEMO_MODEL_ID
from trainer_image.demo_model import make_demo_dataset

TERMINAL = {"succeeded", "failed", "cancelled"}
# Every user signs up from 127.0.0.1: lift auth's per-address limits (they have tests of their own).
LIMITS = {"REGISTER_LIMIT_PER_IP": "[100000,60]", "LOGIN_LIMIT_PER_IP": "[100000,60]"}


@dataclass
class Figures:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    created_jobs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # by user token
    stream_events: int = 0
    streams_up_at_end: int = 0

    async def timed(self, route: str, call: Any, expected: int = 200) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response: httpx.Response = await call
        except httpx.HTTPError as exc:
            self.errors[route].append(repr(exc)[:200])
            return None
        self.latencies[route].append(time.perf_counter() - started)
        if response.status_code != expected:
            self.errors[route].append(f"{response.status_code}: {response.text[:200]}")
            return None
        return response


def _training_file(seed: int) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in make_demo_dataset(20, seed=seed)).encode()


async def _sign_up(client: httpx.AsyncClient, figures: Figures) -> str | None:
    body = {"email": f"load-{uuid.uuid4().hex[:12]}@example.com", "password": uuid.uuid4().hex}
    response = await figures.timed("POST /auth/register", client.post("/auth/register", json=body), 201)
    return None if response is None else str(response.json()["access_token"])


async def _stream(client: httpx.AsyncClient, token: str, figures: Figures, until: float) -> None:
    """The live stream, held open to the end of the run; its events counted."""
    started = time.perf_counter()
    try:
        async with client.stream("GET", "/api/events", headers={"Authorization": f"Bearer {token}"},
                                 timeout=httpx.Timeout(30, read=None)) as response:
            figures.latencies["GET /api/events (headers)"].append(time.perf_counter() - started)
            if response.status_code != 200:
                figures.errors["GET /api/events (headers)"].append(str(response.status_code))
                return
            lines = response.aiter_lines()
            while time.monotonic() < until:
                try:
                    line = await asyncio.wait_for(anext(lines), timeout=until - time.monotonic())
                except (TimeoutError, StopAsyncIteration):
                    break
                figures.stream_events += line.startswith("event:")
            figures.streams_up_at_end += time.monotonic() >= until
    except httpx.HTTPError as exc:
        figures.errors["GET /api/events (headers)"].append(repr(exc)[:200])


async def _wait_processed(client: httpx.AsyncClient, headers: dict[str, str], file_id: str, figures: Figures,
                          deadline_s: float = 120) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        response = await figures.timed("GET /v1/files/{id}", client.get(f"/v1/files/{file_id}", headers=headers))
        if response is not None and response.json()["status"] in ("processed", "error"):
            return bool(response.json()["status"] == "processed")
        await asyncio.sleep(0.5)
    figures.errors["GET /v1/files/{id}"].append(f"{file_id} not processed in {deadline_s:g} s")
    return False


async def _user(client: httpx.AsyncClient, figures: Figures, until: float, rng: random.Random) -> None:
    token = await _sign_up(client, figures)
    if token is None:
        return
    headers = {"Authorization": f"Bearer {token}"}
    stream = asyncio.create_task(_stream(client, token, figures, until))
    job_at = time.monotonic() + rng.uniform(0, max(0.0, until - time.monotonic()) / 2)
    first_file: str | None = None
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(0.5, 1.5))  # a person's pace, more or less
        pick = rng.random()
        if first_file is None or pick < 0.15:
            upload = client.post("/v1/files", headers=headers, data={"purpose": "fine-tune"},
                                 files={"file": ("train.jsonl", _training_file(rng.randrange(10**6)))})
            response = await figures.timed("POST /v1/files", upload)
            if response is not None and first_file is None:
                file_id = response.json()["id"]
                first_file = file_id if await _wait_processed(client, headers, file_id, figures) else None
        elif first_file and time.monotonic() >= job_at and not figures.created_jobs.get(token):
            body = {"model": DEMO_MODEL_ID, "training_file": first_file, "hyperparameters": {"n_epochs": 1}}
            response = await figures.timed("POST /v1/fine_tuning/jobs",
                                           client.post("/v1/fine_tuning/jobs", headers=headers, json=body))
            if response is not None:
                figures.created_jobs[token].append(response.json()["id"])
        elif pick < 0.4:
            await figures.timed("GET /v1/files", client.get("/v1/files", headers=headers))
        else:
            await figures.timed("GET /v1/fine_tuning/jobs",
                                client.get("/v1/fine_tuning/jobs?limit=20", headers=headers))
    await stream


async def _settle(client: httpx.AsyncClient, figures: Figures, deadline_s: float) -> dict[str, str]:
    """Each created job's status once all are terminal or the deadline passes; jobs listed but never answered
    201 come back under "unexpected:<id>"."""
    deadline = time.monotonic() + deadline_s
    while True:
        statuses: dict[str, str] = {}
        for token, created in figures.created_jobs.items():
            listed = await client.get("/v1/fine_tuning/jobs?limit=100", headers={"Authorization": f"Bearer {token}"})
            by_id = {job["id"]: job["status"] for job in listed.json()["data"]} if listed.status_code == 200 else {}
            statuses.update({job_id: by_id.get(job_id, "missing") for job_id in created})
            statuses.update({f"unexpected:{job_id}": s for job_id, s in by_id.items() if job_id not in created})
        if all(s in TERMINAL for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(2)


def _sagemaker_launches(cluster: Cluster, job_ids: list[str]) -> dict[str, int]:
    env = cluster.env()
    sagemaker = boto3.client("sagemaker", endpoint_url=env["AWS_ENDPOINT_URL_SAGEMAKER"],
                             region_name=env["AWS_DEFAULT_REGION"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                             aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    names: list[str] = []
    for page in sagemaker.get_paginator("list_training_jobs").paginate(MaxResults=100):
        names += [job["TrainingJobName"] for job in page["TrainingJobSummaries"]]
    return {job_id: sum(job_id in name for name in names) for job_id in job_ids}


def _repeated_launches(cluster: Cluster) -> int:
    """CreateTrainingJob calls the emulator refused because the job's name was taken: a launch repeated (a
    message handled twice), which the name derived from the job id makes harmless; counted, not an error."""
    log = cluster.data_dir / "logs" / "sagemaker-emulator.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum('"CreateTrainingJob"' in line and "ResourceInUse" in line for line in text.splitlines())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(figures: Figures, statuses: dict[str, str], launches: dict[str, int], users: int,
            seconds: float) -> dict[str, Any]:
    created = [job_id for jobs in figures.created_jobs.values() for job_id in jobs]
    lost = [j for j in created if statuses.get(j, "missing") == "missing"]
    unfinished = [j for j in created if statuses.get(j, "missing") not in TERMINAL | {"missing"}]
    duplicated = [k for k in statuses if k.startswith("unexpected:")] + [j for j, n in launches.items() if n != 1]
    routes = {route: {"requests": len(figures.latencies[route]) + len(figures.errors[route]),
                      "errors": len(figures.errors[route]), "p50_ms": round(_percentile(lat, 0.5) * 1000, 1),
                      "p95_ms": round(_percentile(lat, 0.95) * 1000, 1), "first_errors": figures.errors[route][:3]}
              for route, lat in sorted({**figures.latencies, **{r: [] for r in figures.errors}}.items())}
    return {"users": users, "seconds": seconds, "routes": routes,
            "requests": sum(r["requests"] for r in routes.values()),
            "errors": sum(r["errors"] for r in routes.values()),
            "streams_up_at_end": figures.streams_up_at_end, "stream_events": figures.stream_events,
            "jobs_created": len(created), "jobs_succeeded": sum(statuses.get(j) == "succeeded" for j in created),
            "jobs_failed": sum(statuses.get(j) in ("failed", "cancelled") for j in created),
            "jobs_lost": len(lost), "jobs_duplicated": len(duplicated), "jobs_unfinished": len(unfinished),
            "lost": lost, "duplicated": duplicated, "unfinished": unfinished}


def print_summary(result: dict[str, Any]) -> None:
    print(f"bench.load: {result['users']} users for {result['seconds']:g} s through the gateway: "
          f"{result['requests']} requests, {result['errors']} errors (aim: 0)")
    for route, r in result["routes"].items():
        print(f"  {route:32} {r['requests']:6} requests  {r['errors']:4} errors  p50 {r['p50_ms']:7.1f} ms  "
              f"p95 {r['p95_ms']:7.1f} ms")
        for error in r["first_errors"]:
            print(f"      error: {error}")
    print(f"  live streams up at the end: {result['streams_up_at_end']} of {result['users']}, "
          f"{result['stream_events']} events received")
    verdict = "met" if result["jobs_lost"] == result["jobs_duplicated"] == result["jobs_unfinished"] == 0 else "NOT met"
    print(f"  jobs: {result['jobs_created']} created, {result['jobs_succeeded']} succeeded, {result['jobs_failed']} "
          f"failed, {result['jobs_unfinished']} still running at the deadline (--settle-s); lost "
          f"{result['jobs_lost']}, duplicated {result['jobs_duplicated']} (aim: 0 and 0, all ended): {verdict}")
    print(f"  SageMaker launches repeated and refused by name (harmless): {result['repeated_launch_attempts']}")


async def drive(cluster: Cluster, users: int, seconds: float, settle_s: float) -> dict[str, Any]:
    figures = Figures()
    limits = httpx.Limits(max_connections=users * 3, max_keepalive_connections=users * 3)
    async with httpx.AsyncClient(base_url=cluster.gateway_url, limits=limits, timeout=60) as client:
        until = time.monotonic() + seconds
        rngs = [random.Random(i) for i in range(users)]  # a load mix, the same each run
        await asyncio.gather(*(_user(client, figures, until, rng) for rng in rngs))
        print(f"... load done; waiting up to {settle_s:g} s for every job to end", file=sys.stderr, flush=True)
        statuses = await _settle(client, figures, settle_s)
    created = [job_id for jobs in figures.created_jobs.values() for job_id in jobs]
    result = summary(figures, statuses, _sagemaker_launches(cluster, created), users, seconds)
    result["repeated_launch_attempts"] = _repeated_launches(cluster)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 users for 30 s (a smoke run)")
    parser.add_argument("--users", type=int, help="concurrent users (default 50)")
    parser.add_argument("--seconds", type=float, help="the load's length (default 120)")
    parser.add_argument("--settle-s", type=float, default=1800,
                        help="how long to wait for the jobs to end after the load (default 1800: 50 trainings)")
    args = parser.parse_args(argv)
    users = args.users or (8 if args.quick else 50)
    seconds = args.seconds or (30 if args.quick else 120)
    data_dir = report.RESULTS / "load-cluster"
    shutil.rmtree(data_dir, ignore_errors=True)
    ports = Ports.free()
    cluster = Cluster(data_dir=data_dir, ports=ports, embedded_aws=True,
                      extra_env={**LIMITS, "BASE_URL": f"http://127.0.0.1:{ports.gateway}"})
    try:
        print(f"... starting the platform ({data_dir})", file=sys.stderr, flush=True)
        cluster.start()
        print(f"... {users} users for {seconds:g} s", file=sys.stderr, flush=True)
        result = asyncio.run(drive(cluster, users, seconds, args.settle_s))
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
    print_summary(result)
    report.save("load-latest", {"machine": report.machine(), "result": result})
    clean = result["jobs_lost"] == result["jobs_duplicated"] == result["jobs_unfinished"] == 0
    return 0 if result["errors"] == 0 and clean else 1
