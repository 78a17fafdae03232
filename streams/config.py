"""One typed settings object, read from the environment (prefix ``RFM_``) and nowhere else.

Defaults work with the local stack started by ``deploy/local/stack.sh``. The stack writes the
ports it actually chose to ``.local/stack.env``; the ``dev`` script exports that file, so the
same variables drive the worker, the CLI, the tests and docker-compose.

Security (docs/operations.md, "Security"): Kafka over TLS and/or SASL
(``RFM_KAFKA_SECURITY_PROTOCOL`` and ``RFM_KAFKA_SASL_*`` / ``RFM_KAFKA_SSL_*``), Redis with AUTH
and TLS (``rediss://`` URLs, ``RFM_REDIS_PASSWORD``, ``RFM_REDIS_SSL_*``). Combinations are checked
here, with messages that name the variable to set; :mod:`streams.security` turns them into client
arguments. Passwords are :class:`~pydantic.SecretStr`, and the settings' repr shows the Redis URL
without its password, so neither can reach a log by printing the settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.domain.erasure import DEFAULT_SALT
from streams.domain.rules import Rules, load_rules
from streams.security import kafka_client_options, redact_url, security_problems

StoreKind = Literal["memory", "rocksdb"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]

# Optional settings that an empty variable (RFM_X=, common in ConfigMaps and .env files) unsets.
_OPTIONAL = (
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "kafka_ssl_key_password",
    "redis_password",
    "redis_ssl_cafile",
    "redis_ssl_certfile",
    "redis_ssl_keyfile",
    "rules_file",
    "allowed_lateness_seconds",
    "late_horizon_days",
)


class Settings(BaseSettings):
    """Everything a worker, the CLI or a test needs to find Kafka, Redis and its topics."""

    # hide_input_in_errors: a validation error must not echo a password it was given.
    model_config = SettingsConfigDict(
        env_prefix="RFM_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port]")
    topic_prefix: str = Field("rfm.", description="prefix of every topic the product uses")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of topics it creates")
    replication_factor: int = Field(1, ge=1, le=16)
    app_id: str = Field("rfm-stream", description="consumer group id and Faust app id")

    # --- Kafka security (docs/operations.md "Security") ------------------------------------
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS + SASL)"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512", description="SASL mechanism for the SASL_* protocols"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user (SASL_* protocols)")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ssl_cafile: str | None = Field(
        None, description="PEM file of the CA(s) to trust; unset = the system's CAs"
    )
    kafka_ssl_certfile: str | None = Field(
        None, description="client certificate (PEM, may include the key) for mutual TLS"
    )
    kafka_ssl_keyfile: str | None = Field(None, description="its private key, if separate")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of an encrypted client key"
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="check that the broker certificate names the host connected to"
    )

    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://[user[:password]@]host:port/db; rediss:// for TLS",
    )
    redis_prefix: str = Field("rfm:", description="prefix of every Redis key the product owns")
    redis_password: SecretStr | None = Field(
        None, description="Redis password (AUTH), instead of one in the URL"
    )
    redis_ssl_cafile: str | None = Field(
        None, description="rediss://: PEM file of the CA(s) to trust; unset = the system's CAs"
    )
    redis_ssl_certfile: str | None = Field(None, description="rediss://: client certificate")
    redis_ssl_keyfile: str | None = Field(None, description="rediss://: its private key")
    redis_ssl_check_hostname: bool = Field(
        True, description="rediss://: check that the server certificate names the host"
    )

    # --- Worker ----------------------------------------------------------------------------
    store: StoreKind = Field("memory", description="table store: memory, or rocksdb on disk")
    data_dir: str = Field(".local/worker", description="where the worker keeps local state")
    web_port: int = Field(6066, ge=0, le=65535, description="HTTP API / dashboard / metrics")
    web_host: str = Field("127.0.0.1")
    live_clock: bool = Field(True, description="let the wall clock move time when idle")
    tick_seconds: float = Field(1.0, gt=0, description="how often time-driven work runs")
    batch_max: int = Field(
        2_000, ge=1, le=100_000, description="input events processed (and committed) together"
    )
    batch_within_ms: float = Field(
        5.0,
        gt=0,
        le=10_000,
        # 5 ms: lower latency than 50 at every rate measured (docs/benchmarks.md#latency);
        # a backlog fills its batches (RFM_BATCH_MAX) long before the window ends
        description="longest wait to fill a batch: the latency floor at low traffic",
    )
    producer_linger_ms: float = Field(
        5.0,
        ge=0,
        le=1_000,
        description="how long the producer waits to fill a produce request (adds to latency)",
    )
    producer_batch_bytes: int = Field(
        524_288,
        ge=16_384,
        le=1_000_000,  # a record batch must stay under the broker's message.max.bytes (1 MB)
        description="largest record batch per partition in one produce request",
    )
    gc_young_threshold: int = Field(
        50_000,
        ge=0,
        le=10_000_000,
        description="allocations between two collections of Python's youngest generation "
        "(0: Python's default, 700); see streams.worker.memory.tune_cycle_collector",
    )
    currency: str = Field("USD", min_length=3, max_length=3, description="reporting currency")
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"
    api_token: SecretStr | None = Field(
        None, description="Bearer token for /api/* and /metrics; unset = no auth"
    )
    erasure_salt: SecretStr = Field(
        SecretStr(DEFAULT_SALT),
        description="salt of the hashes erased customers are remembered by; set your own",
    )

    # --- Rules (README "Time, lateness and determinism") -----------------------------------
    rules_file: str | None = Field(
        None, description="the rules file (TOML); unset = the packaged streams/domain/rules.toml"
    )
    allowed_lateness_seconds: float | None = Field(
        None, ge=0, le=30 * 86_400, description="overrides the rules file's allowed lateness"
    )
    late_horizon_days: float | None = Field(
        None, ge=0, le=366, description="overrides the rules file's late horizon"
    )

    @field_validator(*_OPTIONAL, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("erasure_salt")
    @classmethod
    def _salt_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the erasure salt must not be empty")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        problems = security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The repr (and str) of the settings: secrets masked, the Redis URL redacted."""
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "redis_url" else value

    @cached_property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def redis_shown(self) -> str:
        """The Redis URL as it may be logged or printed: without its password."""
        return redact_url(self.redis_url)

    def kafka_client_options(self) -> dict[str, Any]:
        """Options shared by every kafka-python / aiokafka client the product creates:
        security protocol, TLS context, SASL mechanism and credentials (streams.security)."""
        return kafka_client_options(self)


