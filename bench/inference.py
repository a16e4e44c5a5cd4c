"""`python -m bench.inference [--quick]`: local generation through the platform against the same model generating
in plain transformers in the bench's own process, as ratios measured in the same run.

The model is the Qwen2.5-0.5B shape at 4 of its 24 layers, with its real vocabulary and random weights
(bench/inference_model.py). It goes into the embedded S3 and is served through a serving catalog of the bench's
own (SERVING_CATALOG_FILE, with an `artifact_prefix`), deployed with `POST /api/deployments` through the gateway,
and waited for. Both sides generate greedily from the same messages, `max_tokens` N, one request at a time, with
the same torch threads (`--threads`, default 2: the server's default) and never at the same time. Rounds run in
A B, B A order: gateway plain, gateway streamed, in-process; then in-process, gateway streamed, gateway plain.

1. gateway_vs_inprocess_tokens_per_s: completion tokens/s of a plain request with the openai SDK through the
   gateway / of `model.generate` in-process; the median of the per-round ratios. Aim >= 0.8 (the platform adds
   little).
2. ttft_gateway_vs_inprocess: seconds to the first streamed chunk with content through the gateway / seconds to
   generate's first token (a streamer), the chat template rendered inside both. Context: the ratio depends on the
   prompt's length and the hardware's prefill speed more than on the platform; the milliseconds the platform
   adds are printed beside it.
3. gateway_stream_vs_inprocess_tokens_per_s (context): as 1, streamed: each token's text crosses the generation
   server, the emulator's event stream, the inference service's SSE and the gateway, on the same cores.
4. gateway_8_clients_vs_inprocess_tokens_per_s (context): the aggregate tokens/s of 8 clients at once through
   the gateway / in-process one at a time. The local server generates one request at a time (LMI with vLLM
   batches on AWS), so about 1 is what it can reach.
5. tiny_chat_gateway_vs_inprocess_tokens_per_s (context): 1 on the demo's tiny-chat model, a few milliseconds a
   token, nearly all of it Python: the path's cost per request and the two decode loops' overheads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from bench import load, report
from bench.inference_model import CACHE, QWEN25_05B_LAYERS, parameters, qwen_shape
from bench.inference_sides import GatewaySide, Generation, InProcessSide, same_generation
from bench.stats import Aim, Result, median, ratio
from deploy.local.cluster import ROOT, Cluster, Ports
from shared.contracts import resources

RESULTS = report.RESULTS
LAYERS = 4  # of Qwen2.5-0.5B's 24: one token takes tens of milliseconds on 2 cores
MODEL_ID = "bench/qwen2.5-0.5b-4-layers"
MODEL_PREFIX = "base-models/bench-qwen2.5-0.5b-4-layers/"
TINY_ID = "llm-tuner/tiny-chat"
TINY_PREFIX = "base-models/llm-tuner-tiny-chat/"
MESSAGES = [{"role": "system", "content": "You are a helpful assistant. Answer in a short paragraph."},
            {"role": "user", "content": "Explain in a few sentences why the sky looks blue during the day and "
                                        "red at sunset, and what that says about the air."}]
TINY_MESSAGES = [{"role": "system", "content": "You are a guide to the animals of Zorbia. Answer in one short "
                                               "sentence."},
                 {"role": "user", "content": "What color is the glimp?"}]
DEPLOY_DEADLINE_S = 600


@dataclass(frozen=True)
class Plan:
    max_tokens: int
    rounds: int
    concurrent_rounds: int
    clients: int = 8
    tiny_max_tokens: int = 64
    tiny_rounds: int = 7


PLANS = {"full": Plan(max_tokens=64, rounds=7, concurrent_rounds=2),
         "quick": Plan(max_tokens=32, rounds=3, concurrent_rounds=1, tiny_rounds=3)}


@dataclass
class ServingPathCluster(Cluster):
    """What a chat crosses: moto, the SageMaker emulator (which starts a generation server per deployment),
    auth, inference (its API, worker and reconciler) and the gateway. Files and training are left out: they are
    not on the path, and on 2 cores their polling would only add noise."""

    threads: int = 2
    models: dict[str, Path] = field(default_factory=dict)  # S3 prefix -> local model folder

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        py, p = sys.executable, self.ports
        self._wait_healthy([self.spawn_moto()])
        self.provision()
        self.upload_models()
        threads = str(self.threads)
        self.extra_env.update(
            SERVING_CATALOG_FILE=str(self.write_catalog()), DEPLOY_ON_DEMAND="false",
            SAGEMAKER_EMULATOR_SERVING_TORCH_THREADS=threads, OMP_NUM_THREADS=threads,
            # Limits out of the way: the bench chats far more often than a person would.
            CHAT_REQUESTS_PER_MINUTE="1000000", REGISTER_LIMIT_PER_IP="[1000000, 60]", ACCESS_TOKEN_TTL_S="3600")  # noqa: S106
        servers = [
            self._spawn("sagemaker-emulator", [py, "-m", "deploy.local.sagemaker_emulator", "--port",
                                               str(p.emulator), "--workdir", str(self.data_dir / "sagemaker")],
                        f"http://127.0.0.1:{p.emulator}/health"),
            self._spawn("auth", [py, "-m", "services.auth.app"], f"http://127.0.0.1:{p.auth}/healthz", p.auth),
            self._spawn("inference", [py, "-m", "services.inference.app"],
                        f"http://127.0.0.1:{p.inference}/healthz", p.inference),
            self._spawn("gateway", [py, "-m", "services.gateway.app"], f"http://127.0.0.1:{p.gateway}/healthz",
                        p.gateway)]
        workers = [self._spawn("inference-worker", [py, "-m", "services.inference.worker"], None),
                   self._spawn("inference-reconciler", [py, "-m", "services.inference.reconciler"], None)]
        self._wait_healthy(servers)
        for worker in workers:
            assert worker.popen is not None
            if worker.popen.poll() is not None:
                raise RuntimeError(f"{worker.name} exited with {worker.popen.returncode}; see its log")

    def upload_models(self) -> None:
        with self.with_env():
            s3 = boto3.client("s3")
            for prefix, directory in self.models.items():
                for path in sorted(directory.rglob("*")):
                    if path.is_file():
                        s3.upload_file(str(path), resources.BUCKET, prefix + path.relative_to(directory).as_posix())

    def write_catalog(self) -> Path:
        """The repo's catalog (instance types, prices, the tiny demo model) plus the bench's model."""
        catalog = json.loads((ROOT / "services" / "inference" / "serving_catalog.json").read_text())
        catalog["models"] = [m for m in catalog["models"] if m["id"] == TINY_ID]
        catalog["models"].append({
            "id": MODEL_ID, "name": "Qwen2.5 0.5B shape, 4 of 24 layers, random weights (bench)", "hf_repo": None,
            "artifact_prefix": MODEL_PREFIX, "parameters": parameters(self.models[MODEL_PREFIX]),
            "context_length": 32768, "gated": False})
        path = self.data_dir / "serving_catalog.json"
        path.write_text(json.dumps(catalog, indent=1) + "\n")
        return path

    def server_threads(self, endpoint: str) -> int:
        """The torch threads the endpoint's generation server says it runs (its log's first line)."""
        log = self.data_dir / "sagemaker" / ".hosting" / "logs" / f"{endpoint}-base.log"
        found = re.search(r"(\d+) torch threads\)", log.read_text() if log.is_file() else "")
        if found is None:
            raise RuntimeError(f"{log}: the generation server did not say how many torch threads it runs")
        return int(found.group(1))


def sign_up(gateway: str) -> str:
    response = load.check(httpx.post(f"{gateway}/auth/register", timeout=30, json={
        "email": f"bench-{uuid.uuid4().hex[:10]}@example.com", "password": uuid.uuid4().hex}), 201)
    return str(response.json()["access_token"])


def deploy(gateway: str, token: str, model: str) -> dict[str, Any]:
    """POST /api/deployments, then GET it until it is in service (a poll with a deadline)."""
    headers = {"Authorization": f"Bearer {token}"}
    deployment = load.check(httpx.post(f"{gateway}/api/deployments", json={"model": model}, headers=headers,
                                       timeout=60), 201).json()
    deadline = time.monotonic() + DEPLOY_DEADLINE_S
    while deployment["status"] == "creating":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model}: not in service within {DEPLOY_DEADLINE_S} s")
        time.sleep(0.5)
        deployment = load.check(httpx.get(f"{gateway}/api/deployments/{deployment['id']}", headers=headers,
                                          timeout=30)).json()
    if deployment["status"] != "in_service":
        raise RuntimeError(f"{model}: deployment {deployment['status']}: {deployment.get('failure_reason')}")
    return deployment


def round_order(index: int, sides: tuple[str, ...] = ("plain", "stream", "in_process")) -> list[str]:
    """A B then B A: drift in the machine's speed falls on both sides alike over two rounds."""
    return list(sides) if index % 2 == 0 else list(reversed(sides))


