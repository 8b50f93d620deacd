"""Remote operation over ZeroMQ: streams, control, remote engines, viewer.

Wire format in :mod:`smartscope.remote.wire`; control commands in
:mod:`smartscope.remote.commands`; the in-run server in :mod:`smartscope.remote.server`
(configured by :class:`smartscope.config.RemoteConfig`); :class:`Client` for scripts and
notebooks; the ``kind: remote`` stage in :mod:`smartscope.remote.stage` and the worker
that serves it in :mod:`smartscope.remote.worker`; keys in :mod:`smartscope.remote.keys`;
the napari viewer in :mod:`smartscope.remote.viewer`.

Importing this package loads only the client side; the server, stage and worker are
imported from their modules.
"""

from smartscope.config.remote import RemoteConfig
from smartscope.remote.client import Client, RemoteError

__all__ = ["Client", "RemoteConfig", "RemoteError"]
