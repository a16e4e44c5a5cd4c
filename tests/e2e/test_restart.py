"""Nothing is lost across a restart of the platform (`make up`, Ctrl-C, `make up`): a user signs up, uploads a file,
trains; the whole cluster stops and starts again on the same data dir; the user signs in with the same password
and finds the file (its content too), the job (succeeded) and its artifact, downloadable through its link."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from deploy.local.cluster import Ports
from deploy.local.demo_model import DEMO_MODEL_ID
from tests.support.clusters import running_cluster
from tests.support.polling import wait_for
from trainer_image.demo_model import make_demo_dataset

pytestmark = pytest.mark.e2e
PASSWORD = "restart password 123"


def _login(gateway: str, email: str) -> str:
    login = httpx.post(f"{gateway}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


def test_accounts_files_jobs_and_artifacts_survive_a_restart(tmp_path: Path) -> None:
    data_dir, ports = tmp_path / "data", Ports.free()
    email = f"restart-{uuid.uuid4().hex[:8]}@example.com"
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(example) + "\n" for example in make_demo_dataset(20, seed=3)))

    with running_cluster(data_dir, ports=ports) as cluster:
        gateway = cluster.gateway_url
        registered = httpx.post(f"{gateway}/auth/register", json={"email": email, "password": PASSWORD}, timeout=30)
        assert registered.status_code == 201, registered.text
        client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=_login(gateway, email), max_retries=0)
        uploaded = client.files.create(file=train.open("rb"), purpose="fine-tune")
        assert client.files.wait_for_processing(uploaded.id, poll_interval=0.5, max_wait_seconds=60).status == \
            "processed"
        job = client.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=uploaded.id,
                                             hyperparameters={"n_epochs": 1})
        done = wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id), lambda j: j.status in
                        ("succeeded", "failed", "cancelled"), f"job {job.id} finished", timeout_s=420)
        assert done.status == "succeeded", done.error
        events_before = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        files_before = sorted(f.id for f in client.files.list().data)  # the upload, and the job's results file

    with running_cluster(data_dir, ports=ports) as cluster:  # the same data dir, started again
        gateway = cluster.gateway_url
        token = _login(gateway, email)  # the account, and its password, are still there
        client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=token, max_retries=0)
        assert sorted(f.id for f in client.files.list().data) == files_before and uploaded.id in files_before
        assert client.files.content(uploaded.id).content == train.read_bytes()
        again = client.fine_tuning.jobs.retrieve(job.id)
        assert again.status == "succeeded" and again.fine_tuned_model == done.fine_tuned_model
        assert [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)] == events_before

        links = httpx.get(f"{gateway}/api/jobs/{job.id}/artifacts", headers={"Authorization": f"Bearer {token}"},
                          timeout=30)
        assert links.status_code == 200, links.text
        adapter = next(link for link in links.json()["data"] if link["kind"] == "adapter")
        archive = httpx.get(adapter["url"], timeout=60)
        assert archive.status_code == 200 and len(archive.content) == adapter["bytes"]
        with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
            assert "adapter_model.safetensors" in {Path(n).name for n in tar.getnames()}
