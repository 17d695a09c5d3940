"""`mtc`: the command line. Each concern registers its commands from its own module."""

import typer

app = typer.Typer(
    name="mtc",
    help="Multi-task model cluster: train, evaluate, serve, submit batch jobs, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Command modules register themselves on `app`, in the order `mtc --help` lists them. Plain
# imports: a command module that cannot be imported is a bug to see at once, not a command to drop.
from cli import train_cmds  # noqa: E402,F401,I001
from cli import variant_cmds  # noqa: E402,F401
from cli import serve_cmds  # noqa: E402,F401
from cli import batch_cmds  # noqa: E402,F401
from cli import bench_cmds  # noqa: E402,F401
from cli import bench_serve_cmds  # noqa: E402,F401
from cli import bench_overload_cmds  # noqa: E402,F401
