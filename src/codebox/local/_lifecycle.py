"""A `LocalBox`'s kernel from start to stop: getting a kernel (a warm one from the pool, or a
new one), connecting and setting it up, noticing one that went away, restarting, stopping.
Pure: generators that yield requests (`_requests`) and receive their results."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from .._engine import Op
from ..errors import (
    CodeBoxConnectionError,
    CodeBoxError,
    CodeBoxNotFoundError,
    CodeBoxTimeoutError,
    GatewayError,
)
from ..schema import CodeBoxStatus
from ._kernel import (
    KernelConfig,
    KernelGone,
    KernelState,
    call,
    forget_kernel,
    http,
    kernel_gone,
    now,
)
from ._requests import Connect, Disconnect, Gateway, Http, ReleaseGateway
from ._sandbox import KERNEL_NAME as SANDBOX_KERNEL
from ._sandbox import POLICY_ENV as SANDBOX_POLICY_ENV

SETUP_PATIENCE = 10.0
"""Seconds of silence after which setting a kernel up is asked again on a new connection."""


def ensure_kernel(st: KernelState, cfg: KernelConfig) -> Op[None]:
    """Make sure the box has a live kernel, connected and set up; start one if needed. A
    start that fails holds nothing: no kernel, no hold on the gateway."""
    fresh = st.kernel_id is None and st.status == "stopped"  # not a box healing
    try:
        yield from _ensure(st, cfg)
    except CodeBoxError:
        if fresh:
            yield from _give_back(st, cfg)
        raise


def _ensure(st: KernelState, cfg: KernelConfig) -> Op[None]:
    if st.stopping():
        raise CodeBoxError("the box is being stopped")
    if (st.kernel_id is not None and st.address is not None and not st.address.pool
            and now() - st.last_used > cfg.check_after):
        # A gateway given by URL may have deleted or culled the kernel meanwhile, and leave
        # the old websocket open and silent: ask before relying on it (once per operation).
        st.last_used = now()
        if (yield from kernel_gone(st, unreachable=False)):
            yield from forget_kernel(st)
    if st.kernel_id is not None and st.address is not None:
        try:
            yield Connect(st.address, st.kernel_id, cfg.start_timeout)
        except (CodeBoxNotFoundError, CodeBoxConnectionError):
            st.kernel_id = None  # the kernel, or its gateway, is gone: start afresh
            st.lost = True
    if st.kernel_id is None:
        st.status = "starting"
        if st.lost and cfg.kept_root is not None and cfg.sandbox is not None:
            cfg = replace(cfg, sandbox={**cfg.sandbox, "work_dir": cfg.kept_root})
        yield from _start_kernel(st, cfg)
    if st.needs_setup:
        # A kernel restarted or replaced keeps the box's root, even one the kernel made.
        root = cfg.root if cfg.root is not None else st.root
        try:
            data = yield from _set_up(st, cfg, cfg.dialect.setup(root, cfg.env))
        except KernelGone:
            return (yield from _ensure(st, cfg))
        st.root = data[0].content["root"]
        st.started = data[0].content.get("started")
        st.needs_setup = False
        after, st.after_setup = st.after_setup, None
        if after is not None:
            yield from after(st, cfg)
    st.status = "running"


def _start_kernel(st: KernelState, cfg: KernelConfig) -> Op[None]:
    """A new kernel for the box, connected."""
    st.address = yield Gateway()
    try:
        st.kernel_id = yield from _new_kernel(st, cfg)
    except CodeBoxConnectionError:
        if not st.address.pool:
            raise  # a gateway given by URL: not ours to replace
        # Ours may be exiting: a killed gateway closes its socket before the last of its
        # threads ends, and only then can it be reaped. Ask again (it is replaced if it
        # refuses connections); on a new one, try once more.
        refused, st.address = st.address, (yield Gateway(refused=st.address))
        if st.address.generation == refused.generation:
            raise
        st.kernel_id = yield from _new_kernel(st, cfg)
    st.needs_setup = True
    try:
        yield Connect(st.address, st.kernel_id, cfg.start_timeout)
    except (GatewayError, CodeBoxNotFoundError) as exc:
        if not st.address.pool or not (exc.http_status == 404 or (exc.http_status or 0) >= 500):
            raise
        # Our gateway refused the websocket of a kernel it just handed out (it is gone, or
        # died and never came back alive): that one is of no use. Once, one started for
        # this box, not a pooled one.
        yield from _delete_kernel(st, cfg)
        st.kernel_id = yield from _new_kernel(st, cfg, pooled=False)
        yield Connect(st.address, st.kernel_id, cfg.start_timeout)


def _delete_kernel(st: KernelState, cfg: KernelConfig) -> Op[None]:
    """Delete the box's kernel, if it has one, whatever became of it."""
    if st.kernel_id is not None and st.address is not None:
        try:
            yield Http(st.address, "DELETE", f"/api/kernels/{st.kernel_id}", None, cfg.timeout)
        except CodeBoxError:
            pass
    st.kernel_id = None


def _give_back(st: KernelState, cfg: KernelConfig) -> Op[None]:
    """What a failed start took: its kernel, its connection, its hold on the gateway."""
    yield from _delete_kernel(st, cfg)
    yield Disconnect()
    yield ReleaseGateway()
    st.status = "stopped"


