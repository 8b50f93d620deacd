"""``smartscope train ...``: one typer app, one command per model family.

Each family keeps its command in its own ``cli`` module (``models/<family>/cli.py``); this
module only gathers them. torch is imported by the training code, not here.
"""

from __future__ import annotations

from smartscope.errors import command_app
from smartscope.models.ao.cli import train_zernike_cmd
from smartscope.models.denoise.cli import train_denoise_cmd
from smartscope.models.events.cli import train_events_cmd
from smartscope.models.smlm.cli import train_smlm_cmd
from smartscope.models.stain.cli import train_stain_cmd

__all__ = ["app"]

app = command_app(help="Train engines and write deployable bundles.", no_args_is_help=True)


@app.callback()
def _train() -> None:
    """Train engines and write deployable bundles (one command per engine)."""


app.command("denoise")(train_denoise_cmd)
app.command("smlm")(train_smlm_cmd)
app.command("zernike")(train_zernike_cmd)
app.command("stain")(train_stain_cmd)
app.command("events")(train_events_cmd)


if __name__ == "__main__":
    app()
