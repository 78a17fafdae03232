"""Client security: the one place that turns :class:`~streams.config.Settings` into TLS, SASL
and AUTH arguments for every Kafka and Redis client rfm-stream creates.

- :func:`kafka_client_options` — keyword arguments for kafka-python *and* aiokafka clients
  (``security_protocol``, ``ssl_context``, ``sasl_*``: both libraries spell them the same);
  ``Settings.kafka_client_options()`` returns it.
- :func:`faust_broker_options` — ``broker=`` and ``broker_credentials=`` for ``faust.App``.
- :func:`redis_options` — keyword arguments for ``Redis.from_url`` (sync and asyncio alike).
- :func:`redact_url` — a URL safe to log or print (password replaced by ``***``).
- :func:`security_problems` — the checks behind the settings' validation, with messages that
  name the variable to set.
- :func:`probe_kafka` — one connection with these options, and a reason a person can act on
  when it fails (wrong password, untrusted certificate, a TLS listener spoken to in plain
  text …), in bounded time.

Secrets stay :class:`~pydantic.SecretStr` in the settings and are revealed only here, when a
client is built; nothing in this module logs them.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from pydantic import SecretStr

T = TypeVar("T")

SASL_PROTOCOLS: Final = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS: Final = frozenset({"SSL", "SASL_SSL"})
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
REDACTED: Final = "***"
_SECRET_QUERY_WORDS: Final = ("pass", "secret", "token", "key")


class SecuritySettings(Protocol):
    """The settings this module reads. A protocol, not ``streams.config.Settings``, so that
    ``config`` may use this module to validate itself without an import circle."""

    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str: ...
    @property
    def kafka_sasl_username(self) -> str | None: ...
    @property
    def kafka_sasl_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_cafile(self) -> str | None: ...
    @property
    def kafka_ssl_certfile(self) -> str | None: ...
    @property
    def kafka_ssl_keyfile(self) -> str | None: ...
    @property
    def kafka_ssl_key_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_check_hostname(self) -> bool: ...
    @property
    def redis_url(self) -> str: ...
    @property
    def redis_password(self) -> SecretStr | None: ...
    @property
    def redis_ssl_cafile(self) -> str | None: ...
    @property
    def redis_ssl_certfile(self) -> str | None: ...
    @property
    def redis_ssl_keyfile(self) -> str | None: ...
    @property
    def redis_ssl_check_hostname(self) -> bool: ...


# ---- Kafka ---------------------------------------------------------------------------------


def uses_sasl(settings: SecuritySettings) -> bool:
    return settings.kafka_security_protocol in SASL_PROTOCOLS


def uses_tls(settings: SecuritySettings) -> bool:
    return settings.kafka_security_protocol in TLS_PROTOCOLS


def kafka_ssl_context(settings: SecuritySettings) -> ssl.SSLContext | None:
    """The TLS context for Kafka, or None when the protocol has no TLS.

    Trusts ``RFM_KAFKA_SSL_CAFILE`` only when it is set (else the system's CAs), verifies the
    broker's certificate always and its host name unless ``RFM_KAFKA_SSL_CHECK_HOSTNAME`` is
    false, TLS 1.2 or newer; presents a client certificate when one is configured.
    """
    if not uses_tls(settings):
        return None
    return _tls_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
        key_password=_reveal(settings.kafka_ssl_key_password),
        check_hostname=settings.kafka_ssl_check_hostname,
    )


def kafka_client_options(settings: SecuritySettings) -> dict[str, Any]:
    """Security keyword arguments for KafkaProducer/KafkaConsumer/KafkaAdminClient
    (kafka-python) and AIOKafkaProducer/AIOKafkaConsumer (aiokafka)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if uses_sasl(settings):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = _reveal(settings.kafka_sasl_password)
    return options


def faust_broker_options(settings: SecuritySettings) -> dict[str, Any]:
    """``broker`` (one ``kafka://host:port`` URL per bootstrap server) and
    ``broker_credentials`` for ``faust.App``: None, ``SSLCredentials`` or ``SASLCredentials``
    (with the TLS context for SASL_SSL); Faust hands them to its consumer, producer and admin."""
    import faust

    servers = [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]
    credentials: Any = None
    context = kafka_ssl_context(settings)
    if uses_sasl(settings):
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=_reveal(settings.kafka_sasl_password),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {
        "broker": [f"kafka://{server}" for server in servers],
        "broker_credentials": credentials,
    }


def describe_kafka_security(settings: SecuritySettings) -> str:
    """A one-line summary without secrets, e.g. ``SASL_SSL (SCRAM-SHA-512 as rfm)``."""
    text: str = settings.kafka_security_protocol
    if uses_sasl(settings):
        text += f" ({settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username})"
    return text


# ---- Redis ---------------------------------------------------------------------------------


def redis_options(settings: SecuritySettings) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` / ``redis.asyncio.Redis.from_url``.

    The URL carries the scheme (``rediss://`` = TLS), host, user and optionally the password;
    ``RFM_REDIS_PASSWORD`` supplies the password instead, and ``RFM_REDIS_SSL_*`` the CA and
    client certificate for ``rediss://``.
    """
    options: dict[str, Any] = {}
    password = _reveal(settings.redis_password)
    if password is not None:
        options["password"] = password
    if urlsplit(settings.redis_url).scheme == "rediss":
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = settings.redis_ssl_check_hostname
        options["ssl_min_version"] = ssl.TLSVersion.TLSv1_2
        if settings.redis_ssl_cafile:
            options["ssl_ca_certs"] = settings.redis_ssl_cafile
        if settings.redis_ssl_certfile:
            options["ssl_certfile"] = settings.redis_ssl_certfile
            options["ssl_keyfile"] = settings.redis_ssl_keyfile
    return options


def redact_url(url: str) -> str:
    """``url`` with its password (and any password-like query value) replaced by ``***``.

    ``rediss://rfm:s3cret@host:6380/0`` → ``rediss://rfm:***@host:6380/0``. What cannot be
    parsed is not echoed at all.
    """
    try:
        parts = urlsplit(url)
        shown = url
        if "@" in parts.netloc:
            userinfo, _, hostinfo = parts.netloc.rpartition("@")
            user, has_password, _ = userinfo.partition(":")
            netloc = f"{user}:{REDACTED}@{hostinfo}" if has_password else f"{user}@{hostinfo}"
            shown = shown.replace(parts.netloc, netloc, 1)  # the first one follows the scheme
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            if any(_secret_name(k) for k, _ in pairs):
                query = urlencode(
                    [(k, REDACTED if _secret_name(k) else v) for k, v in pairs],
                    safe="*",
                    quote_via=quote,
                )
                fragment = f"#{parts.fragment}" if parts.fragment else ""
                shown = f"{shown.partition('?')[0]}?{query}{fragment}"
        return shown
    except ValueError:
        return "<an unparsable URL>"


def _secret_name(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_QUERY_WORDS)


# ---- Validation ----------------------------------------------------------------------------


def security_problems(settings: SecuritySettings) -> list[str]:
    """What is wrong with the security settings, each naming the variable(s) to change."""
    problems: list[str] = []
    protocol = settings.kafka_security_protocol
    where = f"RFM_KAFKA_SECURITY_PROTOCOL={protocol}"
    if uses_sasl(settings):
        missing = [
            name
            for name, value in (
                ("RFM_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("RFM_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if value is None
        ]
        if missing:
            problems.append(
                f"{where} logs in with {settings.kafka_sasl_mechanism}: set {' and '.join(missing)}"
            )
    else:
        for name, value in (
            ("RFM_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
            ("RFM_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
        ):
            if value is not None:
                problems.append(
                    f"{name} is set, but {where} sends no credentials: "
                    "set RFM_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT), or unset it"
                )
    kafka_files = {
        "RFM_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "RFM_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "RFM_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    if uses_tls(settings):
        problems += _tls_file_problems(
            kafka_files,
            "RFM_KAFKA_SSL_CERTFILE",
            "RFM_KAFKA_SSL_KEYFILE",
            key_password=_reveal(settings.kafka_ssl_key_password),
        )
    else:
        for name, value in kafka_files.items():
            if value is not None:
                problems.append(
                    f"{name} is set, but {where} does not use TLS: "
                    "set RFM_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, or unset it"
                )

    try:
        parts = urlsplit(settings.redis_url)
        url_password = parts.password
    except ValueError:
        return [*problems, "RFM_REDIS_URL is not a valid URL (redis://, rediss:// or unix://)"]
    if parts.scheme not in REDIS_SCHEMES:
        problems.append(
            f"RFM_REDIS_URL must start with redis://, rediss:// (TLS) or unix://, "
            f"not {parts.scheme or '(no scheme)'}://"
        )
    if settings.redis_password is not None and url_password:
        problems.append(
            "the Redis password is set twice, in RFM_REDIS_URL and in RFM_REDIS_PASSWORD: "
            "keep one (RFM_REDIS_PASSWORD keeps it out of the URL)"
        )
    redis_files = {
        "RFM_REDIS_SSL_CAFILE": settings.redis_ssl_cafile,
        "RFM_REDIS_SSL_CERTFILE": settings.redis_ssl_certfile,
        "RFM_REDIS_SSL_KEYFILE": settings.redis_ssl_keyfile,
    }
    if parts.scheme == "rediss":
        problems += _tls_file_problems(
            redis_files, "RFM_REDIS_SSL_CERTFILE", "RFM_REDIS_SSL_KEYFILE", key_password=None
        )
    else:
        for name, value in redis_files.items():
            if value is not None:
                problems.append(
                    f"{name} is set, but RFM_REDIS_URL uses {parts.scheme}://, without TLS: "
                    "use rediss://host:port/db, or unset it"
                )
    return problems


def _tls_file_problems(
    files: dict[str, str | None], cert_name: str, key_name: str, *, key_password: str | None
) -> list[str]:
    problems = [
        f"{name}={path}: {reason}"
        for name, path in files.items()
        if path is not None and (reason := _unreadable(path)) is not None
    ]
    cafile, certfile, keyfile = files.values()
    if keyfile is not None and certfile is None:
        problems.append(f"{key_name} needs {cert_name} (the client certificate it belongs to)")
    if problems:
        return problems
    ca_name = next(iter(files))
    try:
        _tls_context(cafile=cafile, certfile=None, keyfile=None, key_password=None)
    except (ssl.SSLError, OSError) as exc:
        problems.append(f"{ca_name}={cafile}: not a PEM file of CA certificates ({exc})")
    if certfile is not None:
        try:
            ssl.create_default_context().load_cert_chain(certfile, keyfile, password=key_password)
        except (ssl.SSLError, OSError) as exc:
            problems.append(
                f"{cert_name}={certfile}: no certificate and matching private key there "
                f"({key_name} if the key is in its own file) ({exc})"
            )
    return problems


def _unreadable(path: str) -> str | None:
    if not os.path.exists(path):
        return "no such file"
    if not os.path.isfile(path):
        return "not a file"
    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None


def _tls_context(
    *,
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
    key_password: str | None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile, password=key_password)
    return context


def _reveal(secret: Any) -> str | None:
    return None if secret is None else str(secret.get_secret_value())


# ---- Subprocesses --------------------------------------------------------------------------


def security_env(settings: SecuritySettings) -> dict[str, str]:
    """The ``RFM_*`` security variables that make a subprocess (a worker) connect like
    ``settings``; secrets included, so pass it only to a child's environment."""
    values: dict[str, Any] = {
        "RFM_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "RFM_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "RFM_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "RFM_KAFKA_SASL_PASSWORD": _reveal(settings.kafka_sasl_password),
        "RFM_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "RFM_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "RFM_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
        "RFM_KAFKA_SSL_KEY_PASSWORD": _reveal(settings.kafka_ssl_key_password),
        "RFM_KAFKA_SSL_CHECK_HOSTNAME": str(settings.kafka_ssl_check_hostname).lower(),
        "RFM_REDIS_PASSWORD": _reveal(settings.redis_password),
        "RFM_REDIS_SSL_CAFILE": settings.redis_ssl_cafile,
        "RFM_REDIS_SSL_CERTFILE": settings.redis_ssl_certfile,
        "RFM_REDIS_SSL_KEYFILE": settings.redis_ssl_keyfile,
        "RFM_REDIS_SSL_CHECK_HOSTNAME": str(settings.redis_ssl_check_hostname).lower(),
    }
    return {name: str(value) for name, value in values.items() if value is not None}


# ---- Diagnosis -----------------------------------------------------------------------------


def probe_kafka(
    settings: SecuritySettings, host: str, port: int, timeout: float = 5.0
) -> str | None:
    """Open one connection to ``host:port`` as the clients would (TLS, SASL login) and return
    None when it works, else what went wrong and which setting to look at.

    kafka-python only says "Unable to bootstrap" after its whole timeout, whatever the cause;
    this names the cause, within ``timeout`` seconds.
    """
    from aiokafka.conn import create_conn

    async def connect() -> None:
        conn = await asyncio.wait_for(
            create_conn(
                host,
                port,
                client_id="rfm-stream-probe",
                request_timeout_ms=int(timeout * 1000),
                **kafka_client_options(settings),
            ),
            timeout,
        )
        conn.close()

    try:
        _run(connect())
    except Exception as exc:
        return kafka_failure_reason(settings, exc, timeout)
    return None


def kafka_failure_reason(settings: SecuritySettings, exc: BaseException, timeout: float) -> str:
    """A failed connection, in words, with the setting that most likely needs changing."""
    from aiokafka import errors as kafka_errors

    protocol = settings.kafka_security_protocol
    text = str(exc) or type(exc).__name__
    if isinstance(exc, kafka_errors.SaslAuthenticationFailed):
        return (
            f"authentication failed ({text}): check RFM_KAFKA_SASL_USERNAME="
            f"{settings.kafka_sasl_username} and RFM_KAFKA_SASL_PASSWORD "
            f"(and RFM_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism})"
        )
    if isinstance(exc, kafka_errors.UnsupportedSaslMechanismError):
        return (
            f"the listener does not accept SASL mechanism {settings.kafka_sasl_mechanism}: "
            "set RFM_KAFKA_SASL_MECHANISM to one the broker enables"
        )
    if isinstance(exc, kafka_errors.IllegalSaslStateError):
        return (
            f"the listener does not speak SASL, but RFM_KAFKA_SECURITY_PROTOCOL={protocol}: "
            "is RFM_KAFKA_BOOTSTRAP the address of the SASL listener?"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or text
        if "mismatch" in detail.lower():
            return (
                f"the broker's TLS certificate is not for this host name ({detail}): connect "
                "by a name the certificate lists, or set RFM_KAFKA_SSL_CHECK_HOSTNAME=false"
            )
        return (
            f"the broker's TLS certificate is not trusted ({detail}): set RFM_KAFKA_SSL_CAFILE "
            "to the CA certificate that signed it"
        )
    if uses_tls(settings) and isinstance(exc, ssl.SSLError | ConnectionResetError | EOFError):
        return (
            f"TLS handshake failed ({text}): is this a TLS listener? "
            f"RFM_KAFKA_SECURITY_PROTOCOL={protocol} expects one"
        )
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s (a TLS or SASL listener spoken to as {protocol}?)"
    if not uses_tls(settings) and isinstance(exc, kafka_errors.KafkaConnectionError):
        return (
            f"the broker closed the connection ({text}); if this listener uses TLS, "
            f"RFM_KAFKA_SECURITY_PROTOCOL={protocol} must be SSL or SASL_SSL"
        )
    return f"{type(exc).__name__}: {text}"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, in a thread of its own.

    Not ``asyncio.run`` in the caller's thread: it leaves that thread without a current
    event loop, and the Faust worker started after the start-up checks needs one.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="rfm-probe", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