def rounds(gateway: GatewaySide, local: InProcessSide, reference: Generation, count: int,
           loads: list[float]) -> dict[str, list[Generation]]:
    """`count` rounds: gateway plain, gateway streamed, in-process; then in-process, streamed, plain."""
    samples: dict[str, list[Generation]] = {"plain": [], "stream": [], "in_process": []}
    steps: dict[str, Callable[[], Generation]] = {"plain": gateway.plain, "stream": gateway.streamed,
                                                  "in_process": local.generate}
    for index in range(count):
        for side in round_order(index):
            generation = steps[side]()
            same_generation(reference, generation, side)
            samples[side].append(generation)
        loads.append(os.getloadavg()[0])
        print(f"  round {index + 1}/{count}: gateway {samples['plain'][-1].tokens_per_s:.1f} tok/s, streamed "
              f"{samples['stream'][-1].tokens_per_s:.1f}, in-process {samples['in_process'][-1].tokens_per_s:.1f}; "
              f"load {loads[-1]:.2f}", file=sys.stderr)
    return samples


def concurrent_rounds(gateway: GatewaySide, local: InProcessSide, reference: Generation, plan: Plan,
                      loads: list[float]) -> tuple[list[float], list[float], list[float]]:
    """Per round, A B then B A: the aggregate gateway tokens/s of `plan.clients` at once, in-process tokens/s,
    and the slowest of the clients' answers (seconds)."""
    aggregate: list[float] = []
    single: list[float] = []
    slowest: list[float] = []
    for index in range(plan.concurrent_rounds):
        for side in round_order(index, ("gateway", "in_process")):
            if side == "in_process":
                generation = local.generate()
                same_generation(reference, generation, "in_process")
                single.append(generation.tokens_per_s)
                continue
            wall, answers = gateway.concurrent(plan.clients)
            for answer in answers:
                same_generation(reference, answer, f"{plan.clients} clients")
            aggregate.append(sum(a.tokens for a in answers) / wall)
            slowest.append(max(a.seconds for a in answers))
        loads.append(os.getloadavg()[0])
    return aggregate, single, slowest


