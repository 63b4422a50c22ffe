"""The warm kernel pool of a spawned gateway: reuse, exhaustion, idle limit, dead kernels,
cleanup."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from codebox import CodeBoxSettings, LocalBox
from codebox.local._gateway import shared_gateway
from tests.helpers import our_processes, wait_until


def pool_state() -> dict:
    proc = shared_gateway._process
    assert proc is not None
    return httpx.get(f"{proc.url}/codebox/pool", headers={"Authorization": f"token {proc.token}"},
                     trust_env=False, timeout=10).json()


def warm_kernel() -> str:
    """Wait until the pool holds a warm kernel; return its id."""
    return wait_until(lambda: (pool_state()["warm"] or [None])[0], timeout=60, interval=0.05)


def kernel_pid(kernel_id: str) -> int | None:
    for pid, cmd in our_processes():
        if f"kernel-{kernel_id}.json" in cmd:
            return pid
    return None


@pytest.fixture()
def first_box():
    """The box that spawns the gateway, so the pool has the settings of the test."""
    boxes = []

    def make(**settings) -> LocalBox:
        assert shared_gateway.pid is None, "another box holds a gateway"
        box = LocalBox(settings=CodeBoxSettings(**settings))
        box.start()
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.stop()


def test_a_further_box_takes_the_warm_kernel_and_the_pool_refills(first_box):
    first_box()
    pooled = warm_kernel()
    with LocalBox() as second:
        assert second.kernel_id == pooled
        assert second.run("1 + 1").content == "2"
        refill = warm_kernel()
        assert refill != pooled


def test_more_boxes_than_warm_kernels_all_get_their_own(first_box):
    first_box(pool_size=1)
    pooled = warm_kernel()

    def one(i):
        with LocalBox() as box:
            return box.kernel_id, box.run(f"{i} * 2").content

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, range(3)))
    assert [r[1] for r in results] == ["0", "2", "4"]
    kernels = [r[0] for r in results]
    assert len(set(kernels)) == 3 and pooled in kernels


def test_concurrent_takes_never_fill_the_pool_past_its_size(first_box):
    box = first_box(pool_size=1)
    warm_kernel()
    proc = shared_gateway._process
    headers = {"Authorization": f"token {proc.token}"}

    def take(_):
        return httpx.post(f"{proc.url}/codebox/pool", json={}, headers=headers,
                          trust_env=False, timeout=30).status_code

    with ThreadPoolExecutor(6) as pool:
        handed = list(pool.map(take, range(6))).count(200)
    assert handed >= 1
    state = pool_state()
    assert len(state["warm"]) + state["starting"] <= 1, state
    kernels = httpx.get(f"{proc.url}/api/kernels", headers=headers, trust_env=False).json()
    # The box's kernel, those handed out, and at most one in the pool.
    assert len(kernels) <= 1 + handed + 1, (handed, state, kernels)
    assert box.run("1").content == "1"


def test_warm_kernels_left_unused_are_shut_down(first_box):
    first_box(pool_idle_timeout=1)
    pooled = warm_kernel()
    pid = kernel_pid(pooled)
    assert pid is not None
    wait_until(lambda: pooled not in pool_state()["warm"] and kernel_pid(pooled) is None,
               timeout=30)


def test_a_pooled_kernel_that_died_is_not_handed_out_broken(first_box):
    first_box()
    pooled = warm_kernel()
    os.kill(kernel_pid(pooled), signal.SIGKILL)
    with LocalBox() as box:
        assert box.run("print('works')", timeout=60).stdout == "works\n"


def test_a_pooled_kernel_deleted_under_the_pool_is_skipped(first_box):
    first_box()
    pooled = warm_kernel()
    proc = shared_gateway._process
    httpx.delete(f"{proc.url}/api/kernels/{pooled}",
                 headers={"Authorization": f"token {proc.token}"}, trust_env=False, timeout=30)
    with LocalBox() as box:
        assert box.kernel_id != pooled
        assert box.run("1").content == "1"


def test_the_pool_goes_with_the_last_box(first_box):
    # (What this worker's earlier tests keep running, a shared gateway of a suite, stays.)
    before = {pid for pid, _ in our_processes()}
    box = first_box(pool_size=2)
    wait_until(lambda: len(pool_state()["warm"]) == 2, timeout=60)
    box.stop()
    wait_until(lambda: not [pid for pid, _ in our_processes() if pid not in before],
               timeout=20)
