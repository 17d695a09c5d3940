"""`mtc`: the command line. Each concern registers its commands from its own module."""

import typer

app = typer.Typer(
    name="mtc",
    help="Multi-task model cluster: train, evaluate, serve, submit batch jobs, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Command modules register themselves on `app`; each import is guarded so that one concern's
# missing optional piece never takes the whole CLI down.
from cluster.cli import train_cmds  # noqa: E402,F401

try:  # noqa: SIM105
    from cluster.cli import serve_cmds  # noqa: F401
except ImportError:  # pragma: no cover - appears once cluster/ grows serve_cmds
    pass
try:  # noqa: SIM105
    from cluster.cli import bench_cmds  # noqa: F401
except ImportError:  # pragma: no cover
    pass
try:  # noqa: SIM105 - `mtc bench serve` (serving benchmark) hangs off bench_cmds' bench_app
    from cluster.cli import bench_serve_cmds  # noqa: F401
except ImportError:  # pragma: no cover
    pass
