"""Process settings from the environment (and `.env`), per the contract's variable table.

Every list-valued secret is comma-separated so secrets can be rotated: the old and the new
value are both accepted until the old one is removed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

#: `name:token` entries of HUB_ADMIN_TOKEN: the name the audit log records (hub.admin).
ADMIN_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

SecretList = Annotated[tuple[str, ...], NoDecode, Field(default=(), repr=False)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | float | int) -> float:
    """Seconds from `90`, `90s`, `15m`, `24h`, `14d` or `250ms`."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 24h, 14d)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _split(value: object) -> tuple[str, ...]:
    """A comma-separated rotation list. Empty entries (`a,,b`, a trailing comma) are dropped,
    so no entry is ever an empty secret; a list of nothing but commas is no secret at all
    (the source then refuses its webhooks, naming the variable)."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(p for p in (str(v).strip() for v in items) if p)  # type: ignore[union-attr]


RATE_LIMIT_SUFFIX = "_RATE_LIMIT"


class _RateLimits(PydanticBaseSettingsSource):
    """Every `<CONNECTOR>_RATE_LIMIT` of `.env` and the environment (the environment wins), as
    `rate_limits`: the names depend on which connectors exist, so they are not fields."""

    def __init__(self, settings_cls: type[BaseSettings], *layers: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.layers = layers  # lowest priority first

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for layer in self.layers:
            for name, value in (getattr(layer, "env_vars", None) or {}).items():
                if value is not None and name.upper().endswith(RATE_LIMIT_SUFFIX):
                    found[name.upper()] = value
        return {"rate_limits": found} if found else {}


class CoreSettings(BaseSettings):
    """The hub's own configuration. `Settings` adds the variables the connectors declare.

    Secrets are kept out of repr and logs.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    redis_url: str | None = None
    hub_host: str = "0.0.0.0"
    hub_port: int = Field(8080, ge=1, le=65535)
    #: SO_REUSEPORT on the listening socket: several `serve` processes on one host share the port.
    hub_reuse_port: bool = False
    hub_config: Path | None = None
    hub_admin_token: SecretList
    hub_data_dir: Path = Path("./var")

    hub_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    hub_dedup_window: float = 24 * 3600
    hub_retention: float = 14 * 86400
    hub_timestamp_tolerance: float = 300
    hub_body_timeout: float = 15
    hub_header_timeout: float = 10
    hub_sweep_grace: float = 120
    hub_job_timeout: float = 60
    hub_max_event_runs: int = Field(8, ge=1)
    hub_worker_concurrency: int = Field(20, ge=1)
    #: Alerts of one delivery processed per worker job; a larger group is split into chunk jobs.
    hub_max_alerts_per_job: int = Field(50, ge=1)
    #: Alerts of one delivery processed at all; the rest are dropped (counted, on the timeline).
    hub_max_alerts_per_event: int = Field(2000, ge=1)
    #: The hub's own dead-man's switch: the workers GET it every minute while the hub is healthy.
    hub_self_heartbeat_url: str | None = None

    #: `<CONNECTOR>_RATE_LIMIT` variables by name, e.g. {"TICKETS_RATE_LIMIT": "1/s"} (`hub.storage.ratelimit`).
    rate_limits: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                _RateLimits(settings_cls, dotenv_settings, env_settings))

    @field_validator("hub_admin_token", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> tuple[str, ...]:
        return _split(v)

    @field_validator("hub_admin_token")
    @classmethod
    def _admin_tokens(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        """An entry with `:` is always `name:token`; anything else with `:` is refused, so a
        token is never silently split into a name and a shorter token."""
        for i, entry in enumerate(v):
            name, sep, token = entry.partition(":")
            if sep and not (ADMIN_TOKEN_NAME.match(name) and token and ":" not in token):
                raise ValueError(f"entry {i + 1} contains ':' but is not name:token (a name of letters, digits "
                                 "and '_.@-', up to 64; one ':'; a non-empty token): a token cannot contain ':'")
        return v

    @field_validator("hub_dedup_window", "hub_retention", "hub_timestamp_tolerance", "hub_sweep_grace",
                     "hub_body_timeout", "hub_header_timeout",
                     "hub_job_timeout", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return parse_duration(v)  # type: ignore[arg-type]

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("redis://", "rediss://", "redis+sentinel://", "unix://")):
            raise ValueError("must start with redis://, rediss://, redis+sentinel:// or unix://")
        return v

    @property
    def client_host(self) -> str:
        """Address a local client should use to reach this hub."""
        return "127.0.0.1" if self.hub_host in ("0.0.0.0", "::", "") else self.hub_host

    def rules_path(self) -> Path | None:
        """HUB_CONFIG, else ./hub.yaml when present, else None (built-in defaults)."""
        if self.hub_config:
            return self.hub_config
        default = Path("hub.yaml")
        return default if default.exists() else None


def _rotation_list(cls: type, v: object) -> tuple[str, ...]:
    return _split(v)


def _checked(check: Any) -> Any:
    """A validator running a connector's `check` on every entry, naming the entry that fails."""

    def validate(cls: type, v: Any) -> Any:
        entries = v if isinstance(v, tuple) else (() if v is None else (v,))
        for i, entry in enumerate(entries):
            try:
                check(entry)
            except ValueError as e:
                raise ValueError(f"entry {i + 1}: {e}" if isinstance(v, tuple) else str(e)) from None
        return v

    return validate


@lru_cache(maxsize=1)
def settings_model() -> type[CoreSettings]:
    """`Settings`: the hub's fields plus one per variable the discovered connectors declare.

    A variable's attribute is its name in lower case; a secret stays out of repr; a rotation
    list is split on commas; a declared check refuses a bad value at start, naming the variable.
    """
    from hub.core import registry

    fields: dict[str, Any] = {}
    validators: dict[str, Any] = {}
    for var in registry.variables():
        if var.rotating:
            fields[var.attr] = (Annotated[tuple[str, ...], NoDecode], Field((), repr=False))
            validators[f"_split_{var.attr}"] = field_validator(var.attr, mode="before")(_rotation_list)
        elif var.default is not None:
            fields[var.attr] = (str, Field(var.default, repr=not var.secret))
        else:
            fields[var.attr] = (str | None, Field(None, repr=not var.secret))
        if var.check is not None:
            validators[f"_check_{var.attr}"] = field_validator(var.attr)(_checked(var.check))
    return create_model("Settings", __base__=CoreSettings, __module__=__name__,  # type: ignore[call-overload]
                        __validators__=validators, **fields)


if TYPE_CHECKING:
    class Settings(CoreSettings):
        """All configuration of one hub process (the connectors' variables are added at run time)."""

        def __getattr__(self, name: str) -> Any: ...


def __getattr__(name: str) -> Any:
    """`Settings` is built on first use: the connectors declare part of it, and they may import this module."""
    if name == "Settings":
        return settings_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SettingsError(Exception):
    """Raised with one line per bad variable, for a clear failure at start."""


def load_settings(**overrides: object) -> Settings:
    try:
        return settings_model()(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            var = str(err["loc"][0]).upper() if err["loc"] else "?"
            lines.append(f"{var}: {err['msg']}")
        raise SettingsError("; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> CoreSettings:
    return load_settings()
