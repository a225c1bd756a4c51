"""The one settings object read by the api, the worker and Alembic (environment variables, no file)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from smt_core.hyperparameters import CHECKPOINT_EVERY

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: Any, name: str) -> int:
    """A memory size as bytes: an integer, or a number with a unit ("24GiB", "80 GB", "512MiB")."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a size such as 24GiB, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        text = str(value).strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        number, unit = (float(digits) if digits else -1.0), text[len(digits):]
    if unit not in _UNITS or number <= 0:
        raise ValueError(f"{name}: expected a positive size such as 24GiB or 80GB, got {value!r}")
    return int(number * _UNITS[unit])


class Settings(BaseSettings):
    """Unset DATABASE_URL / BROKER_URL mean the embedded default: SQLite and a filesystem broker in ``home``."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", validate_default=True, env_ignore_empty=True)

    home: Path = Field(default=Path("~/.sparsetune"), validation_alias="SPARSETUNE_HOME")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    broker_url: str | None = Field(default=None, validation_alias="BROKER_URL")
    environment: str = Field(default="local", validation_alias="SPARSETUNE_ENV")
    # alias -> local folder or hub id; the packaged aliases are always allowed as well
    models: dict[str, str] = Field(default_factory=dict, validation_alias="SPARSETUNE_MODELS")
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, validation_alias="SPARSETUNE_MAX_UPLOAD_BYTES")
    max_line_bytes: int = Field(default=1024 * 1024, gt=0, validation_alias="SPARSETUNE_MAX_LINE_BYTES")
    # per-owner limits (see service/quotas.py): queued + running jobs, steps of one job, stored bytes
    max_active_jobs_per_owner: int = Field(default=20, ge=1, validation_alias="SPARSETUNE_MAX_ACTIVE_JOBS_PER_OWNER")
    max_steps: int = Field(default=100_000, ge=1, le=10_000_000, validation_alias="SPARSETUNE_MAX_STEPS")
    max_stored_bytes_per_owner: int = Field(default=50 * 2**30, validation_alias="SPARSETUNE_MAX_STORED_BYTES_PER_OWNER")
    # token buckets per API key (per client IP without one): sustained requests/s and burst; rate 0 = unlimited
    rate_reads_per_second: float = Field(default=100.0, ge=0, validation_alias="SPARSETUNE_RATE_READS_PER_SECOND")
    rate_reads_burst: int = Field(default=200, ge=1, validation_alias="SPARSETUNE_RATE_READS_BURST")
    rate_writes_per_second: float = Field(default=20.0, ge=0, validation_alias="SPARSETUNE_RATE_WRITES_PER_SECOND")
    rate_writes_burst: int = Field(default=40, ge=1, validation_alias="SPARSETUNE_RATE_WRITES_BURST")
    # requests in flight per API process before it answers 503 at once (0: no cap); see api/inflight.py
    max_in_flight: int = Field(default=64, ge=0, validation_alias="SPARSETUNE_MAX_IN_FLIGHT")
    # request hardening (api/door.py, api/requestlog.py, api/server.py): the largest body of a request that is
    # not an upload; how long a request may wait for the next piece of its body, and for the rest of its
    # headers; how long a verified (or refused) API key is remembered, which bounds how long a revoked key's
    # open event streams live on
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, validation_alias="SPARSETUNE_MAX_BODY_BYTES")
    body_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias="SPARSETUNE_BODY_TIMEOUT_SECONDS")
    min_body_bytes_per_second: float = Field(default=16 * 1024, gt=0,
                                             validation_alias="SPARSETUNE_MIN_BODY_BYTES_PER_SECOND")
    header_timeout_seconds: float = Field(default=10.0, gt=0, validation_alias="SPARSETUNE_HEADER_TIMEOUT_SECONDS")
    key_check_seconds: float = Field(default=2.0, gt=0, le=60, validation_alias="SPARSETUNE_KEY_CHECK_SECONDS")
    # Host names the API answers to besides localhost, *.localhost and IP addresses (api/hosts.py): comma-
    # separated, "*.example.com" for its subdomains, "*" for any
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                          validation_alias="SPARSETUNE_ALLOWED_HOSTS")
    chunk_bytes: int = Field(default=4 * 1024 * 1024, validation_alias="SPARSETUNE_CHUNK_BYTES")
    lease_seconds: float = Field(default=120.0, validation_alias="SPARSETUNE_LEASE_SECONDS")
    reconcile_seconds: float = Field(default=30.0, validation_alias="SPARSETUNE_RECONCILE_SECONDS")
    requeue_after_seconds: float = Field(default=300.0, validation_alias="SPARSETUNE_REQUEUE_AFTER_SECONDS")
    checkpoint_every: int = Field(default=CHECKPOINT_EVERY.default, validation_alias="SPARSETUNE_CHECKPOINT_EVERY")
    max_attempts: int = Field(default=3, validation_alias="SPARSETUNE_MAX_ATTEMPTS")
    child_memory_bytes: int | None = Field(default=None, validation_alias="SPARSETUNE_CHILD_MEMORY_BYTES")
    queue_name: str = Field(default="sparsetune", validation_alias="SPARSETUNE_QUEUE")
    sse_poll_seconds: float = Field(default=0.5, validation_alias="SPARSETUNE_SSE_POLL_SECONDS")
    log_level: str = Field(default="INFO", validation_alias="SPARSETUNE_LOG_LEVEL")
    # worker pools: name -> memory per device of one worker (bytes, or "24GiB"/"80GB"), or {"memory", "devices"}
    # for workers that see several GPUs (jobs with hyperparameters.num_devices > 1); empty = one
    # unlimited pool named "default" on ``queue_name``. Jobs go to the smallest pool their estimate fits.
    pools: dict[str, dict[str, int]] = Field(default_factory=dict, validation_alias="SPARSETUNE_POOLS")
    worker_pool: str | None = Field(default=None, validation_alias="SPARSETUNE_WORKER_POOL")
    heartbeat_seconds: float = Field(default=10.0, gt=0, validation_alias="SPARSETUNE_HEARTBEAT_SECONDS")
    # the API process runs the reconciler too (api/background.py), so a dead worker is noticed with none alive
    api_reconciler: bool = Field(default=True, validation_alias="SPARSETUNE_API_RECONCILER")
    # `sparsetune up` restarts a process that died after this delay, doubled per quick death up to the max
    # (and back to the start once it stayed up that long); see cli/supervisor.py
    restart_backoff_seconds: float = Field(default=1.0, gt=0, validation_alias="SPARSETUNE_RESTART_BACKOFF_SECONDS")
    restart_backoff_max_seconds: float = Field(default=60.0, gt=0,
                                               validation_alias="SPARSETUNE_RESTART_BACKOFF_MAX_SECONDS")
    # the inference process (inference/, `sparsetune serve`; `up` starts one unless up_inference is false): the
    # memory its loaded models and adapters may take (bytes or "8GiB"; unset: half its device's memory, see
    # inference/__main__.py), where it listens (port 0: a free port, picked at start), the URL the API is to
    # use for it when the listening address is not one (0.0.0.0, behind a proxy), and the bearer token the
    # API sends it (see inference_secret)
    inference_memory: int | None = Field(default=None, validation_alias="SPARSETUNE_INFERENCE_MEMORY")
    inference_host: str = Field(default="127.0.0.1", validation_alias="SPARSETUNE_INFERENCE_HOST")
    inference_port: int = Field(default=0, ge=0, le=65535, validation_alias="SPARSETUNE_INFERENCE_PORT")
    inference_token: str | None = Field(default=None, min_length=16, validation_alias="SPARSETUNE_INFERENCE_TOKEN")
    inference_advertise_url: str | None = Field(default=None, validation_alias="SPARSETUNE_INFERENCE_ADVERTISE_URL")
    up_inference: bool = Field(default=True, validation_alias="SPARSETUNE_UP_INFERENCE")
    # webhooks (service/webhooks.py, worker/webhooks.py): the delays (seconds, comma-separated) before each retry
    # of a delivery that failed (the default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, about a day in all); the
    # timeout of one attempt; how often each worker looks for due messages; whether URLs may point at loopback,
    # private, link-local or reserved addresses (unset: only in the embedded default, a one-machine install)
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000],
        validation_alias="SPARSETUNE_WEBHOOK_RETRY_SCHEDULE")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60, validation_alias="SPARSETUNE_WEBHOOK_TIMEOUT_SECONDS")
    webhook_poll_seconds: float = Field(default=2.0, gt=0, validation_alias="SPARSETUNE_WEBHOOK_POLL_SECONDS")
    webhook_allow_private: bool | None = Field(default=None, validation_alias="SPARSETUNE_WEBHOOK_ALLOW_PRIVATE")

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = json.loads(v) if v.strip() else {}
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(p, str) for k, p in v.items()):
            raise ValueError("SPARSETUNE_MODELS must be a JSON object of alias -> path or hub id")
        return v

    @field_validator("pools", mode="before")
    @classmethod
    def _parse_pools(cls, v: Any) -> Any:
        """Each pool is a size ("24GiB") or {"memory": size, "devices": n} for workers that see n GPUs."""
        if isinstance(v, str):
            v = json.loads(v) if v.strip() else {}
        if not isinstance(v, dict):
            raise ValueError('SPARSETUNE_POOLS must be a JSON object of pool name -> memory, e.g. {"gpu-24g": "24GiB"}')
        out = {}
        for name, spec in v.items():
            if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"SPARSETUNE_POOLS: pool name {name!r} must be letters, digits, '-' or '_'")
            where = f"SPARSETUNE_POOLS[{name!r}]"
            if isinstance(spec, dict):
                if set(spec) - {"memory", "devices"} or "memory" not in spec:
                    raise ValueError(f'{where}: expected {{"memory": "80GiB", "devices": 4}}')
                devices = spec.get("devices", 1)
                if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
                    raise ValueError(f"{where}: devices must be a positive integer")
                out[name] = {"memory": parse_bytes(spec["memory"], where), "devices": devices}
            else:
                out[name] = {"memory": parse_bytes(spec, where), "devices": 1}
        return out

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: Any) -> Any:
        return [h.strip() for h in v.split(",") if h.strip()] if isinstance(v, str) else v

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_retry_schedule(cls, v: Any) -> Any:
        """"5,300,1800": the delay before each retry, in seconds (one attempt, then one per delay)."""
        if isinstance(v, str):
            try:
                v = [float(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"SPARSETUNE_WEBHOOK_RETRY_SCHEDULE: expected seconds such as 5,300,1800, "
                                 f"got {v!r}") from None
        if not isinstance(v, list) or any(not isinstance(x, int | float) or x < 0 for x in v):
            raise ValueError("SPARSETUNE_WEBHOOK_RETRY_SCHEDULE: each delay must be a number of seconds >= 0")
        return v

    @property
    def webhooks_may_reach_private(self) -> bool:
        """SPARSETUNE_WEBHOOK_ALLOW_PRIVATE, or, unset, whether this is the embedded default: on one machine for
        one user a receiver on localhost is the usual case; a shared service keeps its network out of reach."""
        return self.embedded if self.webhook_allow_private is None else self.webhook_allow_private

    @field_validator("max_stored_bytes_per_owner", mode="before")
    @classmethod
    def _parse_stored_bytes(cls, v: Any) -> Any:
        return parse_bytes(v, "SPARSETUNE_MAX_STORED_BYTES_PER_OWNER")

    @field_validator("inference_memory", mode="before")
    @classmethod
    def _parse_inference_memory(cls, v: Any) -> Any:
        return None if v is None or v == "" else parse_bytes(v, "SPARSETUNE_INFERENCE_MEMORY")

    @field_validator("inference_advertise_url", mode="after")
    @classmethod
    def _check_advertise_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"SPARSETUNE_INFERENCE_ADVERTISE_URL: expected http://host:port, got {v!r}")
        return v.rstrip("/") if v else v

    @field_validator("child_memory_bytes", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        """Outside development a placeholder password in a URL is refused, not deployed."""
        if self.environment not in ("local", "development", "test"):
            for name in ("database_url", "broker_url"):
                value = getattr(self, name) or ""
                if any(p in value for p in ("changethis", "changeme", "password@")):
                    raise ValueError(f"{name.upper()}: replace the placeholder password before deploying")
        return self

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'sparsetune.db'}"

    def inference_secret(self) -> str:
        """The bearer token between the API and the inference processes: SPARSETUNE_INFERENCE_TOKEN when set,
        else one generated once under ``home`` (``inference_token``, 0600), in the embedded default and on
        Postgres/Redis alike, so an API and inference processes that share a home (`sparsetune up`, one
        machine) agree without a setting. Processes on other machines have another home: set the same
        SPARSETUNE_INFERENCE_TOKEN on every API and inference process there (else the API is refused, 401)."""
        from service import private

        return self.inference_token or private.shared_secret(self.home / "inference_token")

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    def broker_transport_options(self) -> dict[str, Any]:
        """The filesystem transport keeps its messages, and its exchange table (``control``, which kombu would
        otherwise put in the working directory), under ``home``; Redis needs a long visibility timeout."""
        if self.broker.startswith("filesystem://"):
            folder = self.home / "broker"
            for path in (self.home, folder, folder / "queue", folder / "processed", folder / "control"):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)  # private (service/private.py) when new
            return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                    "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control"),
                    "store_processed": False}
        # Redelivery is the reconciler's job (leases), so the visibility timeout only has to outlast a job.
        return {"visibility_timeout": 7 * 24 * 3600}


@lru_cache
def get_settings() -> Settings:
    """One instance per process; tests clear the cache after changing the environment."""
    return Settings()
