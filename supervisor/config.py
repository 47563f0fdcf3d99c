"""Configuration models: the single source of defaults, documentation and validation.

`config/warden.yaml` is validated against `settings_model(daemons)`, a WardenSettings with
one section per registered daemon under `daemons:`. Environment variables (`WARDEN_*`,
nested with `__`) and a `.env` file override the file; secrets may live there only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from supervisor.models import RestartPolicy

LogLevel = Literal["debug", "info", "warning", "error"]


class Section(BaseModel):
    # validate_default: a plugin whose Config defaults break its own bounds fails the contract check.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DaemonConfig(Section):
    """Settings every daemon has. A daemon's own `Config` subclasses this."""

    enabled: bool = Field(True, description="A disabled daemon cannot be started.")
    auto_start: bool = Field(True, description="Start the daemon when Warden starts.")
    restart: RestartPolicy = Field(
        RestartPolicy.ON_FAILURE,
        description="on-failure: restart after a crash; always: also after a clean exit; never: stay down.",
    )
    watchdog_timeout: float = Field(
        300,
        ge=1,
        le=86_400,
        description="Seconds without a status update, log line or sleep before the daemon counts as hung "
        "and is restarted.",
    )
    stop_timeout: float = Field(
        10, gt=0, le=600, description="Seconds a daemon gets to clean up after being cancelled."
    )
    backoff_initial: float = Field(
        1,
        ge=0.01,
        le=3600,
        description="Delay before the first restart after a crash (or the first retry after a failure the daemon "
        "rides out, such as its service being down), in seconds; it doubles each time.",
    )
    backoff_max: float = Field(300, ge=0.01, le=86_400, description="Longest delay between restarts, in seconds.")
    max_restarts: int = Field(
        5,
        ge=0,
        le=1000,
        description="Automatic restarts allowed within restart_window; one more crash makes the daemon fatal.",
    )
    restart_window: float = Field(60, gt=0, le=86_400, description="Seconds over which max_restarts is counted.")
    healthy_after: float = Field(
        60, gt=0, le=86_400, description="A run this many seconds long resets the backoff and the restart count."
    )
    log_level: LogLevel = Field("info", description="Lowest level of the daemon's log lines that are kept and shown.")
    cancel_jobs_on_stop: bool = Field(True, description="Stopping the daemon cancels the jobs it launched.")


#: Fields of DaemonConfig: changing only these never needs the daemon's own code to reload.
KERNEL_FIELDS = frozenset(DaemonConfig.model_fields)


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the web page and API listen on.")
    port: int = Field(8765, ge=0, le=65_535, description="TCP port of the web page and API (0: any free port).")
    base_path: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="URL prefix when served behind a reverse proxy, e.g. /warden.",
    )
    token: SecretStr | None = Field(
        None, min_length=16, description="API token (16 characters or more). Prefer WARDEN_SERVER__TOKEN in .env."
    )


class StashSettings(Section):
    url: str | None = Field(
        None,
        # stashapi always talks to /graphql at the server's root, so a path could never be honoured.
        pattern=r"^https?://[^/?#@\s]+/?$",  # no user:password@ either: the URL is shown in messages
        description="Stash server URL, e.g. http://127.0.0.1:9999 (no path). Empty: the built-in demo Stash.",
    )
    api_key: SecretStr | None = Field(None, description="Stash API key. Prefer WARDEN_STASH__API_KEY.")
    timeout: float = Field(30, gt=0, le=600, description="Seconds before a Stash request is abandoned.")


class QbittorrentSettings(Section):
    url: str | None = Field(None, description="qBittorrent Web UI URL, e.g. http://127.0.0.1:8080.")
    username: str = Field("admin", description="qBittorrent Web UI user name.")
    password: SecretStr | None = Field(
        None, description="qBittorrent Web UI password. Prefer WARDEN_QBITTORRENT__PASSWORD."
    )
    timeout: float = Field(30, gt=0, le=600, description="Seconds before a qBittorrent request is abandoned.")


def _usable_path(path: Path | None, *, folder: bool) -> Path | None:
    """A path Warden can create or open: no NUL character, and not a file where a folder must be (or the reverse)."""
    if path is None:
        return None
    if "\x00" in str(path):
        raise ValueError("a path cannot contain a NUL character")
    try:
        wrong_kind = path.exists() and path.is_dir() != folder
    except OSError as error:  # e.g. a name longer than the filesystem allows
        raise ValueError(f"{path} cannot be used: {error.strerror}") from None
    if wrong_kind:
        raise ValueError(f"{path} is {'not ' if folder else ''}a folder")
    return path


