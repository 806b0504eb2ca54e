"""Addresses as sandboxctl takes them, and the connection they open."""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Tuple

__all__ = ["default_address", "open_socket"]


def default_address() -> str:
    """$SANDBOX_AGENT_ADDR, else the agent's default socket: the same rule
    as sandboxctl (agent/defaults.h). Root: /run/sandbox-agent.sock; other
    users $XDG_RUNTIME_DIR/sandbox-agent.sock (/tmp/sandbox-agent-UID.sock
    without one), or the root agent's socket when theirs does not exist."""
    env = os.environ.get("SANDBOX_AGENT_ADDR")
    if env:
        return env
    uid = os.geteuid()
    root_sock = "/run/sandbox-agent.sock"
    if uid == 0:
        return "unix:" + root_sock
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    path = f"{xdg}/sandbox-agent.sock" if xdg.startswith("/") else f"/tmp/sandbox-agent-{uid}.sock"
    if not os.path.exists(path) and os.path.exists(root_sock):
        path = root_sock
    return "unix:" + path


def _split_host_port(hostport: str, address: str) -> Tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address '{address}': expected tcp:HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


async def open_socket(address: str) -> Tuple[socket.socket, str]:
    """Connects a non-blocking stream socket to address; returns it and its
    kind ("unix", "tcp" or "vsock")."""
    loop = asyncio.get_running_loop()
    if address.startswith("tcp:"):
        host, port = _split_host_port(address[4:], address)
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        last: OSError = OSError(f"connect to {address}: no address")
        for family, type_, proto, _, sockaddr in infos:
            s = socket.socket(family, type_, proto)
            s.setblocking(False)
            try:
                await loop.sock_connect(s, sockaddr)
            except OSError as e:
                s.close()
                last = e
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s, "tcp"
        raise last
    if address.startswith("vsock:"):
        cid, sep, vport = address[6:].partition(":")
        if not sep or not cid.isdigit() or not vport.isdigit():
            raise ValueError(f"address '{address}': expected vsock:CID:PORT")
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await loop.sock_connect(s, (int(cid), int(vport)))
        except BaseException:
            s.close()
            raise
        return s, "vsock"
    path = address[5:] if address.startswith("unix:") else address
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        await loop.sock_connect(s, path)
    except BaseException:
        s.close()
        raise
    return s, "unix"
