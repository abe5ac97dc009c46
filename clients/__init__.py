"""Python clients for Boardcast (and any y-websocket server)."""

from clients.provider import BoardClient, ClientProtocol, ConnectionLost, socket_url, wait_for

__all__ = ["BoardClient", "ClientProtocol", "ConnectionLost", "socket_url", "wait_for"]
