"""CurveZMQ keys and the authenticator that admits only known clients.

``smartscope keys DIR`` writes ``server.key`` / ``server.key_secret`` and
``client.key`` / ``client.key_secret`` (ZeroMQ certificate files, Z85 text). The server
loads its secret file and admits the public keys found in an authorized-keys folder
(``*.key``); a client loads its own secret file and the server's public one.

:class:`CurveAuthenticator` answers ZeroMQ's ZAP requests for one context: a CURVE
handshake from an unknown key (or any non-CURVE mechanism) is refused and counted.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
import zmq.utils.z85

from smartscope.exceptions import InvalidValue

log = logging.getLogger(__name__)

__all__ = [
    "CurveAuthenticator",
    "apply_client_keys",
    "load_authorized",
    "load_keypair",
    "make_keys",
]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def make_keys(folder: Path, names: tuple[str, ...] = ("server", "client")) -> dict[str, tuple[Path, Path]]:
    """Write one key pair per name; returns name -> (public file, secret file)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, Path]] = {}
    for name in names:
        pub, sec = zmq.auth.create_certificates(str(folder), name)
        Path(sec).chmod(0o600)
        out[name] = (Path(pub), Path(sec))
    return out


def load_keypair(secret_file: Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``*.key_secret`` file."""
    if not secret_file.is_file():
        raise FileNotFoundError(f"key file {str(secret_file)!r} does not exist")
    pub, sec = zmq.auth.load_certificate(str(secret_file))
    if sec is None:
        raise InvalidValue(f"key file {str(secret_file)!r} holds no secret key (use the .key_secret file)")
    return pub, sec


def load_public(public_file: Path) -> bytes:
    if not public_file.is_file():
        raise FileNotFoundError(f"key file {str(public_file)!r} does not exist")
    pub, _ = zmq.auth.load_certificate(str(public_file))
    return pub


def load_authorized(folder: Path) -> set[bytes]:
    """Public keys of every ``*.key`` file in ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"authorized-keys folder {str(folder)!r} does not exist")
    keys = {load_public(p) for p in sorted(folder.glob("*.key"))}
    if not keys:
        raise InvalidValue(f"authorized-keys folder {str(folder)!r} holds no *.key files")
    return keys


def apply_server_keys(sock: zmq.Socket[Any], secret_file: Path) -> None:
    pub, sec = load_keypair(secret_file)
    sock.curve_server = True
    sock.curve_publickey = pub
    sock.curve_secretkey = sec


def apply_client_keys(sock: zmq.Socket[Any], secret_file: Path, server_public_file: Path) -> None:
    pub, sec = load_keypair(secret_file)
    sock.curve_publickey = pub
    sock.curve_secretkey = sec
    sock.curve_serverkey = load_public(server_public_file)


class CurveAuthenticator:
    """A ZAP handler thread: admits CURVE clients whose public key is authorized."""

    def __init__(self, ctx: zmq.Context[Any], authorized: set[bytes]) -> None:
        self.authorized = set(authorized)
        self.refused = 0
        self.admitted = 0
        self._sock = ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="smartscope-zap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                msg = self._sock.recv_multipart()
            except zmq.ZMQError:
                return
            # version, request id, domain, address, identity, mechanism, credentials...
            req_id = msg[1] if len(msg) > 1 else b""
            ok = False
            if len(msg) >= 7 and msg[0] == b"1.0" and msg[5] == b"CURVE":
                ok = zmq.utils.z85.encode(msg[6]) in self.authorized
            if ok:
                self.admitted += 1
            else:
                self.refused += 1
                log.warning("refused an unauthenticated connection from %r", msg[3] if len(msg) > 3 else b"?")
            code, text = (b"200", b"OK") if ok else (b"400", b"unknown key")
            try:
                self._sock.send_multipart([b"1.0", req_id, code, text, b"user" if ok else b"", b""])
            except zmq.ZMQError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self._sock.close(0)