class PathsSettings(Section):
    data_dir: Path = Field(
        Path("var"), description="Folder for Warden's own files (database, token), created on first run."
    )

    @field_validator("data_dir")
    @classmethod
    def _folder(cls, path: Path) -> Path | None:
        return _usable_path(path, folder=True)


class StoreSettings(Section):
    database: Path | None = Field(None, description="SQLite database file. Default: warden.db in paths.data_dir.")
    busy_timeout: float = Field(
        5, gt=0, le=600, description="Seconds a write waits for a database locked by another process."
    )
    log_retention_days: float = Field(14, gt=0, le=3650, description="Daemon log lines older than this are deleted.")
    log_max_rows: int = Field(200_000, ge=1000, description="At most this many daemon log lines are kept.")
    event_retention_days: float = Field(
        90, gt=0, le=3650, description="Events (transitions, hangs) older than this are deleted."
    )
    event_max_rows: int = Field(100_000, ge=1000, description="At most this many events are kept.")
    write_interval: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Least seconds between two batched writes of states, jobs and logs: at most 1/this "
        "transactions per second, however fast daemons report. The final state is always written at shutdown.",
    )

    @field_validator("database")
    @classmethod
    def _file(cls, path: Path | None) -> Path | None:
        return _usable_path(path, folder=False)


class SupervisorSettings(Section):
    watchdog_interval: float = Field(1, gt=0, le=60, description="Seconds between watchdog checks.")
    loop_lag_threshold: float = Field(
        0.5, gt=0, le=60, description="A daemon that blocks the event loop longer than this is named in the log."
    )
    config_poll_interval: float = Field(
        2,
        gt=0,
        le=600,
        description="Seconds between checks of the config file for hand edits; an edit is taken once two checks "
        "in a row read it (an editor saving in place writes the file in steps).",
    )
    shutdown_flush_timeout: float = Field(
        10, gt=0, le=600, description="Seconds allowed for saving the final state at shutdown."
    )


class JobsSettings(Section):
    concurrency: dict[str, int] = Field(
        default_factory=dict, description="Jobs of a type that may run at once, by job type, e.g. {sync: 1}."
    )
    default_concurrency: int = Field(
        2, ge=1, le=64, description="Jobs of a type not listed above that may run at once."
    )
    retry_initial: float = Field(
        1, gt=0, le=3600, description="Seconds before retrying a job after a transient failure; doubles each time."
    )
    retry_max: float = Field(60, gt=0, le=86_400, description="Longest delay between retries of a job, in seconds.")
    retention_days: float = Field(30, gt=0, le=3650, description="Finished jobs older than this are deleted.")


class WardenSettings(BaseSettings):
    """Everything in warden.yaml except the daemon sections, which `settings_model` adds."""

    model_config = SettingsConfigDict(
        env_prefix="WARDEN_",
        env_nested_delimiter="__",
        env_file=".env",
        dotenv_filtering="only_existing",  # a .env shared with other tools must not invalidate the file
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    stash: StashSettings = Field(default_factory=StashSettings)
    qbittorrent: QbittorrentSettings = Field(default_factory=QbittorrentSettings)
    paths: PathsSettings = Field(default_factory=PathsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    daemons: Any = None  # replaced by settings_model()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment and .env win over them.
        return env_settings, dotenv_settings, init_settings

    @property
    def database_path(self) -> Path:
        return self.store.database or self.paths.data_dir / "warden.db"

    def daemon_config(self, name: str) -> DaemonConfig:
        config = getattr(self.daemons, name)
        assert isinstance(config, DaemonConfig)
        return config


def settings_model(
    daemon_configs: dict[str, type[DaemonConfig]], unchecked: frozenset[str] = frozenset()
) -> type[WardenSettings]:
    """WardenSettings with a `daemons:` section holding one validated section per daemon.

    `unchecked` names daemons whose plugin failed to load: their sections are kept as they
    are, so one broken plugin never makes the whole file invalid.
    """
    fields: dict[str, Any] = {name: (dict[str, Any] | None, None) for name in unchecked}
    fields.update({name: (config, Field(default_factory=config)) for name, config in daemon_configs.items()})
    sections = create_model(
        "DaemonSections", __config__=ConfigDict(extra="forbid", frozen=True), **dict(sorted(fields.items()))
    )
    model: type[WardenSettings] = create_model(
        "Settings",
        __base__=WardenSettings,
        daemons=(sections, Field(default_factory=sections, description="One section per daemon.")),
    )
    return model
