"""Security settings: validation with messages that name the variable, client arguments built
in one place, and no password in the settings' repr, in validation errors or in health output.

No services: the certificates are made with openssl in a temporary directory, and the health
checks are pointed at a closed port.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import errors as aiokafka_errors
from pydantic import ValidationError

from streams.config import Settings
from streams.security import (
    faust_broker_options,
    kafka_client_options,
    kafka_failure_reason,
    redact_url,
    redis_options,
    security_env,
)
from streams.tools.health import check_kafka, check_redis

KAFKA_PASSWORD = "kafka-pw-3f9a1c"  # distinctive, so a leak is found by a plain search
REDIS_PASSWORD = "redis-pw-77e0b2"
KEY_PASSWORD = "key-pw-51d2aa"
TOKEN = "api-token-0c4e9f"
SECRETS = (KAFKA_PASSWORD, REDIS_PASSWORD, KEY_PASSWORD, TOKEN)


@pytest.fixture(autouse=True)
def no_rfm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's RFM_* variables (e.g. exported from stack.env) must not leak in."""
    for name in list(os.environ):
        if name.startswith("RFM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, a client certificate it signed (key in its own file) and a non-PEM file."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail(
            "openssl not found: apt-get install -y openssl (deploy/local/stack.sh needs it)"
        )
    d = tmp_path_factory.mktemp("pki")

    def run(command: str) -> None:
        subprocess.run(
            [openssl, *command.split()], cwd=d, check=True, capture_output=True, timeout=60
        )

    run("req -x509 -newkey rsa:2048 -nodes -subj /CN=test-ca -days 2 -keyout ca.key -out ca.pem")
    run("req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr")
    run("x509 -req -in client.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 2 -out client.pem")
    (d / "not-pem.txt").write_text("this is not a certificate\n")
    return {
        "ca": d / "ca.pem",
        "ca_key": d / "ca.key",
        "client_cert": d / "client.pem",
        "client_key": d / "client.key",
        "not_pem": d / "not-pem.txt",
    }


@pytest.fixture
def client_cert(pki: dict[str, Path]) -> tuple[Path, Path]:
    return pki["client_cert"], pki["client_key"]


def sasl_ssl(cafile: Path | None = None, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": "broker-1:9094,broker-2:9094",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_username": "rfm",
        "kafka_sasl_password": KAFKA_PASSWORD,
    }
    if cafile is not None:
        values["kafka_ssl_cafile"] = str(cafile)
    return Settings(**(values | more))


def error_text(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return str(caught.value)


# ---- validation: each mistake is refused with the variable to set -------------------------


def test_plaintext_is_the_default_and_needs_nothing() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert redis_options(settings) == {}


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_credentials_names_both_variables(protocol: str) -> None:
    text = error_text(kafka_security_protocol=protocol)
    assert f"RFM_KAFKA_SECURITY_PROTOCOL={protocol}" in text
    assert "set RFM_KAFKA_SASL_USERNAME and RFM_KAFKA_SASL_PASSWORD" in text


def test_sasl_without_password_names_the_password_only() -> None:
    text = error_text(kafka_security_protocol="SASL_SSL", kafka_sasl_username="rfm")
    assert "set RFM_KAFKA_SASL_PASSWORD" in text
    assert "RFM_KAFKA_SASL_USERNAME" not in text


def test_sasl_without_username_names_the_username_only() -> None:
    text = error_text(kafka_security_protocol="SASL_SSL", kafka_sasl_password=KAFKA_PASSWORD)
    assert "set RFM_KAFKA_SASL_USERNAME" in text
    assert "RFM_KAFKA_SASL_PASSWORD" not in text
    assert KAFKA_PASSWORD not in text


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_credentials_without_sasl_are_refused_not_silently_unused(protocol: str) -> None:
    text = error_text(
        kafka_security_protocol=protocol,
        kafka_sasl_username="rfm",
        kafka_sasl_password=KAFKA_PASSWORD,
    )
    assert "RFM_KAFKA_SASL_PASSWORD is set" in text
    assert f"RFM_KAFKA_SECURITY_PROTOCOL={protocol} sends no credentials" in text
    assert KAFKA_PASSWORD not in text


def test_tls_files_without_tls_are_refused(pki: dict[str, Path]) -> None:
    text = error_text(kafka_ssl_cafile=str(pki["ca"]))
    assert "RFM_KAFKA_SSL_CAFILE is set" in text
    assert "does not use TLS" in text
    assert "SSL or SASL_SSL" in text


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    text = error_text(kafka_security_protocol="SSL", kafka_ssl_cafile=str(missing))
    assert f"RFM_KAFKA_SSL_CAFILE={missing}: no such file" in text


def test_a_ca_file_that_is_not_pem_is_named(pki: dict[str, Path]) -> None:
    text = error_text(kafka_security_protocol="SSL", kafka_ssl_cafile=str(pki["not_pem"]))
    assert f"RFM_KAFKA_SSL_CAFILE={pki['not_pem']}: not a PEM file" in text


def test_a_client_key_needs_its_certificate(pki: dict[str, Path]) -> None:
    text = error_text(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki["ca"]),
        kafka_ssl_keyfile=str(pki["ca_key"]),
    )
    assert "RFM_KAFKA_SSL_KEYFILE needs RFM_KAFKA_SSL_CERTFILE" in text


def test_a_certificate_without_its_key_is_named(pki: dict[str, Path]) -> None:
    text = error_text(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki["ca"]),
        kafka_ssl_certfile=str(pki["ca"]),  # a certificate, but no private key anywhere
    )
    assert f"RFM_KAFKA_SSL_CERTFILE={pki['ca']}: no certificate and matching private key" in text