def main_figures(gateway: GatewaySide, local: InProcessSide, plan: Plan, loads: list[float]) -> list[Result]:
    reference = local.generate()  # warms the in-process side; every later generation must equal it
    for warm_up in (gateway.plain, gateway.streamed):
        same_generation(reference, warm_up(), "warm-up")
    if reference.tokens != plan.max_tokens:
        raise RuntimeError(f"in-process greedy generation ended after {reference.tokens} tokens, not "
                           f"{plan.max_tokens}: pick a prompt the random model does not end early")
    samples = rounds(gateway, local, reference, plan.rounds, loads)
    plain, stream, inproc = samples["plain"], samples["stream"], samples["in_process"]
    tps = [ratio(g.tokens_per_s, b.tokens_per_s) for g, b in zip(plain, inproc, strict=True)]
    stream_tps = [ratio(g.tokens_per_s, b.tokens_per_s) for g, b in zip(stream, inproc, strict=True)]
    first = [(_first(g), _first(b)) for g, b in zip(stream, inproc, strict=True)]
    ttft = [ratio(g, b) for g, b in first]
    gw_tps, in_tps = median([g.tokens_per_s for g in plain]), median([b.tokens_per_s for b in inproc])
    gw_ms, in_ms = median([g for g, _ in first]) * 1000, median([b for _, b in first]) * 1000
    n, prompt = plan.max_tokens, local.prompt_tokens()
    per_round = {"gateway_tokens_per_s": [g.tokens_per_s for g in plain],
                 "gateway_stream_tokens_per_s": [g.tokens_per_s for g in stream],
                 "in_process_tokens_per_s": [b.tokens_per_s for b in inproc],
                 "gateway_ttft_s": [g for g, _ in first], "in_process_ttft_s": [b for _, b in first]}
    results = [
        Result("gateway_vs_inprocess_tokens_per_s", median(tps),
               f"gateway {gw_tps:.2f} tok/s / in-process generate {in_tps:.2f} tok/s; {n} tokens after a "
               f"{prompt}-token prompt, greedy, openai SDK, plain; median of {plan.rounds} per-round ratios",
               Aim(">=", 0.8), figures={"per_round_ratios": tps, **per_round}),
        Result("ttft_gateway_vs_inprocess", median(ttft),
               f"first streamed content chunk through the gateway {gw_ms:.0f} ms / generate's first token "
               f"in-process {in_ms:.0f} ms; {prompt}-token prompt", None,
               note=f"the platform adds {median([(g - b) * 1000 for g, b in first]):.0f} ms to the first token "
                    "(median of the per-round differences); context, no aim: the ratio follows the prompt's length "
                    "and the hardware's prefill speed more than the platform",
               figures={"per_round_ratios": ttft}),
        Result("gateway_stream_vs_inprocess_tokens_per_s", median(stream_tps),
               f"streamed through the gateway {median([g.tokens_per_s for g in stream]):.2f} tok/s / in-process "
               f"{in_tps:.2f} tok/s", None, figures={"per_round_ratios": stream_tps})]
    aggregate, single, slowest = concurrent_rounds(gateway, local, reference, plan, loads)
    conc = [ratio(a, s) for a, s in zip(aggregate, single, strict=True)]
    results.append(Result(
        f"gateway_{plan.clients}_clients_vs_inprocess_tokens_per_s", median(conc),
        f"{plan.clients} clients at once through the gateway {median(aggregate):.2f} tok/s in all / in-process one "
        f"at a time {median(single):.2f} tok/s; the slowest answer took {max(slowest):.1f} s; "
        f"{plan.concurrent_rounds} round(s)", None,
        note="the local generation server runs one request at a time (no batching), so about 1 is its ceiling",
        figures={"per_round_ratios": conc, "aggregate_tokens_per_s": aggregate, "in_process_tokens_per_s": single,
                 "slowest_answer_s": slowest}))
    return results


