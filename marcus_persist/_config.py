"""Runtime configuration: a frozen msgspec Struct, Marcus's config shape, env overrides.

Precedence, lowest first: defaults, ``config_marcus.json``
(``features.persistence`` and ``features.persistence_options``), keyword
options, ``MARCUS_PERSIST_<OPTION>`` environment variables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from marcus_persist._errors import ConfigError

__all__ = ("BACKEND_NAMES", "SQLITE_DB_NAME", "STORE_NAMES", "Config")

#: the storage engines, by the name ``backend`` takes (one package each under ``backends/``)
BACKEND_NAMES = ("file", "memory", "sqlite", "postgres")
#: the stores, by the name ``backends`` keys take
STORE_NAMES = ("assignments", "state", "audit", "patterns", "tokens")
#: the ``sqlite`` backend's database in the data directory (Marcus's own name)
SQLITE_DB_NAME = "marcus_state.db"

log = logging.getLogger("marcus_persist")

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
#: the deepest ``max_depth`` allowed: every reader (msgspec, ``copy.deepcopy`` of a
#: stored record in its envelope) handles it with room to spare (deepcopy fails near 450)
MAX_DEPTH = 256

ENV_PREFIX = "MARCUS_PERSIST_"
#: other names some variables go by (``MARCUS_PERSIST_DSN`` wins over its alias)
ENV_ALIASES = {"MARCUS_PERSIST_PG_DSN": "dsn"}


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every option of the runtime, with its default."""

    data_dir: str = "data"
    #: ``file`` (embedded default), ``memory``, ``sqlite`` or ``postgres``
    backend: str = "file"
    #: ``batch``: fsync every batch before answering; ``interval``: the audit
    #: trail fsyncs every ``fsync_interval_ms``; ``none``: never fsync
    durability: Literal["batch", "interval", "none"] = "batch"
    fsync_interval_ms: Positive = 1000
    max_batch: Positive = 1024
    #: above the number of concurrent callers: callers past a full inbox wait in
    #: anyio's blocked-send path, ~3x dearer per call (benchmarks/README.md)
    inbox_size: Positive = 16384
    #: what to do with a corrupt file found at startup
    on_corrupt: Literal["error", "quarantine"] = "error"
    cache_mb: Positive = 64
    #: file backend: a store's write-ahead log is checkpointed (its files rewritten,
    #: the log retired) once it holds this many MB, or its oldest record is this old
    wal_checkpoint_mb: Positive = 64
    wal_checkpoint_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    #: the largest payload one call may store (``task_data``, ``data``, ``details``), as JSON bytes
    max_record_bytes: Positive = 4 << 20
    #: the deepest nesting of objects and arrays one payload may have (at most ``MAX_DEPTH``)
    max_depth: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEPTH)] = 64
    backup_enabled: bool = False
    #: hours between scheduled backups (more than 0)
    backup_interval_hours: Annotated[float, msgspec.Meta(gt=0)] = 24.0
    #: permission bits (octal text) of the files the runtime creates; directories get
    #: the matching search bits (``0600`` -> ``0700``, ``0640`` -> ``0750``). The owner
    #: must keep read and write; nobody else may write
    file_mode: Annotated[str, msgspec.Meta(pattern="^0?[0-7]{3}$")] = "0600"
    #: the SQLite database file (backend ``sqlite``); default ``<data_dir>/marcus_state.db``
    sqlite_path: str | None = None
    dsn: str | None = None
    #: the PostgreSQL schema (namespace) that holds the tables; created at open
    pg_schema: str = "marcus_persist"
    #: PostgreSQL connections per runtime for reads (the actors' commits have up to 4 more)
    pg_pool_size: Positive = 8
    redis_url: str | None = None
    audit_daily_days: Positive = 7
    audit_weekly_weeks: Positive = 8
    audit_retention_days: Positive | None = None
    #: learned patterns: prune every this many hours (``None``: only when asked) with
    #: these limits (each ``None`` means that limit is not applied)
    patterns_prune_hours: Annotated[float, msgspec.Meta(gt=0)] | None = None
    patterns_keep_days: NonNegative | None = None
    patterns_min_confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    patterns_max: Positive | None = None
    #: token usage: days kept live before they move, aggregated, to monthly archives
    token_keep_days: Positive = 90
    #: token usage: a retried ``request_id`` is recognised for this many days
    token_dedupe_days: Positive = 2
    #: token usage: USD per million tokens by model, ``{"model": {"input": 3.0, "output": 15.0}}``
    token_prices: dict[str, dict[str, NonNegative]] = {}
    #: a store's own engine, overriding ``backend`` for it: ``{"state": "sqlite"}``
    backends: dict[str, str] = {}
    #: monitoring: serve ``/metrics``, ``/api/metrics`` and the dashboard on this port
    #: (``None``: no server; ``0``: a free port, see ``Runtime.metrics_address``)
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"
    #: monitoring: the directory's sizes and record counts are read again at most this often
    metrics_stats_seconds: NonNegative = 10.0
    #: growth alerts (the persistence review's limits): the largest audit file, the
    #: core state's bytes, learned patterns, active agents, and the disk's free bytes
    alert_audit_file_bytes: Positive = 10 * 1024**3
    alert_state_bytes: Positive = 100 * 1024**2
    alert_patterns: Positive = 10_000
    alert_active_agents: Positive = 1_000
    alert_disk_free_bytes: Positive = 1024**3
    #: where archives, backups and the replicated log go off the machine:
    #: ``s3://bucket/prefix`` or ``file:///path`` (``None``: nowhere, no replication)
    archive_url: str | None = None
    #: the S3-compatible endpoint of an ``s3://`` archive (``None``: AWS itself)
    archive_endpoint: str | None = None
    #: with ``archive_url``: seconds between two shipments of the write-ahead logs
    replicate_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    #: with ``archive_url``: MiB of write-ahead log not yet shipped that may wait on
    #: this disk while the remote is down; past it the segments are still kept (no
    #: data is dropped, the chain stays whole), ``rt.metrics().replication`` says
    #: so and one warning is logged per excess
    replicate_hold_mb: Positive = 1024
    #: with ``archive_url``: complete bases (with the log shipped after each) kept
    #: on the remote; older ones are deleted by the replicator after each new base
    #: is up (``None``: every base is kept)
    replicate_retention: Annotated[int, msgspec.Meta(ge=1)] | None = None

    @property
    def path(self) -> Path:
        return Path(self.data_dir)

    @property
    def sqlite_file(self) -> Path:
        """Where the ``sqlite`` backend keeps its database."""
        return Path(self.sqlite_path) if self.sqlite_path else self.path / SQLITE_DB_NAME

    def engine_of(self, store: str) -> str:
        """The engine *store* runs on: its ``backends`` entry, else ``backend``."""
        return self.backends.get(store, self.backend)

    @property
    def engines(self) -> dict[str, str]:
        """Every store's engine, by store name."""
        return {store: self.engine_of(store) for store in STORE_NAMES}

    @property
    def file_mode_bits(self) -> int:
        """:attr:`file_mode` as a number (``0o600``)."""
        return int(self.file_mode, 8)

    @property
    def fsync(self) -> bool:
        return self.durability != "none"

    def replace(self, **options: Any) -> Config:
        """A copy with *options* changed and validated (``None`` values are ignored)."""
        given = {k: v for k, v in options.items() if v is not None}
        return _build({**msgspec.structs.asdict(self), **given}, "option")

    def with_env(self, environ: Mapping[str, str] | None = None) -> Config:
        """A copy with every ``MARCUS_PERSIST_<OPTION>`` variable applied."""
        environ = os.environ if environ is None else environ
        fields = {f.name for f in msgspec.structs.fields(Config)}
        found = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in environ.items()
            if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in fields
        }
        for variable, name in ENV_ALIASES.items():
            if variable in environ:
                found.setdefault(name, environ[variable])
        if "backends" in found:  # a mapping: the variable holds JSON
            found["backends"] = _json_option(f"{ENV_PREFIX}BACKENDS", found["backends"])
        if not found:
            return self
        merged = {**msgspec.structs.asdict(self), **found}
        return _build(merged, "environment variable", strict=False)

    @classmethod
    def from_marcus(cls, document: Mapping[str, Any]) -> Config:
        """Read Marcus's ``config_marcus.json`` shape; keys Marcus uses elsewhere are ignored.

        ``persistence_options.storage_dir`` names Marcus's ``marcus_state``
        directory; the data root is its parent when it ends in ``marcus_state``.
        """
        features = document.get("features", {})
        if not isinstance(features, Mapping):
            raise ConfigError("features: expected an object")
        options = dict(features.get("persistence_options") or {})
        if "persistence" in features:
            options.setdefault("backend", features["persistence"])
        storage_dir = options.pop("storage_dir", None)
        if storage_dir is not None and "data_dir" not in options:
            storage = Path(str(storage_dir))
            options["data_dir"] = str(storage.parent if storage.name == "marcus_state" else storage)
        known = {f.name for f in msgspec.structs.fields(cls)}
        for key in sorted(set(options) - known):
            log.warning("features.persistence_options.%s is not an option; ignored", key)
            del options[key]
        return _build(options, "features.persistence_options")

    @classmethod
    def from_file(cls, path: str | Path) -> Config:
        """Load a ``config_marcus.json`` file."""
        try:
            document = msgspec.json.decode(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a JSON object at the top")
        return cls.from_marcus(document)


def _build(options: Mapping[str, Any], where: str, *, strict: bool = True) -> Config:
    try:
        config = msgspec.convert(options, Config, strict=strict)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.max_batch`"; name the option the user wrote
        message = str(exc).replace("`$.", f"{where} `").replace("`$`", where)
        raise ConfigError(message) from None
    if config.file_mode_bits & 0o600 != 0o600 or config.file_mode_bits & 0o022:
        raise ConfigError(
            f"{where} file_mode: {config.file_mode!r} must give the owner read and write "
            "and nobody else write (e.g. 0600, 0640, 0644)"
        )
    if config.backend not in BACKEND_NAMES:
        raise ConfigError(
            f"{where} backend: unknown backend {config.backend!r}; "
            f"expected one of {', '.join(BACKEND_NAMES)}"
        )
    _check_backends(config, where)
    return config


def _json_option(name: str, text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"environment variable {name}: not valid JSON: {exc}") from None


def _check_backends(config: Config, where: str) -> None:
    """Each store's engine must exist, and the engines must be able to run side by side."""
    for store, engine in config.backends.items():
        if store not in STORE_NAMES:
            raise ConfigError(
                f"{where} backends: unknown store {store!r}; "
                f"expected one of {', '.join(STORE_NAMES)}"
            )
        if engine not in BACKEND_NAMES:
            raise ConfigError(
                f"{where} backends.{store}: unknown backend {engine!r}; "
                f"expected one of {', '.join(BACKEND_NAMES)}"
            )
    used = set(config.engines.values())
    if "memory" in used and len(used) > 1:
        kept = sorted(s for s, e in config.engines.items() if e == "memory")
        raise ConfigError(
            f"{where} backends: {', '.join(kept)} on memory beside durable engines would lose "
            "that data at every restart while the rest is kept; put every store on memory "
            "or none"
        )