def test_redis_tls_files_need_rediss(pki: dict[str, Path]) -> None:
    text = error_text(redis_url="redis://h:6379/0", redis_ssl_cafile=str(pki["ca"]))
    assert "RFM_REDIS_SSL_CAFILE is set, but RFM_REDIS_URL uses redis://" in text
    assert "use rediss://" in text


def test_the_redis_password_may_not_be_set_twice() -> None:
    text = error_text(
        redis_url=f"redis://rfm:{REDIS_PASSWORD}@h:6379/0", redis_password=REDIS_PASSWORD
    )
    assert "in RFM_REDIS_URL and in RFM_REDIS_PASSWORD" in text
    assert REDIS_PASSWORD not in text


def test_an_unknown_redis_scheme_is_refused_without_echoing_the_url() -> None:
    text = error_text(redis_url=f"http://rfm:{REDIS_PASSWORD}@h:6379/0")
    assert "RFM_REDIS_URL must start with redis://, rediss:// (TLS) or unix://" in text
    assert REDIS_PASSWORD not in text


def test_invalid_values_are_not_echoed_in_errors() -> None:
    """hide_input_in_errors: even a plain field error does not repeat what it was given."""
    text = error_text(kafka_sasl_mechanism=f"SCRAM-{KAFKA_PASSWORD}")
    assert "kafka_sasl_mechanism" in text
    assert KAFKA_PASSWORD not in text