def _set_up(st: KernelState, cfg: KernelConfig, code: str) -> Op[Any]:
    """Run the setup snippet, asking again on a fresh connection while the kernel is silent
    or answers without the snippet's data.

    A stock gateway that restarts a dead kernel on new ports strands a websocket that
    connected meanwhile: it stays open and silent, or its shell channel comes back before
    its IOPub, so the reply arrives and the data (on IOPub) is lost. Setup is idempotent, so
    silence for `SETUP_PATIENCE` seconds, or a reply without data, means reconnect (a new
    websocket is opened only once its channels answer) and ask again, all within
    ``start_timeout``.
    """
    end = now() + (cfg.start_timeout or 60.0)
    while True:
        wait = min(SETUP_PATIENCE, max(0.1, end - now()))
        try:
            data = yield from call(st, cfg, code, wait, "set up")
        except CodeBoxTimeoutError as exc:
            if now() + 0.1 >= end:
                raise CodeBoxTimeoutError(
                    f"set up: no answer from the kernel within {cfg.start_timeout:g} s"
                ) from exc
        else:
            if data:
                return data
            if now() + 0.1 >= end:
                raise CodeBoxError("set up: the kernel answered, but its data never came")
        assert st.address is not None and st.kernel_id is not None
        yield Disconnect()
        yield Connect(st.address, st.kernel_id, max(0.1, end - now()))


def _new_kernel(st: KernelState, cfg: KernelConfig, pooled: bool = True) -> Op[str]:
    """A kernel for the box: a warm one from the pool, else one started now."""
    kernel_id = (yield from _pooled_kernel(st, cfg)) if pooled else None
    if kernel_id is None:
        body = yield from http(st, "start a kernel", "POST", "/api/kernels",
                               _kernel_request(cfg), cfg.start_timeout)
        kernel_id = body["id"]
    return kernel_id


def _pooled_kernel(st: KernelState, cfg: KernelConfig) -> Op[str | None]:
    """A warm kernel from the gateway's pool, if it has one (ours do), else None."""
    assert st.address is not None
    if not st.address.pool:
        return None
    status, body = yield Http(st.address, "POST", "/codebox/pool",
                              {"name": cfg.kernel_name, "sandbox": cfg.sandbox}, cfg.timeout)
    return body["id"] if status == 200 and isinstance(body, dict) else None


def _kernel_request(cfg: KernelConfig) -> dict[str, Any]:
    """The body of ``POST /api/kernels``: a sandbox is the ``codebox-sandbox`` kernelspec,
    its policy in the env (gateways pass ``KERNEL_*`` variables to the provisioner); a
    gateway given by URL also gets `KernelConfig.gateway_env`."""
    if cfg.sandbox is None:
        request: dict[str, Any] = {"name": cfg.kernel_name}
        if cfg.gateway_env is not None:
            request["env"] = cfg.gateway_env
        return request
    policy = json.dumps(cfg.sandbox, sort_keys=True)
    return {"name": SANDBOX_KERNEL,
            "env": {**(cfg.gateway_env or {}), SANDBOX_POLICY_ENV: policy}}


def start(st: KernelState, cfg: KernelConfig) -> Op[CodeBoxStatus]:
    yield from ensure_kernel(st, cfg)
    return CodeBoxStatus(status="started")


def stop(st: KernelState, cfg: KernelConfig) -> Op[CodeBoxStatus]:
    """Delete the kernel (after removing its temporary directory, when the kernel made it),
    close the websocket and release the gateway. Never raises for a kernel already gone."""
    if st.kernel_id is not None and st.address is not None and cfg.remove_root:
        try:
            # The box may hold no connection (one that took over a running kernel).
            yield Connect(st.address, st.kernel_id, 5.0)
            yield from call(st, cfg, cfg.dialect.cleanup(st.root), 5.0, "clean up")
        except CodeBoxError:
            pass
    yield from _give_back(st, cfg)
    st.root = None
    st.lost = False
    return CodeBoxStatus(status="stopped")


def restart(st: KernelState, cfg: KernelConfig, deadline: float | None = None
            ) -> Op[CodeBoxStatus]:
    """A real kernel restart: variables gone, files kept (the same root)."""
    yield from ensure_kernel(st, cfg)
    st.needs_setup = True
    try:
        yield from http(st, "restart", "POST", f"/api/kernels/{st.kernel_id}/restart", {},
                        cfg.start_timeout)
    except (CodeBoxNotFoundError, GatewayError):
        # (A gateway answers 500 to the restart of a kernel it deleted.) Gone already: a
        # fresh kernel is what a restart gives, and the caller expects the variables gone.
        if not (yield from kernel_gone(st)):
            raise
        yield from forget_kernel(st, lost=False)
    # On the old websocket the restarted kernel's IOPub may not be subscribed yet, and the
    # set-up's idle status is lost (a 60 s wait, ~1 restart in 4). A new websocket is
    # nudged by the gateway until IOPub is live.
    yield Disconnect()
    if deadline is not None:
        cfg = replace(cfg, start_timeout=max(0.1, deadline - now()))
    yield from ensure_kernel(st, cfg)
    return CodeBoxStatus(status="restarted")
