"""The internals of jupyter_server and jupyter-kernel-gateway that the spawned gateway
(`codebox.local._gateway_app`) overrides or configures still exist, with the signatures it
relies on. pyproject.toml bounds both packages; raise a bound only with this test green."""

from __future__ import annotations

import inspect

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from jupyter_client.multikernelmanager import MultiKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_client.restarter import KernelRestarter
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from kernel_gateway.gatewayapp import KernelGatewayApp
from kernel_gateway.jupyter_websocket import JupyterWebsocketPersonality
from kernel_gateway.mixins import TokenAuthorizationMixin
from kernel_gateway.services.kernels.manager import SeedingMappingKernelManager


def params(func) -> list[str]:
    return list(inspect.signature(func).parameters)


@pytest.mark.parametrize(("cls", "method", "expected"), [
    (ZMQChannelsWebsocketConnection, "connect", ["self"]),
    (ZMQChannelsWebsocketConnection, "_on_zmq_reply", ["self", "stream", "msg_list"]),
    # Output bounded at the first hop (`_gateway_output`): every message from a kernel.
    (ZMQChannelsWebsocketConnection, "handle_outgoing_message",
     ["self", "stream", "outgoing_msg"]),
    (SeedingMappingKernelManager, "start_watching_activity", ["self", "kernel_id"]),
    (KernelGatewayApp, "init_configurables", ["self"]),
    (KernelGatewayApp, "init_webapp", ["self"]),
    (KernelGatewayApp, "start_app", ["self"]),
    (KernelGatewayApp, "init_http_server", ["self"]),
    # The head start (`_head_start`) hooks a kernel manager's launch and its provisioner's.
    (MultiKernelManager, "pre_start_kernel", ["self", "kernel_name", "kwargs"]),
    (KernelManager, "_async_launch_kernel", ["self", "kernel_cmd", "kw"]),
    (LocalProvisioner, "launch_kernel", ["self", "cmd", "kwargs"]),
    (KernelSpecManager, "_kernel_dirs_default", ["self"]),
    # Templates' kernelspecs are found in template caches; their kernels' packages go with
    # them.
    (KernelSpecManager, "_find_spec_directory", ["self", "kernel_name"]),
    (SeedingMappingKernelManager, "shutdown_kernel", ["self", "kernel_id", "now", "restart"]),
    # A message-mode interrupt is sent by the gateway itself, which waits for the reply.
    (MultiKernelManager, "interrupt_kernel", ["self", "kernel_id"]),
    (KernelManager, "_connect_control_socket", ["self"]),
])
def test_overridden_methods_exist_with_their_parameters(cls, method, expected):
    assert params(getattr(cls, method)) == expected


@pytest.mark.parametrize(("cls", "trait"), [
    (ZMQChannelsWebsocketConnection, "limit_rate"),
    (ZMQChannelsWebsocketConnection, "websocket_handler"),
    (KernelGatewayApp, "kernel_websocket_connection_class"),
    (KernelGatewayApp, "kernel_manager_class"),
    (KernelGatewayApp, "port_retries"),
    (KernelGatewayApp, "auth_token"),
    (KernelGatewayApp, "ip"),
    (JupyterWebsocketPersonality, "list_kernels"),
    (KernelRestarter, "random_ports_until_alive"),
    (KernelGatewayApp, "kernel_spec_manager_class"),
])
def test_configured_traits_exist(cls, trait):
    assert trait in cls.class_trait_names()


def test_attributes_the_overrides_touch_exist():
    # start_watching_activity replaces the kernel manager's own: it reads `_kernels` and
    # sets what the original sets on the kernel.
    source = inspect.getsource(SeedingMappingKernelManager.start_watching_activity)
    for name in ("_kernels", "last_activity", "execution_state", "_activity_stream"):
        assert name in source, name
    assert hasattr(TokenAuthorizationMixin, "prepare")
    assert "io_loop" in inspect.getsource(KernelGatewayApp)
    # An adopted process is set where LocalProvisioner.launch_kernel sets its own, and the
    # kernel manager reads the connection from what the launch returns.
    launch = inspect.getsource(LocalProvisioner.launch_kernel)
    for name in ("self.process", "self.pid", "self.pgid", "self.cwd", "self.connection_info"):
        assert name in launch, name
    assert "_reconcile_connection_info(connection_info)" in inspect.getsource(
        KernelManager._async_launch_kernel)


def test_what_the_output_bound_and_its_backpressure_touch_exists():
    import zmq
    from tornado.iostream import BaseIOStream, IOStream
    from zmq.eventloop.zmqstream import ZMQStream

    # Backpressure reads how much a websocket's stream has yet to write, and stops and
    # resumes reading the kernel's ZMQ streams.
    init = inspect.getsource(BaseIOStream.__init__)
    assert "_total_write_index" in init and "_total_write_done_index" in init
    assert params(IOStream.write) == ["self", "data"]
    assert hasattr(ZMQStream, "stop_on_recv") and hasattr(ZMQStream, "on_recv_stream")
    assert hasattr(zmq, "MAXMSGSIZE")
    source = inspect.getsource(ZMQChannelsWebsocketConnection)
    assert "self.session.feed_identities" in source and "self.channels" in source


def test_a_message_mode_interrupt_is_sent_on_the_managers_control_socket():
    # What `_interrupt_by_message` does in its place (and then waits for the reply).
    source = inspect.getsource(KernelManager._async_interrupt_kernel)
    for name in ('interrupt_mode == "message"', "self._connect_control_socket()",
                 "self.session.send(self._control_socket, msg)"):
        assert name in source, name