def test_environment_variables_configure_everything(
    monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]
) -> None:
    env = {
        "RFM_KAFKA_BOOTSTRAP": "k:9094",
        "RFM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "RFM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "RFM_KAFKA_SASL_USERNAME": "rfm",
        "RFM_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "RFM_KAFKA_SSL_CAFILE": str(pki["ca"]),
        "RFM_KAFKA_SSL_CHECK_HOSTNAME": "false",
        "RFM_REDIS_URL": "rediss://rfm@r:6380/0",
        "RFM_REDIS_PASSWORD": REDIS_PASSWORD,
        "RFM_REDIS_SSL_CAFILE": str(pki["ca"]),
        # empty means unset (ConfigMaps and .env files often carry empty keys)
        "RFM_KAFKA_SSL_CERTFILE": "",
        "RFM_REDIS_SSL_KEYFILE": " ",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == KAFKA_PASSWORD
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-256"
    assert settings.kafka_ssl_check_hostname is False
    assert settings.kafka_ssl_certfile is None
    assert settings.redis_ssl_keyfile is None
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == REDIS_PASSWORD


# ---- no secret in what gets printed ---------------------------------------------------------


def test_repr_and_str_show_no_secret(pki: dict[str, Path], client_cert: tuple[Path, Path]) -> None:
    cert, key = client_cert
    settings = sasl_ssl(
        pki["ca"],
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
        kafka_ssl_key_password=KEY_PASSWORD,
        redis_url=f"rediss://rfm:{REDIS_PASSWORD}@r:6380/0",
        api_token=TOKEN,
    )
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        for secret in SECRETS:
            assert secret not in text
    assert "rediss://rfm:***@r:6380/0" in repr(settings)
    assert settings.redis_shown == "rediss://rfm:***@r:6380/0"
    # the real values are still there for the clients
    assert settings.redis_url == f"rediss://rfm:{REDIS_PASSWORD}@r:6380/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://rfm:{REDIS_PASSWORD}@h:6379/0", "redis://rfm:***@h:6379/0"),
        (f"rediss://:{REDIS_PASSWORD}@h:6380/1", "rediss://:***@h:6380/1"),
        ("rediss://rfm@h:6380/0", "rediss://rfm@h:6380/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://h:6379/0?password={REDIS_PASSWORD}&db=2", "redis://h:6379/0?password=***&db=2"),
        (f"redis://u:{REDIS_PASSWORD}@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        (f"redis://u:p@ss:{REDIS_PASSWORD}@h:6379", "redis://u:***@h:6379"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
        (f"redis://u:{REDIS_PASSWORD}@[::1:6379/0", "<an unparsable URL>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert REDIS_PASSWORD not in redact_url(url)


def test_redis_health_output_never_shows_the_password(unused_tcp_port: int) -> None:
    settings = Settings(redis_url=f"redis://rfm:{REDIS_PASSWORD}@127.0.0.1:{unused_tcp_port}/0")
    check = check_redis(settings, timeout=2)
    assert not check.ok
    assert check.address == f"redis://rfm:***@127.0.0.1:{unused_tcp_port}/0"
    assert REDIS_PASSWORD not in check.message()


def test_kafka_health_output_never_shows_the_password(unused_tcp_port: int) -> None:
    settings = sasl_ssl(kafka_bootstrap=f"127.0.0.1:{unused_tcp_port}")
    check = check_kafka(settings, timeout=2)
    assert not check.ok
    assert "cannot connect" in check.detail
    assert KAFKA_PASSWORD not in check.message()


def test_an_authentication_failure_is_explained_without_the_password() -> None:
    settings = sasl_ssl()
    reason = kafka_failure_reason(
        settings, aiokafka_errors.SaslAuthenticationFailed("invalid credentials"), 5.0
    )
    assert reason.startswith("authentication failed")
    assert "RFM_KAFKA_SASL_USERNAME=rfm and RFM_KAFKA_SASL_PASSWORD" in reason
    assert KAFKA_PASSWORD not in reason


@pytest.mark.parametrize(
    ("protocol", "error", "expected"),
    [
        ("SASL_SSL", ssl.SSLCertVerificationError("verify failed"), "RFM_KAFKA_SSL_CAFILE"),
        ("SASL_SSL", ConnectionResetError(), "is this a TLS listener?"),
        ("SASL_SSL", aiokafka_errors.UnsupportedSaslMechanismError(), "RFM_KAFKA_SASL_MECHANISM"),
        ("PLAINTEXT", aiokafka_errors.KafkaConnectionError("closed"), "must be SSL or SASL_SSL"),
        ("SASL_SSL", TimeoutError(), "no answer within 5 s"),
    ],
)
def test_connection_failures_name_the_setting(
    protocol: str, error: Exception, expected: str
) -> None:
    settings = sasl_ssl() if protocol == "SASL_SSL" else Settings()
    assert expected in kafka_failure_reason(settings, error, 5.0)


# ---- one place builds the client arguments --------------------------------------------------


def test_kafka_options_for_sasl_ssl(pki: dict[str, Path]) -> None:
    settings = sasl_ssl(pki["ca"])
    options = kafka_client_options(settings)
    assert settings.kafka_client_options().keys() == options.keys()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "rfm"
    assert options["sasl_plain_password"] == KAFKA_PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # only the configured CA is trusted, not the system's
    trusted = context.get_ca_certs()
    assert len(trusted) == 1


def test_kafka_options_for_tls_with_a_client_certificate(
    pki: dict[str, Path], client_cert: tuple[Path, Path]
) -> None:
    cert, key = client_cert
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki["ca"]),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
        kafka_ssl_check_hostname=False,
    )
    options = kafka_client_options(settings)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["ssl_context"].check_hostname is False
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_faust_gets_sasl_credentials_with_the_tls_context(pki: dict[str, Path]) -> None:
    options = faust_broker_options(sasl_ssl(pki["ca"]))
    assert options["broker"] == ["kafka://broker-1:9094", "kafka://broker-2:9094"]
    credentials = options["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "rfm"
    assert credentials.password == KAFKA_PASSWORD
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert KAFKA_PASSWORD not in repr(credentials)


def test_faust_gets_ssl_credentials_or_none(pki: dict[str, Path]) -> None:
    tls = faust_broker_options(
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(pki["ca"]))
    )
    assert isinstance(tls["broker_credentials"], faust.SSLCredentials)
    plain = faust_broker_options(Settings(kafka_bootstrap="k:9092"))
    assert plain == {"broker": ["kafka://k:9092"], "broker_credentials": None}
    sasl_plaintext = faust_broker_options(
        Settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="rfm",
            kafka_sasl_password=KAFKA_PASSWORD,
        )
    )["broker_credentials"]
    assert sasl_plaintext.protocol.value == "SASL_PLAINTEXT"
    assert sasl_plaintext.ssl_context is None


