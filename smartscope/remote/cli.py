"""Command functions for the ``smartscope`` CLI: ``worker``, ``keys``, ``serve``, ``watch``.

Register with ``app.command("worker")(worker_cmd)`` etc.; ``worker_cmd`` and ``keys_cmd``
and ``serve_cmd`` live beside their code and are re-exported here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from smartscope.remote.client import Client
from smartscope.remote.keys import keys_cmd
from smartscope.remote.serve import serve_cmd
from smartscope.remote.viewer import ViewerModel
from smartscope.remote.worker import worker_cmd

__all__ = ["keys_cmd", "serve_cmd", "watch_cmd", "worker_cmd"]


def watch_cmd(
    host: Annotated[str, typer.Option(help="host of the run's remote server")] = "127.0.0.1",
    pub_port: Annotated[int, typer.Option(help="its PUB stream port")] = 5560,
    control_port: Annotated[int, typer.Option(help="its control port")] = 5561,
    secret_key: Annotated[Path | None, typer.Option(help="this client's CurveZMQ .key_secret")] = None,
    server_key: Annotated[Path | None, typer.Option(help="the server's public .key")] = None,
    seconds: Annotated[
        float | None, typer.Option(help="stop after this long (default: until the run stops)")
    ] = None,
) -> None:
    """Print a running loop's telemetry and events as they stream."""
    model = ViewerModel()
    end = time.monotonic() + seconds if seconds else None
    with Client(host, pub_port, control_port, secret_key, server_key) as client:
        client.subscribe("telemetry", "event")
        while end is None or time.monotonic() < end:
            msg = client.recv(1.0)
            if msg is None:
                continue
            model.apply(msg)
            if msg.topic == "telemetry":
                typer.echo(model.summary() + "\n")
            else:
                typer.echo(f"event: {msg.meta}")
                if msg.meta.get("event") == "stop":
                    break
        if client.dropped:
            typer.echo(f"messages lost by this subscriber: {client.dropped}")
