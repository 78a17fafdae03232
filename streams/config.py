"""One typed settings object, read from the environment (prefix ``RFM_``) and nowhere else.

Defaults work with the local stack started by ``deploy/local/stack.sh``. The stack writes the
ports it actually chose to ``.local/stack.env``; the ``dev`` script exports that file, so the
same variables drive the worker, the CLI, the tests and docker-compose.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

StoreKind = Literal["memory", "rocksdb"]


class Settings(BaseSettings):
    """Everything a worker, the CLI or a test needs to find Kafka, Redis and its topics."""

    model_config = SettingsConfigDict(env_prefix="RFM_", extra="ignore", frozen=True)

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port]")
    topic_prefix: str = Field("rfm.", description="prefix of every topic the product uses")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of topics it creates")
    replication_factor: int = Field(1, ge=1, le=16)
    app_id: str = Field("rfm-stream", description="consumer group id and Faust app id")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"

    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0")
    redis_prefix: str = Field("rfm:", description="prefix of every Redis key the product owns")

    # --- Worker ----------------------------------------------------------------------------
    store: StoreKind = Field("memory", description="table store: memory, or rocksdb on disk")
    data_dir: str = Field(".local/worker", description="where the worker keeps local state")
    web_port: int = Field(6066, ge=0, le=65535, description="HTTP API / dashboard / metrics")
    web_host: str = Field("127.0.0.1")
    live_clock: bool = Field(True, description="let the wall clock move time when idle")
    tick_seconds: float = Field(1.0, gt=0, description="how often time-driven work runs")
    currency: str = Field("USD", min_length=3, max_length=3, description="reporting currency")
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"
    api_token: SecretStr | None = Field(
        None, description="Bearer token for /api/* and /metrics; unset = no auth"
    )

    @cached_property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def kafka_client_options(self) -> dict[str, Any]:
        """Options shared by every kafka-python / aiokafka client the product creates."""
        return {"security_protocol": self.kafka_security_protocol}


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
        self.profiles = f"{prefix}profiles"
        self.model = f"{prefix}model"

    def inputs(self) -> list[str]:
        return [self.purchases, self.interactions]

    def outputs(self) -> list[str]:
        return [
            self.dead_letters,
            self.segment_changes,
            self.churn_alerts,
            self.retention_offers,
            self.profiles,
        ]


def load_settings() -> Settings:
    """Read settings from the environment; raises a pydantic ValidationError naming the field."""
    return Settings()