def test_redis_options_for_tls_and_auth(pki: dict[str, Path]) -> None:
    settings = Settings(
        redis_url="rediss://rfm@r:6380/0",
        redis_password=REDIS_PASSWORD,
        redis_ssl_cafile=str(pki["ca"]),
    )
    options = redis_options(settings)
    assert options["password"] == REDIS_PASSWORD
    assert options["ssl_ca_certs"] == str(pki["ca"])
    assert options["ssl_cert_reqs"] == "required"
    assert options["ssl_check_hostname"] is True
    assert redis_options(Settings(redis_password=REDIS_PASSWORD)) == {"password": REDIS_PASSWORD}


def test_security_env_reproduces_the_settings_in_a_subprocess(
    monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]
) -> None:
    original = sasl_ssl(
        pki["ca"],
        redis_url="rediss://rfm@r:6380/0",
        redis_password=REDIS_PASSWORD,
        redis_ssl_cafile=str(pki["ca"]),
        redis_ssl_check_hostname=False,
    )
    env = security_env(original)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RFM_KAFKA_BOOTSTRAP", original.kafka_bootstrap)
    monkeypatch.setenv("RFM_REDIS_URL", original.redis_url)
    again = Settings()
    fields = [f for f in Settings.model_fields if f.startswith(("kafka_", "redis_"))]
    for field in fields:
        mine, theirs = getattr(original, field), getattr(again, field)
        if hasattr(mine, "get_secret_value"):
            mine, theirs = mine.get_secret_value(), theirs.get_secret_value()
        assert mine == theirs, field
