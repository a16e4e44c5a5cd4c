"""docker-compose.yml: only the gateway is published beyond this machine, auth believes forwarded client addresses
from the gateway only, and every process gets the one service token bootstrap generates. Read as data: no Docker."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "gateway"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _host_ip(port: str | dict[str, Any]) -> str | None:
    """The address a published port binds: `IP:HOST:CONTAINER`, or the long syntax's host_ip; None for all."""
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).split(":")
    return parts[0] if len(parts) == 3 else None


def test_every_published_port_but_the_gateways_binds_loopback(compose: dict[str, Any]) -> None:
    published = {name: service["ports"] for name, service in compose["services"].items() if service.get("ports")}
    assert PUBLIC in published and "localstack" in published  # a test that can fail: it sees the ports
    for name, ports in published.items():
        if name == PUBLIC:
            continue
        for port in ports:
            assert _host_ip(port) == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def test_auth_trusts_forwarded_addresses_from_the_gateway_only(compose: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    gateway_ip = ipaddress.ip_address(services[PUBLIC]["networks"]["platform"]["ipv4_address"])
    trusted = [ipaddress.ip_network(n) for n in json.loads(services["auth"]["environment"]["TRUSTED_PROXIES"])]
    assert trusted == [ipaddress.ip_network(f"{gateway_ip}/32")]
    subnet = ipaddress.ip_network(compose["networks"]["platform"]["ipam"]["config"][0]["subnet"])
    assert gateway_ip in subnet
    # The setting auth reads, in the form it parses from its environment.
    from services.auth.settings import Settings

    monkeypatch.setenv("TRUSTED_PROXIES", services["auth"]["environment"]["TRUSTED_PROXIES"])
    assert Settings().trusted_proxies == trusted


def _entrypoint(compose: dict[str, Any], name: str) -> list[str]:
    return [part.replace("$$", "$") for part in compose["services"][name]["entrypoint"]]  # compose's escape


def test_bootstrap_makes_the_service_token_once_and_every_process_runs_with_it(
        compose: dict[str, Any], tmp_path: Path) -> None:
    """The entrypoints run here with sh, the secrets volume a temporary directory."""
    volume = "/app/.data/secrets"
    services = compose["services"]

    def run(name: str, *command: str) -> str:
        entrypoint = [part.replace(volume, str(tmp_path)) for part in _entrypoint(compose, name)]
        return subprocess.run([*entrypoint, *command], check=True, capture_output=True, text=True).stdout

    assert run("bootstrap", "echo", "provisioned") == "provisioned\n"  # the command still runs, after
    token = (tmp_path / "service-token").read_text()
    assert len(token) >= 48 and token.isalnum()
    assert (tmp_path / "service-token").stat().st_mode & 0o077 == 0
    run("bootstrap", "true")
    assert (tmp_path / "service-token").read_text() == token  # kept across restarts
    apps = [n for n, s in services.items() if "build" in s and n != "bootstrap"]
    assert "auth" in apps and "files-worker" in apps
    for name in apps:
        assert f"secrets:{volume}:ro" in services[name]["volumes"], name
        assert "SERVICE_TOKEN" not in services[name].get("environment", {}), name
        assert run(name, "sh", "-c", 'printf %s "$SERVICE_TOKEN"') == token, name
    assert f"secrets:{volume}" in services["bootstrap"]["volumes"]