class TopicNames:
    """Topic names with the configured prefix: one place spells each name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.purchases = f"{prefix}purchases"
        self.interactions = f"{prefix}interactions"
        self.dead_letters = f"{prefix}dead-letters"
        self.segment_changes = f"{prefix}segment-changes"
        self.churn_alerts = f"{prefix}churn-alerts"
        self.retention_offers = f"{prefix}retention-offers"
        self.offer_outcomes = f"{prefix}offer-outcomes"
        self.profiles = f"{prefix}profiles"
        self.customer_erased = f"{prefix}customer-erased"
        self.model = f"{prefix}model"

    def inputs(self) -> list[str]:
        return [self.purchases, self.interactions]

    def outputs(self) -> list[str]:
        return [
            self.dead_letters,
            self.segment_changes,
            self.churn_alerts,
            self.retention_offers,
            self.offer_outcomes,
            self.profiles,
            self.customer_erased,
        ]


def load_settings() -> Settings:
    """Read settings from the environment; raises a pydantic ValidationError naming the field."""
    return Settings()


def load_rule_book(settings: Settings, path: str | Path | None = None) -> Rules:
    """The rules a deployment runs with: ``path`` (a ``--rules`` option), else
    ``RFM_RULES_FILE``, else the packaged defaults; then the lateness settings of the
    environment (``RFM_ALLOWED_LATENESS_SECONDS``, ``RFM_LATE_HORIZON_DAYS``) over the file's.

    Raises FileNotFoundError, or a pydantic ValidationError naming the field.
    """
    rules = load_rules(path if path is not None else settings.rules_file)
    overrides: dict[str, float] = {}
    if settings.allowed_lateness_seconds is not None:
        overrides["allowed_lateness_seconds"] = settings.allowed_lateness_seconds
    if settings.late_horizon_days is not None:
        overrides["late_horizon_days"] = settings.late_horizon_days
    if not overrides:
        return rules
    return Rules.model_validate({**rules.model_dump(), **overrides})


def prepare_data_dir(settings: Settings) -> Path:
    """Create the worker's data directory with its parents, and return it.

    Faust creates only the last level of its data dir, so the default ``.local/worker``
    failed with FileNotFoundError in a directory without ``.local/``.
    """
    path = Path(settings.data_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def erasure_salt_is_default(settings: Settings) -> bool:
    """Whether the erasure salt is the published default (the worker warns at start-up)."""
    return settings.erasure_salt.get_secret_value() == DEFAULT_SALT
