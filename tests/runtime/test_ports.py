"""facecraft.runtime.ports: auto ports outside the ephemeral range, clear errors for taken ports,
and the proof of which process listens on a port."""

from __future__ import annotations

import os
import socket

import pytest

from facecraft.runtime import ports
from facecraft.runtime.ports import (
    BindAddressError,
    PortConflictError,
    PortInUseError,
    auto_port_windows,
    can_bind,
    check_host_port,
    check_ports_free,
    ephemeral_range,
    free_port,
    process_listens_on,
)
from tests.runtime.http_servers import idle_child, static_http_server


def test_auto_ports_are_outside_the_ephemeral_range_and_never_repeat():
    low, high = ephemeral_range()
    handed = [free_port() for _ in range(50)]
    assert len(set(handed)) == len(handed)
    assert not [port for port in handed if low <= port <= high], (low, high, handed)
    assert all(can_bind("127.0.0.1", port) for port in handed)


def test_windows_follow_the_kernel_setting(tmp_path):
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("20000\t60999\n")
    assert ephemeral_range(setting) == (20000, 60999)
    assert auto_port_windows((20000, 60999)) == [range(10000, 20000), range(61000, 65536)]
    # nearly everything ephemeral: what is left below it, however small
    assert auto_port_windows((1100, 65535)) == [range(1024, 1100)]
    assert auto_port_windows((1024, 65535)) == []  # then free_port lets the kernel choose
    assert ephemeral_range(tmp_path / "missing") == ports.DEFAULT_EPHEMERAL_RANGE


def test_a_taken_port_is_a_clear_error_naming_port_role_and_holder():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        assert not can_bind("127.0.0.1", port)
        with pytest.raises(PortInUseError) as caught:
            check_ports_free(
                "127.0.0.1", {"Triton http": free_port(), "gateway": port}, {"gateway": "--gateway-port"}
            )
    assert (caught.value.port, caught.value.role) == (port, "gateway")
    message = str(caught.value)
    assert f"port {port} (gateway) on 127.0.0.1 is already in use" in message
    assert f"pid {os.getpid()}" in message and "--gateway-port" in message
    check_ports_free("127.0.0.1", {"auto": 0})  # 0 means "choose one": nothing to check


def test_process_listens_on_tells_the_child_from_another_listener(tmp_path):
    with static_http_server(tmp_path) as (server, port), idle_child() as sibling:
        assert process_listens_on(server.pid, port)
        assert process_listens_on(os.getpid(), port)  # its parent: the listener is a descendant
        assert not process_listens_on(sibling.pid, port)
        assert not process_listens_on(server.pid, free_port())
    assert not process_listens_on(server.pid, port)


def test_every_taken_port_is_named_and_two_roles_on_one_port_are_refused():
    with socket.socket() as first, socket.socket() as second:
        for holder in (first, second):
            holder.bind(("127.0.0.1", free_port()))
            holder.listen()
        a, b = first.getsockname()[1], second.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            check_ports_free("127.0.0.1", {"Triton http": a, "Triton grpc": free_port(), "gateway": b})
    assert f"port {a} (Triton http)" in str(caught.value) and f"port {b} (gateway)" in str(caught.value)
    assert (caught.value.port, caught.value.role) == (a, "Triton http")
    with pytest.raises(PortConflictError, match="port 9000 is given for both Triton http and gateway"):
        check_ports_free("127.0.0.1", {"Triton http": 9000, "Triton grpc": 0, "gateway": 9000})
    check_ports_free("127.0.0.1", {"a": 0, "b": 0})  # two automatic ports never conflict


@pytest.mark.parametrize(
    ("host", "reason"),
    [("bogus.invalid", "does not resolve"), ("192.0.2.1", "not an address of this host"), ("", "empty")],
)
def test_an_unusable_bind_address_is_a_clear_error(host, reason):
    with pytest.raises(BindAddressError, match=reason):
        check_ports_free(host, {"gateway": free_port()})


@pytest.mark.parametrize("good", ["127.0.0.1:8001", "triton:8001", "[::1]:8001", " localhost:1 "])
def test_host_port_accepts_grpc_targets(good):
    assert check_host_port(good) == good.strip()


@pytest.mark.parametrize("bad", ["127.0.0.1:99999", "127.0.0.1:0", "garbage", ":8001", "http://x:8001", "x:"])
def test_host_port_refuses_what_would_wrap_or_never_connect(bad):
    with pytest.raises(ValueError, match="HOST:PORT"):
        check_host_port(bad)
