"""Remote operation over ZeroMQ: streams, control, remote engines, viewer (see server.py).

Wire format in :mod:`smartscope.remote.wire`; the in-run server in
:mod:`smartscope.remote.server`; :class:`Client` for scripts and notebooks; workers and
the ``kind: remote`` stage in :mod:`smartscope.remote.worker`; keys in
:mod:`smartscope.remote.keys`; the napari viewer in :mod:`smartscope.remote.viewer`.
"""

from smartscope.remote.client import Client, RemoteError
from smartscope.remote.server import RemoteConfig, RemoteServer, attach_server
from smartscope.remote.worker import RemoteStage, RemoteStageConfig, Worker

__all__ = [
    "Client",
    "RemoteConfig",
    "RemoteError",
    "RemoteServer",
    "RemoteStage",
    "RemoteStageConfig",
    "Worker",
    "attach_server",
]
