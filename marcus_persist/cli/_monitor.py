"""``marcus-persist metrics`` and ``marcus-persist dashboard``: a directory's metrics,
read-only and without its lock (safe while a runtime serves it)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import click

from marcus_persist.cli._common import DATA_DIR, require_data_dir

__all__ = ("dashboard_command", "metrics_command")

_EXTRA = "monitoring needs the metrics extra: pip install 'marcus-persist[metrics]'"


def _require_extra() -> None:
    try:
        import hypercorn  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError:
        raise click.ClickException(_EXTRA) from None


@click.command("metrics")
@DATA_DIR
def metrics_command(data_dir: Path) -> None:
    """Print DATA_DIR's metrics in Prometheus's text format (what /metrics serves,
    without the counters of a running runtime). Read-only: takes no lock."""
    require_data_dir(data_dir)
    _require_extra()
    from marcus_persist.ops.monitor import directory_exposition

    sys.stdout.write(directory_exposition(data_dir).decode())


@click.command("dashboard")
@DATA_DIR
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free one).",
)
def dashboard_command(data_dir: Path, host: str, port: int) -> None:
    """Serve the live dashboard (and /metrics, /api/metrics) for DATA_DIR until
    interrupted; print its address. Read-only: takes no lock."""
    require_data_dir(data_dir)
    _require_extra()
    from marcus_persist.ops.monitor import serve_directory

    def tell(address: tuple[str, int]) -> None:
        click.echo(f"dashboard of {data_dir} on http://{address[0]}:{address[1]}/", err=False)
        sys.stdout.flush()

    try:
        anyio.run(serve_directory, data_dir, host, port, tell)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