def tiny_figure(gateway: GatewaySide, local: InProcessSide, plan: Plan, loads: list[float]) -> Result:
    reference = local.generate()
    same_generation(reference, gateway.plain(), "tiny-chat warm-up")
    ratios, gw, inproc = [], [], []
    for index in range(plan.tiny_rounds):
        pair: dict[str, Generation] = {}
        for side in round_order(index, ("gateway", "in_process")):
            pair[side] = gateway.plain() if side == "gateway" else local.generate()
            same_generation(reference, pair[side], f"tiny-chat {side}")
        gw.append(pair["gateway"].tokens_per_s)
        inproc.append(pair["in_process"].tokens_per_s)
        ratios.append(ratio(gw[-1], inproc[-1]))
        loads.append(os.getloadavg()[0])
    return Result("tiny_chat_gateway_vs_inprocess_tokens_per_s", median(ratios),
                  f"tiny-chat through the gateway {median(gw):.0f} tok/s / in-process {median(inproc):.0f} tok/s; "
                  f"{reference.tokens} tokens", None,
                  note=f"{median([1000 / t for t in inproc]):.1f} ms a token in-process, mostly Python on either "
                       "side: this compares the path's cost per request and the two decode loops' overheads, not "
                       "the model's work",
                  figures={"per_round_ratios": ratios, "gateway_tokens_per_s": gw, "in_process_tokens_per_s": inproc})


