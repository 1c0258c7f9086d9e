"""Configuration: a TOML file overridden by ``TASKD_SECTION__KEY`` environment variables.

The file is the one given (``--config``, ``TASKD_CONFIG``), else the project's ``taskd.toml``
found from the working directory up (``find_config``), else ``./config.toml``. Relative paths
in a file (``database.data_dir``, ``tasks.pythonpath``) are relative to the file's directory.

pydantic-settings does the parsing; this module only declares the keys, their defaults and
their limits, and turns a validation failure into one line that names the key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from taskd.durations import to_seconds
from taskd.errors import ConfigError
from taskd.webhook_rules import check_events, check_filter, check_name, check_secret, check_url

ENV_PREFIX = "TASKD_"
ENV_DELIMITER = "__"
PROJECT_CONFIG = "taskd.toml"
"""The project's configuration file, found from the working directory up (``taskd init``)."""
LEGACY_CONFIG = "config.toml"
"""Read from the working directory only, when no ``taskd.toml`` is found."""

Seconds = Annotated[float, BeforeValidator(to_seconds), Field(ge=0)]


def _string_list(value: Any) -> Any:
    """Lists from the environment: JSON (``["a", "b"]``) or comma-separated (``a,b``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


# NoDecode: pydantic-settings would otherwise insist on JSON and fail with a message that
# names the section, not the variable.
StringList = Annotated[list[str], NoDecode, BeforeValidator(_string_list)]
PathList = Annotated[list[Path], NoDecode, BeforeValidator(_string_list)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str = ""
    """PostgreSQL DSN. Empty: the embedded server under ``data_dir`` (started on demand)."""
    direct_url: str = ""
    """DSN of the session connections (LISTEN, the worker lock, the event relay, the change
    feed, the migrations' lock): PostgreSQL itself or a session-mode pool, never a
    transaction pooler. Empty: ``url``."""
    data_dir: Path = Path(".taskd/pgdata")
    """Where the embedded PostgreSQL keeps its data when ``url`` is empty (relative to the
    config file)."""
    pool_min_size: int = Field(2, ge=1)
    """Connections each pool opens at start."""
    pool_max_size: int = Field(10, ge=2)
    """Most connections of each pool."""
    statement_cache_size: int = Field(1024, ge=0)
    """0 when the pool goes through PgBouncer in transaction mode (before 1.21, or without
    ``max_prepared_statements``): asyncpg then sends every statement unnamed."""
    connect_timeout: Seconds = 10.0
    """Longest wait for a new connection to the database; one that times out (or that a
    starting server refuses for now) is tried again, 3 tries in all."""
    # PostgreSQL takes at most 2^31-1 ms (24.8 days) for either
    lock_timeout: Seconds = Field(5.0, gt=0, le=2_147_483)
    """Longest wait of a daemon statement for a lock another transaction holds (a run's row
    locked by an application's open transaction): past it the statement fails and is retried."""
    statement_timeout: Seconds = Field(300.0, gt=0, le=2_147_483)
    """Longest any statement of the worker may run; a guard, far above any normal statement."""
    migrate: bool = True
    """Whether a starting daemon applies pending migrations; false: it only checks them and
    refuses to start unless the schema is current (migrations applied by `taskd migrate` or a
    team's own tool, from `taskd migrate --sql`)."""

    @model_validator(mode="after")
    def _lock_wait_within_statement(self) -> DatabaseSettings:
        if self.lock_timeout > self.statement_timeout:
            raise ValueError(
                f"lock_timeout ({self.lock_timeout:g}s) must not exceed statement_timeout "
                f"({self.statement_timeout:g}s)"
            )
        return self

    @field_validator("url", "direct_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        # What asyncpg would refuse at connect, refused here so the error names the key.
        if not value:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("postgresql", "postgres"):
            raise ValueError("expected postgresql://user@host:port/database")
        # the credentials end at the last "@" (a password may hold "/", "?" or ":"): cut
        # them off first, so that no error can quote them
        hosts = rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0]
        for spec in hosts.split(","):
            after_address = spec.rpartition("]")[2] if spec.startswith("[") else spec
            _, colon, port = after_address.partition(":")
            if colon and port and not port.isdigit():
                raise ValueError(f"port {port!r} of host {spec.split(':')[0]!r} is not a number")
        return value

    @model_validator(mode="after")
    def _direct_beside_url(self) -> DatabaseSettings:
        # the embedded server's pools beside some other database's sessions: never meant
        if self.direct_url and not self.url:
            raise ValueError(
                "database.direct_url is set but database.url is empty: set both (the pools' "
                "url, the session connections' direct_url), or neither (the embedded server)"
            )
        return self

    @model_validator(mode="after")
    def _pool_sizes(self) -> DatabaseSettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"database.pool_min_size ({self.pool_min_size}) must not be greater than "
                f"database.pool_max_size ({self.pool_max_size})"
            )
        return self


_MAX_VERSION_TIMEOUT = 100 * 365.25 * 86_400  # a hundred years, as the longest durations


class WorkerSettings(_Section):
    concurrency: int = Field(100, ge=1, le=100_000)
    """Most runs this daemon executes at once."""
    queues: StringList = Field(default_factory=list)
    """Queues this daemon claims from; empty means every queue."""
    poll_interval: Seconds = Field(1.0, gt=0)
    """Claim this often even without a notification (the backstop for a lost NOTIFY)."""
    claim_batch: int = Field(1000, ge=1)
    """Most runs claimed by one query."""
    shutdown_grace: Seconds = 30.0
    """On SIGTERM/SIGINT, how long running attempts may finish before they are handed back."""
    lease: Seconds = Field(60.0, gt=0)
    """A run's lease: another daemon hands the run back when it is not renewed in time."""
    heartbeat: Seconds = Field(10.0, gt=0)
    """How often leases are renewed, and gone workers and expired leases looked for."""
    wait_threshold: Seconds = 5.0
    """A wait longer than this suspends the run (WAITING, slot freed); shorter ones sleep."""
    unknown_task_timeout: Seconds = 0.0
    """A queued run of a task no live worker serves fails after this long; 0: it waits."""
    version: str | None = Field(None, min_length=1, max_length=200)
    """The code's version for tasks without ``@task(version=...)``; not set: the version of the
    installed distribution named like the first task module's package (else taskd's), plus
    ``+g<commit>`` when that module's folder is in a git checkout (see the README's Versions)."""
    version_policy: Literal["pinned", "latest"] = "pinned"
    """``pinned``: a started run with recorded steps (waits, children) or a parent is executed
    again only by a daemon serving its version; ``latest``: this daemon executes it whatever
    its version."""
    version_timeout: Seconds = Field(86_400.0, le=_MAX_VERSION_TIMEOUT)
    """A pinned run whose version no live daemon serves fails (VersionUnavailable) after
    this long; 0: it waits."""

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> WorkerSettings:
        if self.lease < 3 * self.heartbeat:
            raise ValueError(
                f"lease ({self.lease:g}s) must be at least 3 heartbeats ({self.heartbeat:g}s each)"
            )
        return self


# The longest duration [tasks] retry and max_duration take (as a trigger's: 100 years).
_MAX_SECONDS = 100 * 365.25 * 86_400


class RetrySettings(_Section):
    """``[tasks] retry``: the retry policy of every task that does not set its own ``retry=``.
    The defaults are the built-in ``Retry()``'s."""

    max_attempts: int = Field(3, ge=1, lt=2**31)
    """Attempts a run gets in all (1: no retry)."""
    min_delay: Seconds = Field(1.0, le=_MAX_SECONDS)
    """Delay before the first retry."""
    max_delay: Seconds = Field(60.0, le=_MAX_SECONDS)
    """Longest delay between attempts."""
    factor: float = Field(2.0, ge=1, allow_inf_nan=False)
    """Each retry's delay is the previous one's times this (up to ``max_delay``)."""
    jitter: bool = True
    """Draw each delay uniformly between ``min_delay`` and the computed one."""

    @model_validator(mode="after")
    def _min_within_max(self) -> RetrySettings:
        if self.min_delay > self.max_delay:
            raise ValueError(
                f"min_delay ({self.min_delay:g}s) must not exceed max_delay ({self.max_delay:g}s)"
            )
        return self


class TasksSettings(_Section):
    modules: StringList = Field(
        default_factory=lambda: ["tasks.dump", "tasks.daily_report", "tasks.user_registration"]
    )
    """Python modules imported at startup; every ``@task`` in them is registered."""
    pythonpath: PathList = Field(default_factory=list)
    """Directories put first on ``sys.path`` before ``modules`` are imported (``["src"]`` for
    a src layout), relative to the config file; the working directory always is on it."""
    max_payload_bytes: int = Field(1_048_576, ge=1)
    """Payloads larger than this (as JSON) are refused at enqueue."""
    max_metadata_bytes: int = Field(65_536, ge=2)
    """A run's metadata (``ctx.set_metadata``), as JSON, may not grow past this."""
    max_output_bytes: int = Field(1_048_576, ge=1)
    """A step's result (``ctx.step``) or a run's output, as JSON, may not be larger than this:
    one that is fails the run for good (the function that returned it is not called again)."""
    retry: RetrySettings = Field(default_factory=RetrySettings)
    """The retry policy of tasks without their own ``retry=`` (a trigger's ``retry`` still
    overrides it per run)."""
    max_duration: Seconds = Field(0.0, le=_MAX_SECONDS)
    """The ``max_duration`` of tasks without their own; 0: no limit."""


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least level of the daemon's own log lines (stdout)."""
    format: Literal["auto", "json", "text"] = "auto"
    """auto: text on a terminal, JSON lines otherwise (journald)."""
    run_lines: int = Field(1000, ge=0)
    """Most ``ctx.log`` lines stored per run (over all its attempts); 0 stores none. Lines
    past the cap still go to stdout; the run gets one line saying how many were left out."""
    run_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least level of the ``ctx.log`` lines stored with their run."""


class AdminSettings(_Section):
    listen: str = "127.0.0.1:8787"
    """host:port of the admin HTTP endpoint (port 0: any free port); empty turns it off."""
    token: str = Field("", validate_default=True)
    """Bearer token every request but /healthz, /api/session and the console's files must
    carry (or the console's session cookie, got by typing it on /login). Required to bind
    anything but loopback. A secret: set it with TASKD_ADMIN__TOKEN, not in the file."""
    read_token: str = Field("", validate_default=True)
    """A second token that can look but not act: the console and the API answer every GET
    with it and refuse every other method (403). Needs ``token`` and must differ from it. A
    secret: set it with TASKD_ADMIN__READ_TOKEN."""
    stream_buffer: int = Field(1000, ge=1)
    """Run changes buffered per /api/stream client; a client that falls this far behind is
    disconnected (it reconnects and re-reads what it missed from /api/runs)."""
    read_url: str = ""
    """DSN of a streaming replica (hot standby) the admin API, the console and `taskd runs` /
    `taskd logs` read history from; writes stay on the primary. Unreachable: reads fall back
    to the primary (one warning). Empty: everything reads the primary. Its password belongs
    in the environment (TASKD_ADMIN__READ_URL)."""

    @field_validator("read_url")
    @classmethod
    def _read_url_is_a_dsn(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a PostgreSQL DSN: postgresql://host:port/database")
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value.strip():
            admin_address(value)
        return value.strip()

    @field_validator("token")
    @classmethod
    def _token_off_loopback(cls, value: str, info: ValidationInfo) -> str:
        listen = info.data.get("listen")
        if listen and not value and not is_loopback(admin_address(listen)[0]):
            raise ValueError(f"required when admin.listen ({listen}) is not a loopback address")
        return value

    @field_validator("read_token")
    @classmethod
    def _read_token_beside_token(cls, value: str, info: ValidationInfo) -> str:
        if value and not info.data.get("token"):
            raise ValueError("needs admin.token (the read-only token comes beside the full one)")
        if value and value == info.data.get("token"):
            raise ValueError("must differ from admin.token")
        return value


def admin_address(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8787"`` / ``"[::1]:8787"`` -> (host, port); ValueError when malformed."""
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8787")
    return host.strip("[]"), int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class RetentionSettings(_Section):
    runs: Seconds = 30 * 86_400.0
    """Finished runs (with their attempts and log lines) are deleted this long after they
    finished; 0 keeps them forever."""
    events: Seconds = 30 * 86_400.0
    """Recorded events are deleted this long after they were sent; 0 keeps them."""
    workers: Seconds = 86_400.0
    """Rows of stopped workers are deleted this long after they stopped."""
    llm_calls: Seconds = 400 * 86_400.0
    """Records of LLM calls (tokens and cost) are deleted this long after the call started;
    0 keeps them. They outlive their runs on purpose: what a tenant cost stays summable."""
    interval: Seconds = Field(60.0, gt=0)
    """How often the pruner looks for rows past their retention."""
    batch: int = Field(200, ge=1, le=100_000)
    """Rows deleted per statement: small batches keep each transaction short."""


class LLMPrice(_Section):
    """What a model costs, in US dollars per million tokens (``[llm.prices.MODEL]``)."""

    input: float = Field(ge=0, allow_inf_nan=False)
    """Input tokens."""
    output: float = Field(ge=0, allow_inf_nan=False)
    """Output tokens."""
    cache_write: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Tokens written to the 5-minute prompt cache; default 1.25 times ``input``."""
    cache_write_1h: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Tokens written to the 1-hour prompt cache (``"ttl": "1h"``); default 2 times ``input``."""
    cache_read: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Tokens read from the prompt cache; default 0.1 times ``input``."""


# Anthropic's list prices (claude.com/pricing, December 2026) per million tokens; a model id
# with a date suffix ("claude-haiku-4-5-20251001") takes the price of its family's entry.
# Sonnet's prices are those of prompts up to 200k tokens (longer ones cost more: set them).
DEFAULT_LLM_PRICES: dict[str, dict[str, float]] = {
    "claude-opus-4-5": {"input": 5.0, "output": 25.0},
    "claude-opus-4-1": {"input": 15.0, "output": 75.0},
    "claude-opus-4": {"input": 15.0, "output": 75.0},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0},
    "claude-3-7-sonnet": {"input": 3.0, "output": 15.0},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0},
    "claude-3-5-haiku": {"input": 0.8, "output": 4.0},
    "claude-3-haiku": {"input": 0.25, "output": 1.25},
}


def _with_default_prices(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {**DEFAULT_LLM_PRICES, **value}


class LLMSettings(_Section):
    """``[llm]``: ``ctx.llm``, the official Anthropic client every task's calls go through."""

    api_key_env: str = "ANTHROPIC_API_KEY"
    """The environment variable holding the API key (the key itself is never in the file)."""
    base_url: str = ""
    """The API's address; empty: the SDK's (``ANTHROPIC_BASE_URL``, else api.anthropic.com)."""
    model: str = "claude-haiku-4-5"
    """The model of a call that names none."""
    timeout: Seconds = Field(600.0, gt=0)
    """Longest a call may take (a stream: between two events)."""
    connect_timeout: Seconds = Field(10.0, gt=0)
    """Longest wait for a connection to the API."""
    max_wait: Seconds = Field(3600.0, gt=0)
    """How long a run may keep waiting for the API (429, overload, 5xx, connection errors,
    back in the queue each time, no attempt spent) before it fails with the API's message."""
    overload_backoff: Seconds = Field(5.0, gt=0)
    """The first wait after an overload (529) or server error; doubled after each one in a
    row (with jitter), up to ``overload_backoff_max``. For overloads, "in a row" means an
    answer after the backoff window the last one opened: the calls in flight when the API
    overloaded count once."""
    overload_backoff_max: Seconds = Field(300.0, gt=0)
    """The longest wait after overload answers in a row."""
    stream_interval: Seconds = Field(0.25, gt=0)
    """Text deltas of a stream are published on the run's change stream at most this often."""
    batch_poll_interval: Seconds = Field(60.0, gt=0)
    """How often an open Message Batch (``ctx.llm.batch``) is polled: at most once per
    interval for each batch, by one of the daemons."""
    prices: Annotated[dict[str, LLMPrice], BeforeValidator(_with_default_prices)] = Field(
        default_factory=lambda: {
            model: LLMPrice.model_validate(price) for model, price in DEFAULT_LLM_PRICES.items()
        }
    )
    """Prices per model id (``[llm.prices.claude-haiku-4-5] input = 1.0, output = 5.0``), in
    dollars per million tokens; added to (or replacing) the built-in table of current Claude
    models. A call of a model without a price records its tokens and no cost."""

    @model_validator(mode="after")
    def _backoff_within_max(self) -> LLMSettings:
        if self.overload_backoff > self.overload_backoff_max:
            raise ValueError(
                f"overload_backoff ({self.overload_backoff:g}s) must not exceed "
                f"overload_backoff_max ({self.overload_backoff_max:g}s)"
            )
        return self


_HOOK_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HMAC_ONLY = ("header", "prefix", "timestamp_header")


class HookSource(_Section):
    """``[hooks.sources.NAME]`` (or ``[[hooks.sources]]`` with ``name``): one sender of
    webhooks, reached at ``POST /hooks/NAME``."""

    name: str = ""
    """The source's name, the ``{source}`` of its URL (in the ``[hooks.sources.NAME]`` form:
    NAME)."""
    event: str = ""
    """The event each verified request is sent as (``send_event``); default ``webhook.NAME``."""
    verify: Literal["standard-webhooks", "hmac-sha256", "stripe"]
    """How requests are verified: ``standard-webhooks`` (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``), ``hmac-sha256`` (the body's HMAC in ``header``, as GitHub's
    ``X-Hub-Signature-256``), ``stripe`` (``Stripe-Signature: t=...,v1=...`` over
    ``t.body``)."""
    secret: str = ""
    """The shared secret (Standard Webhooks: ``whsec_`` and base64). Prefer ``secret_env``."""
    secret_env: str = ""
    """The environment variable holding the secret, read when the daemon starts."""
    header: str = ""
    """hmac-sha256: the header carrying the signature (``X-Hub-Signature-256``)."""
    prefix: str = ""
    """hmac-sha256: what precedes the signature in the header (``sha256=``)."""
    encoding: Literal["hex", "base64"] = "hex"
    """hmac-sha256: how the signature is written."""
    timestamp_header: str = ""
    """hmac-sha256: a header with the send time in Unix seconds; the signature then covers
    ``<timestamp>.<body>`` and requests outside ``tolerance`` are refused."""
    tolerance: Seconds = Field(300.0, gt=0)
    """How far a request's signed timestamp may be from now (either way)."""
    id_header: str = ""
    """The header holding the delivery's id, the idempotency key (``X-GitHub-Delivery``);
    default: ``webhook-id`` for Standard Webhooks, the body's ``id`` for Stripe, the body's
    SHA-256 for hmac-sha256."""
    headers: StringList = Field(default_factory=list)
    """Request headers kept in the event's payload (``["X-GitHub-Event"]``)."""

    @model_validator(mode="after")
    def _scheme_keys(self) -> HookSource:
        if bool(self.secret) == bool(self.secret_env):
            raise ValueError("give exactly one of secret and secret_env")
        if self.verify == "hmac-sha256" and not self.header.strip():
            raise ValueError("verify = hmac-sha256 needs header (the signature's header)")
        if self.verify != "hmac-sha256":
            extra = [key for key in _HMAC_ONLY if getattr(self, key)]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for verify = hmac-sha256")
        self.headers = [h.strip().lower() for h in self.headers if h.strip()]
        return self


def _sources_by_name(value: Any) -> Any:
    """``[[hooks.sources]]`` (a list, each with ``name``) or ``[hooks.sources.NAME]``."""
    if isinstance(value, list):
        named: dict[str, Any] = {}
        for entry in value:
            if not isinstance(entry, dict) or not entry.get("name"):
                raise ValueError("each [[hooks.sources]] needs a name")
            if entry["name"] in named:
                raise ValueError(f"two sources named {entry['name']!r}")
            named[entry["name"]] = entry
        return named
    return value


class HooksSettings(_Section):
    """``[hooks]``: the inbound webhook listener, ``POST /hooks/{source}`` only."""

    listen: str = ""
    """host:port of the webhook listener (port 0: any free port); empty: off."""
    max_body: int = Field(1_048_576, ge=1)
    """Largest request body accepted (413 beyond, the rest unread)."""
    redelivery_window: Seconds = Field(7 * 86_400.0, gt=0)
    """How long a delivery's id is remembered: a redelivery within it makes no second event."""
    sources: Annotated[dict[str, HookSource], BeforeValidator(_sources_by_name)] = Field(
        default_factory=dict
    )
    """The senders, by name (``[hooks.sources.github]``), each with ``verify``,
    ``secret_env`` or ``secret``, ``event``, ``tolerance``, ``id_header``, ``headers``, and
    for hmac-sha256 ``header``, ``prefix``, ``encoding``, ``timestamp_header``; one key of a
    source from the environment: ``TASKD_HOOKS__SOURCES__GITHUB__TOLERANCE``."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value.strip():
            admin_address(value)
        return value.strip()

    @model_validator(mode="after")
    def _named_sources(self) -> HooksSettings:
        for key, source in self.sources.items():
            if not _HOOK_SOURCE_NAME.match(key):
                raise ValueError(
                    f"source name {key!r}: letters, digits, '_', '.', '-' (at most 64)"
                )
            if source.name and source.name != key:
                raise ValueError(f"source {key!r} has name {source.name!r}")
            source.name = key
            source.event = source.event.strip() or f"webhook.{key}"
        if self.listen and not self.sources:
            raise ValueError("hooks.listen is set but no [hooks.sources.NAME] is configured")
        return self


class WebhookConfig(_Section):
    """One ``[[webhooks]]`` table: a status webhook subscription, synced to the database at
    start-up (upsert by name; one no longer listed is disabled)."""

    name: str
    """Its name (unique): the CLI and the API address it by it."""
    url: str
    """Where the run events are POSTed (http:// or https://)."""
    events: list[str]
    """The run events sent: run.started, run.completed, run.failed, run.canceled,
    run.expired, run.attempt_failed, run.waiting."""
    tasks: list[str] | None = None
    """Only runs of these tasks (left out: all)."""
    queues: list[str] | None = None
    """Only runs in these queues (left out: all)."""
    tags: list[str] | None = None
    """Only runs with one of these tags (left out: all)."""
    secret: str = ""
    """The signing secret, ``whsec_`` + base64 (Standard Webhooks). Better: ``secret_env``."""
    secret_env: str = ""
    """The environment variable holding the secret."""
    enabled: bool = True
    """false: kept but disabled (no events captured)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return check_events(value)

    @field_validator("tasks", "queues", "tags")
    @classmethod
    def _filters(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        return check_filter(str(info.field_name), value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        return check_secret(value) if value else value

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookConfig:
        if bool(self.secret) == bool(self.secret_env):
            raise ValueError(f"webhook {self.name!r} needs secret or secret_env (one of them)")
        return self

    def resolved_secret(self) -> str:
        """The secret, read from ``secret_env`` when given (ConfigError when unset or bad)."""
        if self.secret:
            return self.secret
        value = os.environ.get(self.secret_env, "")
        if not value:
            raise ConfigError(
                f"config error: webhooks {self.name!r}: secret_env {self.secret_env} is not set"
            )
        try:
            return check_secret(value)
        except ValueError as exc:
            raise ConfigError(
                f"config error: webhooks {self.name!r}: ${self.secret_env}: {exc}"
            ) from None


def _svix_schedule() -> list[float]:
    return [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class WebhookDeliverySettings(_Section):
    """``[webhook_delivery]``: how status webhooks are sent, for every subscription."""

    concurrency: int = Field(10, ge=1, le=10_000)
    """Deliveries sent at once, for the whole fleet (the queue taskd.webhooks' limit)."""
    timeout: Seconds = Field(15.0, gt=0, le=300)
    """An attempt that has no answer in this long fails (and is retried)."""
    retry_schedule: Annotated[list[Seconds], NoDecode, BeforeValidator(_string_list)] = Field(
        default_factory=_svix_schedule, max_length=50
    )
    """The delays before each retry (Svix's: 5s, 5m, 30m, 2h, 5h, 10h, 10h); after the last
    one fails the delivery is dead. A 429's or 503's Retry-After is honoured instead."""
    disable_after: Seconds = Field(86_400.0, gt=0)
    """A subscription whose deliveries have failed for this long without one success is
    disabled, with the reason."""
    rotation_overlap: Seconds = Field(86_400.0, ge=0)
    """After a secret rotation the previous secret signs too (two signatures) this long."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        case_sensitive=False,
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    tasks: TasksSettings = Field(default_factory=TasksSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    hooks: HooksSettings = Field(default_factory=HooksSettings)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    """Status webhooks: one ``[[webhooks]]`` table per subscription (see WebhookConfig)."""
    webhook_delivery: WebhookDeliverySettings = Field(default_factory=WebhookDeliverySettings)

    @field_validator("webhooks")
    @classmethod
    def _unique_webhook_names(cls, value: list[WebhookConfig]) -> list[WebhookConfig]:
        names = [w.name for w in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"webhook name(s) given twice: {', '.join(twice)}")
        return value


def find_config(start: Path | str | None = None) -> Path | None:
    """The configuration file of a command started in ``start`` (the working directory).

    ``$TASKD_CONFIG`` when set; else the nearest ``taskd.toml`` in ``start`` or a parent, not
    looking above the repository root (the first directory holding ``.git``), as ruff and
    pytest find theirs; else ``./config.toml``; else None (defaults and the environment).
    """
    named = os.environ.get("TASKD_CONFIG")
    if named:
        return Path(named)
    here = Path(start) if start is not None else Path.cwd()
    for directory in (here.absolute(), *here.absolute().parents):
        candidate = directory / PROJECT_CONFIG
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            break
    legacy = here / LEGACY_CONFIG
    return legacy if legacy.is_file() else None


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load ``path`` (TOML; none means defaults only), then the environment, then ``overrides``.

    A relative ``database.data_dir`` or ``tasks.pythonpath`` entry is taken relative to the
    file's directory (without a file, to the working directory). Raises ConfigError with one
    line naming the first bad key.
    """
    toml_path = Path(path) if path is not None else None
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigError(f"config file not found: {toml_path}")
        try:
            tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: not valid TOML: {exc}") from None

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    _check_environment_sections()
    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    settings = Settings.model_validate(loaded.model_dump())
    if toml_path is not None:
        base = toml_path.absolute().parent
        settings.database.data_dir = base / settings.database.data_dir.expanduser()
        settings.tasks.pythonpath = [base / entry for entry in settings.tasks.pythonpath]
    return settings


def _check_environment_sections() -> None:
    """``TASKD_WROKER__CONCURRENCY`` is a typo, not a variable to ignore silently."""
    sections = set(Settings.model_fields)
    for name in os.environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and ENV_DELIMITER in upper:
            section = upper[len(ENV_PREFIX) :].split(ENV_DELIMITER, 1)[0].lower()
            if section not in sections:
                known = ", ".join(sorted(sections))
                raise ConfigError(
                    f"config error: {name}: unknown section {section!r} (sections: {known})"
                )


# Values never echoed in an error line: a database URL may carry a password.
_SECRETS = frozenset({"database.url", "database.direct_url", "admin.token", "admin.read_token"})


def describe_validation_error(exc: ValidationError) -> str:
    """One line for the first error: ``worker.concurrency (TASKD_WORKER__CONCURRENCY): ...``."""
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    key = ".".join(loc) if loc else "config"
    env = ENV_PREFIX + ENV_DELIMITER.join(part.upper() for part in loc)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif (
        "input" in first
        and first["type"] not in ("missing",)
        and loc
        and key not in _SECRETS
        and loc[-1] != "secret"  # a [hooks.sources.NAME] or [[webhooks]] signing secret
        and not isinstance(first["input"], dict)  # a whole section: the message names the keys
        # a list of tables ([[webhooks]], [[hooks.sources]]): its tables hold secrets
        and not (
            isinstance(first["input"], list) and any(isinstance(i, dict) for i in first["input"])
        )
    ):
        message = f"{message} (got {first['input']!r})"
    problems = len(exc.errors())
    more = (
        f" (and {problems - 1} more problem{'s' if problems > 2 else ''})" if problems > 1 else ""
    )
    return f"config error: {key} ({env}): {message}{more}"
