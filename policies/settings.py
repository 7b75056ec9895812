"""Caveat's configuration: every environment variable Caveat reads, typed, documented and checked in one place.

`load_settings()` reads the environment and returns a frozen `Settings`, or raises `SettingsError` whose message
names each bad variable and says what it must be (`caveat` prints it once at start and exits 2). Defaults that
depend on the machine (cache directory, thread count) are the methods below, so every caller resolves them alike.

This module lives in `policies`, the leftmost layer, and imports nothing from the project, so `policies`,
`classifiers` and `bot` may all read it (tests/test_layering.py keeps it that way).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CAVEAT_"
BACKENDS = ("onnx-int8", "torch")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
Backend = Literal["onnx-int8", "torch"]
# Variables earlier versions read and this one does not; `caveat run` says so when one is set.
RETIRED = ("CAVEAT_MOD_CHANNEL_ID", "CAVEAT_ONCALL_ROLE_ID")


class SettingsError(ValueError):
    """One or more environment variables hold a bad value; the message names each one and what it must be."""


class Settings(BaseSettings):
    """Caveat's settings. Each field is read from `CAVEAT_<FIELD>` (upper case), except the aliased ones
    (`DISCORD_TOKEN`, `XDG_CACHE_HOME`); an empty variable counts as unset. Command-line options, where a
    command has one (`--policy`, `--model`, `--db`, `--base`, `--backend`, `--data-dir`), win over these."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True,
                                      validate_by_name=True, validate_by_alias=True)

    db: SecretStr | None = Field(None, description="SQLite database file (WAL), or a `postgresql://` URL (may hold a"
                                                   " password, so it is kept secret). Default:"
                                                   " `$XDG_DATA_HOME/caveat/caveat.db`, else"
                                                   " `~/.local/share/caveat/caveat.db`.")
    policy_dir: Path | None = Field(None, description="Policy directory (an existing directory). Default: the"
                                                      " shipped `policies/`.")
    model_dir: Path | None = Field(None, description="Trained classifier artifact. Default: the shipped"
                                                     " `classifiers/artifacts/caveat-minilm`.")
    base_model: Path | None = Field(None, description="Base encoder: any local Hugging Face encoder directory."
                                                      " Default: the packaged all-MiniLM-L6-v2.")
    backend: Backend = Field("onnx-int8", description="Scoring backend: `onnx-int8` (served; exported once from"
                                                      " the artifact) or `torch` (the fp32 reference).")
    cache_dir: Path | None = Field(None, description="Where the one-time int8 export is cached (never committed)."
                                                     " Default: `$XDG_CACHE_HOME/caveat`, else `~/.cache/caveat`.")
    data_dir: Path | None = Field(None, description="Real-post data for `caveat train` and `caveat eval` (holds"
                                                    " `external/` and `real-dev/`). Default: `../shared/data` when"
                                                    " it exists.")
    threads: int | None = Field(None, ge=1, description="Scoring threads (one post per thread at a time), at least"
                                                        " 1. Default: the CPU count, at most 4.")
    dashboard_url: str | None = Field(None, description="The dashboard's http(s) address, for the login links"
                                                        " `/caveat dashboard` sends. Default: none (the command"
                                                        " says it is not configured).")
    discord_token: SecretStr | None = Field(None, validation_alias="DISCORD_TOKEN",
                                            description="Bot token for `caveat run` (never printed).")
    xdg_cache_home: Path | None = Field(None, validation_alias="XDG_CACHE_HOME",
                                        description="The XDG cache base, used when `CAVEAT_CACHE_DIR` is unset."
                                                    " Default: `~/.cache`.")

    xdg_data_home: Path | None = Field(None, validation_alias="XDG_DATA_HOME",
                                       description="The XDG data base, used when `CAVEAT_DB` is unset."
                                                   " Default: `~/.local/share`.")

    @field_validator("policy_dir", "model_dir", "base_model", "cache_dir", "data_dir", "xdg_cache_home",
                     "xdg_data_home", mode="before")
    @classmethod
    def _expand_user(cls, value: Any) -> Any:
        return os.path.expanduser(value) if isinstance(value, str) else value

    @field_validator("policy_dir")
    @classmethod
    def _policy_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("must be an existing directory")
        return value

    @field_validator("db", mode="before")
    @classmethod
    def _db_is_a_file_or_url(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if value.startswith(POSTGRES_SCHEMES):
            return value
        if "://" in value:
            raise ValueError("must be a SQLite file path or a postgresql:// URL")
        value = os.path.expanduser(value)
        if Path(value).is_dir():
            raise ValueError("must be a database file or a postgresql:// URL, not a directory")
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _known_backend(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in BACKENDS:
            raise ValueError(f"must be one of {', '.join(BACKENDS)}")
        return value

    @field_validator("threads", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ValueError("must be a whole number") from None
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _http_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// address")
        return value.rstrip("/")

    @field_validator("discord_token", mode="before")
    @classmethod
    def _strip_token(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    def database(self) -> Path | str | None:
        """`CAVEAT_DB` as storage opens it: a `postgresql://` URL as it is, else a file path; None when unset."""
        if self.db is None:
            return None
        value = self.db.get_secret_value()
        return value if value.startswith(POSTGRES_SCHEMES) else Path(value)

    def database_or_default(self) -> Path | str:
        """`database()`, else `caveat.db` under the user's data directory (never the source tree)."""
        configured = self.database()
        if configured is not None:
            return configured.expanduser() if isinstance(configured, Path) else configured
        return (self.xdg_data_home or Path.home() / ".local" / "share") / "caveat" / "caveat.db"

    def cache_root(self) -> Path:
        """`CAVEAT_CACHE_DIR`, else `$XDG_CACHE_HOME/caveat`, else `~/.cache/caveat`."""
        if self.cache_dir is not None:
            return self.cache_dir
        return (self.xdg_cache_home or Path.home() / ".cache") / "caveat"

    def thread_count(self) -> int:
        """`CAVEAT_THREADS`, else the CPU count (at most 4)."""
        return self.threads if self.threads is not None else max(1, min(4, os.cpu_count() or 1))


def env_name(field: str) -> str:
    """The environment variable a field is read from (`threads` -> `CAVEAT_THREADS`)."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


def _variable(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    if name in Settings.model_fields:
        return env_name(name)
    return name.upper()


def _reason(error: Any) -> str:
    msg = str(error.get("msg", "is invalid"))
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if error.get("type") == "greater_than_equal":
        return f"must be at least {error.get('ctx', {}).get('ge')}"
    return msg.replace("Input should be", "must be", 1)


def describe(exc: ValidationError) -> str:
    """One line per bad variable: `CAVEAT_THREADS must be a whole number, got 'abc'` (secrets are not echoed)."""
    lines = []
    for error in exc.errors():
        var = _variable(tuple(error.get("loc", ())))
        shown = "" if var in SECRET_VARIABLES or "input" not in error else f", got {error['input']!r}"
        lines.append(f"{var} {_reason(error)}{shown}")
    return "\n".join(lines)


SECRET_VARIABLES = frozenset(env_name(name) for name, info in Settings.model_fields.items()
                             if info.annotation is not None and SecretStr in getattr(info.annotation, "__args__", ()))


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment (`overrides`, by field name, win); SettingsError names each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


def retired_variables() -> list[str]:
    """The retired variables (RETIRED) that are set, non-empty, in this environment."""
    return [name for name in RETIRED if os.environ.get(name)]