def _first(generation: Generation) -> float:
    if generation.first_token_s is None:
        raise RuntimeError("a streamed generation had no content chunk")
    return generation.first_token_s


def run(cluster: ServingPathCluster, plan: Plan, threads: int, loads: list[float]) -> list[Result]:
    import openai

    token = sign_up(cluster.gateway_url)
    client = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=token, max_retries=0, timeout=600)
    print(f"deploying {MODEL_ID} through POST /api/deployments ...", file=sys.stderr)
    started = time.monotonic()
    deployment = deploy(cluster.gateway_url, token, MODEL_ID)
    print(f"  in service after {time.monotonic() - started:.0f} s on {deployment['instance_type']}",
          file=sys.stderr)
    if (server := cluster.server_threads(deployment["endpoint_name"])) != threads:
        raise RuntimeError(f"the generation server runs {server} torch threads, the in-process side {threads}")
    local = InProcessSide(cluster.models[MODEL_PREFIX], threads, MESSAGES, plan.max_tokens)
    results = main_figures(GatewaySide(client, MODEL_ID, MESSAGES, plan.max_tokens), local, plan, loads)
    del local
    print(f"deploying {TINY_ID} ...", file=sys.stderr)
    deploy(cluster.gateway_url, token, TINY_ID)
    tiny = InProcessSide(cluster.models[TINY_PREFIX], threads, TINY_MESSAGES, plan.tiny_max_tokens)
    results.append(tiny_figure(GatewaySide(client, TINY_ID, TINY_MESSAGES, plan.tiny_max_tokens), tiny, plan,
                               loads))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 32 tokens a request (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides (default 2)")
    args = parser.parse_args(argv)
    plan = PLANS["quick" if args.quick else "full"]
    from trainer_image.demo_model import build_demo_model

    started = time.monotonic()
    print("building the models (once; kept in .data/bench-models/) ...", file=sys.stderr)
    models = {MODEL_PREFIX: qwen_shape(LAYERS), TINY_PREFIX: build_demo_model(CACHE / "tiny-chat")}
    data_dir = RESULTS / "inference-cluster"
    shutil.rmtree(data_dir, ignore_errors=True)
    cluster = ServingPathCluster(data_dir=data_dir, ports=Ports.free(), threads=args.threads, models=models)
    loads = [os.getloadavg()[0]]
    try:
        print("starting moto, the SageMaker emulator, auth, inference and the gateway ...", file=sys.stderr)
        cluster.start()
        results = run(cluster, plan, args.threads, loads)
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()
    peak = max(loads)
    if peak > (os.cpu_count() or 1):
        print(f"note: the 1-minute load average reached {peak:.1f} on {os.cpu_count()} CPUs: other processes "
              "shared the cores; rerun when the machine is quiet", file=sys.stderr)
    report.publish("inference", results, time.monotonic() - started, threads=args.threads,
                   model=f"Qwen2.5-0.5B shape, {LAYERS} of {QWEN25_05B_LAYERS} layers, random weights, fp32",
                   max_tokens=plan.max_tokens, rounds=plan.rounds, load_average_1min=loads)
    print(f"load average (1 min) during the run: {min(loads):.2f} to {peak:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
