"""The optional ``remote:`` section: ZMQ streams out, validated control in."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, model_validator

from smartscope.config.base import FrozenModel
from smartscope.exceptions import InvalidValue

__all__ = ["RemoteConfig", "is_loopback"]


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class RemoteConfig(FrozenModel):
    """The optional ``remote:`` section of a run config."""

    bind_address: str = Field(default="127.0.0.1", description="interface to listen on; loopback by default")
    pub_port: int = Field(default=5560, ge=0, le=65535, description="PUB stream port (0: any free port)")
    control_port: int = Field(default=5561, ge=0, le=65535, description="control ROUTER port (0: any free)")
    server_secret_key: Path | None = Field(default=None, description="CurveZMQ server .key_secret file")
    authorized_keys: Path | None = Field(default=None, description="folder of client public .key files")
    sndhwm: int = Field(default=16, ge=1, description="messages queued per subscriber before it drops")
    queue_frames: int = Field(default=8, ge=1, description="frames waiting for the publisher thread")
    raw_every: int = Field(default=1, ge=1, description="publish every Nth raw frame")
    telemetry_interval_s: float = Field(default=0.5, gt=0)
    max_commands_per_s: float = Field(
        default=20.0, gt=0, le=10_000, description="per client; more are refused (and audited)"
    )

    @model_validator(mode="after")
    def _secure_off_loopback(self) -> RemoteConfig:
        if self.pub_port and self.pub_port == self.control_port:
            raise InvalidValue(f"pub_port and control_port must differ (both {self.pub_port})")
        if (self.server_secret_key is None) != (self.authorized_keys is None):
            raise InvalidValue("server_secret_key and authorized_keys go together (CurveZMQ)")
        if not is_loopback(self.bind_address) and self.server_secret_key is None:
            raise InvalidValue(
                f"bind_address {self.bind_address!r} is not loopback: listening there needs "
                "CurveZMQ keys (server_secret_key, authorized_keys; make them with `smartscope keys`)"
            )
        return self

    @property
    def secure(self) -> bool:
        return self.server_secret_key is not None
