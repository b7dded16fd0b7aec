"""TCP ports for the servers this project starts: choosing free ones, checking requested ones, and
proving which process listens on one.

Why auto-chosen ports avoid the ephemeral range: the kernel gives outgoing connections a local port
from ``net.ipv4.ip_local_port_range`` (32768–60999 by default). A port chosen there by binding port
0 is free when chosen, but while its server is down (a restart, a crash test) any outgoing
connection may take it — a client retrying a dead local server can even connect to itself when its
source port equals the destination (TCP simultaneous open) — and the restart then cannot bind it.
Ports outside that range are never handed to outgoing connections, so only another listener can
take them; :func:`free_port` also never hands the same port out twice in one process.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import threading
from collections.abc import Mapping
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)  # Linux's default
# Lowest port handed out: above the registered services people commonly run (8000–8080, 9090 ...).
LOWEST_AUTO_PORT = 10000
CANDIDATES_PER_CALL = 200

_handed_out: set[int] = set()
_lock = threading.Lock()


class PortInUseError(OSError):
    """A port a server must bind is already taken; the message names the port, its role and, when
    visible, the process holding it. ``port`` and ``role`` are attributes too."""

    def __init__(self, message: str, port: int, role: str):
        super().__init__(message)
        self.port = port
        self.role = role


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """``(low, high)`` of the kernel's ephemeral (outgoing-connection) port range, inclusive."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def auto_port_windows(ephemeral: tuple[int, int] | None = None) -> list[range]:
    """The port ranges :func:`free_port` draws from: 1024–65535 minus the ephemeral range, from
    :data:`LOWEST_AUTO_PORT` up when that leaves room."""
    low, high = ephemeral or ephemeral_range()
    windows = [range(max(LOWEST_AUTO_PORT, 1024), low), range(high + 1, 65536)]
    windows = [window for window in windows if len(window) >= 100]
    if not windows and low > 1024:
        windows = [range(1024, low)]
    return windows


def check_host_port(value: str) -> str:
    """``value`` stripped if it is ``HOST:PORT`` (a gRPC target such as Triton's: no scheme, port
    1..65535; ``[::1]:8001`` for IPv6), else ``ValueError``."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if "://" in text or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT with a port in 1..65535 (no scheme)")
    return text


class BindAddressError(OSError):
    """The bind address itself is unusable (does not resolve, or is not an address of this host)."""


def can_bind(host: str, port: int) -> bool:
    """True when a listening socket could bind ``host:port`` right now (``SO_REUSEADDR`` set, as
    servers set it, so a port in TIME_WAIT counts as free); False when the port is taken.
    Raises :class:`BindAddressError` when ``host`` cannot be bound at all."""
    if not host.strip():
        raise BindAddressError("the bind address is empty (use 0.0.0.0 for every interface)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise BindAddressError(f"bind address {host!r} does not resolve: {error.strerror}") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if error.errno == errno.EADDRNOTAVAIL:
                raise BindAddressError(f"bind address {host!r} is not an address of this host") from None
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, outside the ephemeral range (module doc), never
    returned before by this process. Falls back to a kernel-chosen port if none is found."""
    windows = auto_port_windows()
    with _lock:
        for _ in range(CANDIDATES_PER_CALL if windows else 0):
            window = random.choice(windows)
            port = random.randrange(window.start, window.stop)
            if port not in _handed_out and can_bind(host, port):
                _handed_out.add(port)
                return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port


def _listens_on(conn, port: int) -> bool:
    """Whether a ``psutil`` connection is a TCP socket listening on ``port`` (any address)."""
    import psutil

    return conn.status == psutil.CONN_LISTEN and bool(conn.laddr) and conn.laddr.port == port


def listening_pids(port: int) -> set[int]:
    """PIDs with a TCP socket listening on ``port`` (any address); empty when none is visible
    (other users' processes need root to be seen)."""
    import psutil

    pids = set()
    with contextlib.suppress(psutil.AccessDenied):
        for conn in psutil.net_connections(kind="tcp"):
            if _listens_on(conn, port) and conn.pid:
                pids.add(conn.pid)
    return pids


def process_listens_on(pid: int, port: int) -> bool:
    """True when process ``pid`` or one of its descendants has a TCP socket listening on ``port``:
    the proof that a server answering on that port is the child just started, not another one."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if any(_listens_on(conn, port) for conn in process.net_connections(kind="tcp")):
                return True
    return False


def describe_holder(port: int) -> str:
    """``" (held by pid 123: python -m facecraft.gateway)"`` when the listener is visible, else ''."""
    import psutil

    holders = []
    for pid in sorted(listening_pids(port)):
        with contextlib.suppress(psutil.Error):
            command = " ".join(psutil.Process(pid).cmdline()) or psutil.Process(pid).name()
            holders.append(f"pid {pid}: {command if len(command) <= 120 else command[:119] + '…'}")
    return f" (held by {'; '.join(holders)})" if holders else ""


class PortConflictError(ValueError):
    """One port was given to two roles (e.g. Triton HTTP and the gateway)."""


def check_distinct(ports: Mapping[str, int]) -> None:
    """Raise :class:`PortConflictError` when two roles of ``ports`` (``{role: port}``) share a
    non-zero port (0 = chosen automatically, always distinct)."""
    seen: dict[int, str] = {}
    for role, port in ports.items():
        if port and port in seen:
            raise PortConflictError(f"port {port} is given for both {seen[port]} and {role}")
        seen.setdefault(port, role)


def check_ports_free(host: str, ports: Mapping[str, int], hints: Mapping[str, str] | None = None) -> None:
    """Check the ports a start must bind (``{role: port}``, e.g. ``{"gateway": 8080}``; 0 = auto,
    skipped) on ``host``: :class:`PortConflictError` when two roles share one,
    :class:`BindAddressError` when ``host`` is unusable, :class:`PortInUseError` naming every taken
    one (its ``port``/``role``: the first). ``hints`` maps a role to how to choose another port
    (e.g. ``"--gateway-port or FACECRAFT_PORT"``)."""
    check_distinct(ports)
    hints = hints or {}
    taken = [(role, port) for role, port in ports.items() if port and not can_bind(host, port)]
    if taken:
        problems = []
        for role, port in taken:
            hint = f"; stop that process or choose another port with {hints[role]}" if role in hints else ""
            problems.append(f"port {port} ({role}) on {host} is already in use{describe_holder(port)}{hint}")
        raise PortInUseError("\n".join(problems), taken[0][1], taken[0][0])
