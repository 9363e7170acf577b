"""docker/: the compose file is valid (checked by docker-compose itself when it is installed:
it needs no engine for `config`), every service is health-checked and restarted, and no
password is written in it. Images cannot be built on the CI machines."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
COMPOSE = DOCKER / "compose.yaml"


def test_compose_services_are_checked_and_restarted() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"postgres", "mlflow", "proxy", "dashboard", "worker"}
    assert all(s.get("restart") for s in services.values())
    assert all("healthcheck" in services[name]
               for name in ("postgres", "mlflow", "proxy", "dashboard"))
    # Workers reach the study through Optuna's gRPC storage proxy (docs/scale-out.md).
    assert services["worker"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                "proxy": {"condition": "service_healthy"},
                                                "mlflow": {"condition": "service_healthy"}}
    worker_command = " ".join(services["worker"]["command"])
    assert "--tracking-uri http://mlflow:5000" in worker_command and "--data /data" in worker_command
    assert "ports" not in services["worker"]  # workers scale: no fixed host port
    assert "--allowed-hosts" in " ".join(services["mlflow"]["command"])
    assert any(v.endswith(":/data:ro") for v in services["worker"]["volumes"])


def test_no_credentials_in_the_committed_files() -> None:
    text = COMPOSE.read_text() + (DOCKER / "Dockerfile").read_text()
    assert "change-me" not in text and "PASSWORD=" not in text
    assert "${POSTGRES_PASSWORD:?" in COMPOSE.read_text()  # refused when not set


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (.ci/services installs it)")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    base = ["docker-compose", "--env-file", str(DOCKER / "env.example"), "-f", str(COMPOSE)]
    done = subprocess.run([*base, "config", "--services"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {"postgres", "mlflow", "proxy", "dashboard", "worker"}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run(["docker-compose", "--env-file", str(empty), "-f", str(COMPOSE),
                              "config", "-q"], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in docker/.env" in refused.stderr
