"""Load: requests per second with a fixed number of concurrent clients, and one-at-a-time latencies; run as
`python -m bench.load`, many users at once on the whole platform (bench/load_users.py)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping

import httpx


class BadResponse(RuntimeError):
    pass


def check(response: httpx.Response, expected: int = 200) -> httpx.Response:
    if response.status_code != expected:
        raise BadResponse(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                          f"{response.text[:300]}")
    return response


async def requests_per_second(client: httpx.AsyncClient, url: str, headers: Mapping[str, str], seconds: float,
                              concurrency: int) -> float:
    """GETs of `url` for `seconds` from `concurrency` clients, each sending its next once one returns."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            check(await client.get(url, headers=headers))
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)  # the requests still in flight at the deadline count too


async def compare_rps(urls: Mapping[str, str], headers: Mapping[str, str], *, concurrency: int,
                      seconds: float, rounds: int, warmup_s: float) -> dict[str, list[float]]:
    """Requests per second of each url, per round; the order flips each round (A B, B A) to cancel drift."""
    connections = concurrency * len(urls)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for url in urls.values():
            await requests_per_second(client, url, headers, warmup_s, concurrency)
        per_round: dict[str, list[float]] = {name: [] for name in urls}
        for round_no in range(rounds):
            order = list(urls.items())
            for name, url in order if round_no % 2 == 0 else reversed(order):
                per_round[name].append(await requests_per_second(client, url, headers, seconds, concurrency))
    return per_round


def interleaved_latencies(probes: Mapping[str, Callable[[], object]], *, samples: int,
                          warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each probe, called in turn so that drift falls on all of them alike. The order stays
    the same (A B C, A B C): then each probe always follows the same one, as in a ring, which treats probes of
    the same shape alike; flipping it (C B A) would leave one probe after a pause and another straight after
    its own server's last call."""
    for probe in probes.values():
        for _ in range(warmup):
            probe()
    seconds: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(samples):
        for name, probe in probes.items():
            started = time.perf_counter()
            probe()
            seconds[name].append(time.perf_counter() - started)
    return seconds


if __name__ == "__main__":
    from bench.load_users import main

    sys.exit(main())
