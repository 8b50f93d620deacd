"""Command functions for the ``smartscope`` CLI: ``worker``, ``keys``, ``serve``, ``watch``.

Register with ``app.command("worker")(worker_cmd)`` etc. The library code they drive
(:mod:`~smartscope.remote.worker`, :mod:`~smartscope.remote.keys`,
:mod:`~smartscope.remote.serve`, :mod:`~smartscope.remote.client`) imports no typer.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from smartscope.config.remote import RemoteConfig
from smartscope.exceptions import fail
from smartscope.remote.client import Client
from smartscope.remote.keys import make_keys
from smartscope.remote.serve import RunService
from smartscope.remote.viewer import ViewerModel
from smartscope.remote.worker import Worker, build_stage

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


def worker_cmd(
    stage: Annotated[
        str, typer.Option(help='stage config as JSON, e.g. \'{"kind":"engine","bundle":"..."}\'')
    ],
    bind: Annotated[str, typer.Option(help="address to listen on (non-loopback needs keys)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 5570,
    secret_key: Annotated[Path | None, typer.Option(help="CurveZMQ server .key_secret")] = None,
    authorized_keys: Annotated[Path | None, typer.Option(help="folder of client public .key files")] = None,
) -> None:
    """Run a pipeline stage for remote loops (a `kind: remote` stage points at it)."""
    try:
        local = build_stage(stage)
        worker = Worker(local, bind, port, secret_key, authorized_keys)
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as exc:
        fail(str(exc), 2)

    def _stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    typer.echo(f"worker: stage {local.name!r} on {worker.address}", err=True)
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo(
            f"worker: served {worker.served}, refused {worker.refused}, failed {worker.failed}", err=True
        )
        worker.close()


def keys_cmd(
    folder: Annotated[Path, typer.Argument(help="folder to write the key files into")],
    name: Annotated[
        list[str] | None, typer.Option("--name", help="key-pair names (default: server and client)")
    ] = None,
) -> None:
    """Make CurveZMQ key pairs for remote streams, control and workers."""
    names = tuple(name) if name else ("server", "client")
    made = make_keys(folder, names)
    for n, (pub, sec) in made.items():
        typer.echo(f"{n}: public {pub}  secret {sec}")
    typer.echo(
        "give the server its .key_secret and an authorized-keys folder holding each client's .key; "
        "give each client its own .key_secret and the server's .key"
    )


def serve_cmd(
    config_dir: Annotated[Path, typer.Argument(help="folder of run configs a client may start by name")],
    bind: Annotated[str, typer.Option(help="address to listen on (non-loopback needs keys)")] = "127.0.0.1",
    pub_port: Annotated[int, typer.Option(help="PUB stream port")] = 5560,
    control_port: Annotated[int, typer.Option(help="control port")] = 5561,
    secret_key: Annotated[Path | None, typer.Option(help="CurveZMQ server .key_secret")] = None,
    authorized_keys: Annotated[Path | None, typer.Option(help="folder of client public .key files")] = None,
    report: Annotated[bool, typer.Option(help="write each run's report")] = True,
) -> None:
    """Wait for remote `start` commands and run the named configs, one at a time."""
    from pydantic import ValidationError

    try:
        rcfg = RemoteConfig(
            bind_address=bind,
            pub_port=pub_port,
            control_port=control_port,
            server_secret_key=secret_key,
            authorized_keys=authorized_keys,
        )
        service = RunService(rcfg, config_dir, report)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        fail(str(exc), 2)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    typer.echo(
        f"serving {service.config_dir} on {service.server.control_address} "
        f"(streams {service.server.pub_address})",
        err=True,
    )
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
