"""Python clients for Boardcast (and any y-websocket server)."""

from clients.provider import BoardClient, ConnectionLost, socket_url, wait_for
from crdt.session import ClientProtocol

__all__ = ["BoardClient", "ClientProtocol", "ConnectionLost", "socket_url", "wait_for"]
