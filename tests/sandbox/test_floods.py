"""Output floods from a hostile tenant: every kind of output is cut at the first hop (in the
kernel, and at the gateway for a kernel that lifts its own bound), with a notice saying what
was dropped; the server, the gateway and the neighbours stay small and well; what a box
writes to its own stdout and stderr reaches nobody's log as a line of its own."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest
import websockets.sync.client as ws

from codebox import CodeBox, LocalBox, Sandbox, _limits
from codebox.local import _gateway_output
from codebox.local._jupyter import WS_SUBPROTOCOL, Session
from tests.helpers import alive, wait_until
from tests.sandbox.conftest import probe
from tests.server.harness import KEY, OTHER_KEY, running_server

MIB = 1024 * 1024
NOTICE = re.compile(r"\[codebox: (\d+) bytes of ([\w/+. -]+(?:, [\w/+. -]+)*) dropped")

# Each kind of output, a run making far more of it than the limit (LIMIT below).
FLOODS = {
    "stdout": "import sys\nfor _ in range(40):\n    sys.stdout.write('x' * 65536)\n"
              "    sys.stdout.flush()",
    "image/png": "from IPython.display import display\n"
                 "display({'image/png': 'A' * (1 << 20)}, raw=True)",
    "text/html": "from IPython.display import display\n"
                 "display({'text/html': 'x' * (1 << 20), 'text/plain': 'html'}, raw=True)",
    "error": "raise ValueError('v' * (3 << 20))",
}
LIMIT = 256 * 1024
# What a notice names of each kind (an error: its value and its traceback).
NAMED = {"error": ("error value", "traceback")}
CUT = "\n[codebox: "  # a notice of any hop (the client's own too)


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines()
                    if line.startswith("VmRSS:")).split()[1]) * 1024


def _size(out) -> int:
    texts = [c.content for c in out.chunks]
    if out.error is not None:
        texts += [out.error.value, out.error.traceback]
    return sum(len(t) for t in texts)


@pytest.mark.parametrize("kind", list(FLOODS))
def test_every_kind_of_output_is_cut_with_a_notice(kind):
    with LocalBox(sandbox=Sandbox(output_limit=LIMIT)) as box:
        out = box.run(FLOODS[kind], timeout=120)
        said = NOTICE.findall(out.content + (out.error.traceback if out.error else "")
                              + "".join(c.content for c in out.chunks))
        assert said and any(what in NAMED.get(kind, (kind,)) for _, what in said), said
        assert _size(out) < 3 * LIMIT, _size(out)
        assert probe(box, "print(6 * 7)") == "42\n"  # and the box works on


LIFT = """
kernel = get_ipython().kernel
kernel.session.send = type(kernel.session).send.__get__(kernel.session)  # unbound again
"""


def _frames(url: str, token: str, kernel_id: str, code: str) -> list[tuple[dict, dict]]:
    """Run ``code`` over a raw websocket to our gateway: (header, metadata) of every IOPub
    output message of the run, and their total size."""
    session = Session()
    msg_id, frame = session.execute_request(code)
    seen = []
    with ws.connect(f"{url.replace('http', 'ws')}/api/kernels/{kernel_id}/channels",
                    subprotocols=[WS_SUBPROTOCOL], max_size=None, proxy=None,
                    additional_headers={"Authorization": f"token {token}"}) as conn:
        conn.send(frame)
        reply = idle = False
        while not (reply and idle):
            data = conn.recv(timeout=60)
            view = memoryview(data)
            count = int.from_bytes(view[:8], "little")
            offsets = [int.from_bytes(view[8 * i:8 * i + 8], "little") for i in range(1, count + 1)]
            parts = [bytes(view[offsets[i]:offsets[i + 1]]) for i in range(count - 1)]
            header, parent = json.loads(parts[1]), json.loads(parts[2] or b"{}")
            if parent.get("msg_id") != msg_id:
                continue
            kind = header["msg_type"]
            reply = reply or kind == "execute_reply"
            idle = idle or (kind == "status" and b'"idle"' in parts[4])
            if kind in ("stream", "display_data", "error"):
                seen.append((header, json.loads(parts[3]), len(parts[4])))
    return seen


def test_a_kernel_that_lifts_its_own_bound_is_cut_at_the_gateway():
    from codebox.local._gateway import shared_gateway

    with LocalBox(sandbox=Sandbox(output_limit=LIMIT)) as box:
        probe(box, LIFT)
        proc = shared_gateway._process
        assert proc is not None
        seen = _frames(proc.url, proc.token, box.kernel_id, FLOODS["stdout"])
        cut = [meta.get(_limits.TRUNCATED_KEY) for _, meta, _ in seen]
        # Passed whole up to the budget (counted as the kernel counts), then cut once,
        # marked with what was dropped, then dropped and summed up before the run's end.
        budget = _gateway_output.Limits(LIMIT, LIMIT).budget(box.kernel_id).limit
        assert budget == LIMIT
        assert sum(size for _, _, size in seen) <= budget + 64 * 1024
        assert [c for c in cut if c] and all(c > 0 for c in cut if c), cut
        assert seen[-1][1].get(_limits.TRUNCATED_KEY) and len(seen) < 15, seen
        assert probe(box, "print(6 * 7)") == "42\n"


def test_a_hostile_kernels_giant_message_never_reaches_the_gateways_memory():
    from codebox.local._gateway import shared_gateway

    with LocalBox(sandbox=Sandbox(memory_mb=4096)) as box:
        probe(box, LIFT)
        gateway = shared_gateway.pid
        assert gateway is not None
        before = _rss(gateway)
        out = box.run("import sys\nsys.stdout.write('x' * (256 << 20))\nsys.stdout.flush()\n"
                      "print('after')", timeout=30)
        # ZMQ refused the message unread: the gateway never held it. (The run itself may
        # hang up to its timeout: its kernel sent what no hop passes, and lost it.)
        assert _rss(gateway) - before < 64 * MIB
        assert len(out.stdout) < 64 * MIB
        assert alive(gateway) and probe(box, "print(6 * 7)") == "42\n"


FOREIGN_FLOOD = """
import uuid
kernel = get_ipython().kernel
chunk = 'z' * (1 << 20)
for _ in range({n}):  # each under a run of its own: no run's budget stops them
    kernel.session.send(kernel.iopub_socket, 'stream', {{'name': 'stdout', 'text': chunk}},
                        parent={{'msg_id': uuid.uuid4().hex, 'msg_type': 'execute_request'}})
print('sent')
"""


def test_output_that_answers_no_request_of_a_connection_never_reaches_it():
    """A kernel that makes up a fresh run for every message (no run's budget stops it):
    the gateway passes a connection only the answers to its own requests."""
    from codebox.local._gateway import shared_gateway

    with LocalBox(sandbox=Sandbox(memory_mb=8192)) as box:
        gateway = shared_gateway.pid
        assert gateway is not None
        probe(box, "1")
        before = _rss(gateway)
        out = box.run(FOREIGN_FLOOD.format(n=200), timeout=120)  # 200 MiB, none of it ours
        assert out.stdout == "sent\n", out
        assert _rss(gateway) - before < 64 * MIB
        seen = _frames(shared_gateway._process.url, shared_gateway._process.token,
                       box.kernel_id, FOREIGN_FLOOD.format(n=20))
        assert [h["msg_type"] for h, _, _ in seen] == ["stream"]  # only its own 'sent'


def test_a_client_that_does_not_read_holds_the_kernel_not_the_gateways_memory():
    """Backpressure: a websocket whose client reads nothing stops the gateway reading the
    kernel once its write buffer is full; what the kernel sends then waits in (or is
    dropped from) the kernel's own queue, never in the gateway's memory."""
    from codebox.local._gateway import GatewayProcess

    # A gateway whose budget lets 300 MiB of one run through, to a kernel that lifted its
    # own bound: nothing but backpressure stands between that run and the gateway's memory.
    gateway = GatewayProcess(pool_size=0, output_limit=1 << 30)
    try:
        with LocalBox(gateway_url=gateway.url, gateway_token=gateway.token,
                      sandbox=Sandbox(memory_mb=6144)) as box:  # the kernel queues it all
            probe(box, LIFT)
            url = f"{gateway.url.replace('http', 'ws')}/api/kernels/{box.kernel_id}/channels"
            with ws.connect(url, subprotocols=[WS_SUBPROTOCOL], max_size=None, max_queue=1,
                            proxy=None,
                            additional_headers={"Authorization": f"token {gateway.token}"}
                            ) as conn:
                before = _rss(gateway.pid)
                _, frame = Session().execute_request(
                    "import sys\nfor _ in range(300):\n    sys.stdout.write('z' * (1 << 20))\n"
                    "    sys.stdout.flush()")
                conn.send(frame)
                while b'"name":"stdout"' not in conn.recv(timeout=60):
                    pass  # the flood has begun: from now on this client reads nothing
                assert probe(box, "print(6 * 7)") == "42\n"  # run after that one: it is done
                held = _rss(gateway.pid) - before
        # 16 MiB written (and in the socket's buffers) and 8 messages queued: no more
        # (without the bound on ZMQ's queue: ~290 MiB, all of it).
        assert held < 96 * MIB, held // MIB
    finally:
        gateway.close()


def test_a_flood_through_the_server_leaves_it_small_and_its_neighbours_well(sandbox_server):
    attacker = CodeBox(api_key=KEY, base_url=sandbox_server.base_url)
    victim = CodeBox(api_key=OTHER_KEY, base_url=sandbox_server.base_url)
    try:
        attacker.start()
        victim.start()
        before = _rss(sandbox_server.proc.pid)
        for kind in FLOODS:  # at the server's own limit (16 MiB a run): 64 MiB of each
            code = FLOODS[kind].replace("range(40)", "range(1024)").replace("(1 << 20)",
                                                                            "(64 << 20)")
            out = attacker.run(code.replace("(3 << 20)", "(20 << 20)"), timeout=120)
            assert _size(out) <= 2 * _limits.OUTPUT_LIMIT
            assert NOTICE.search(out.content + (out.error.traceback if out.error else "")
                                 + "".join(c.content for c in out.chunks)), kind
            chunks = list(attacker.stream(code.replace("(3 << 20)", "(20 << 20)"),
                                          timeout=120))
            assert sum(len(c.content) for c in chunks) <= 2 * _limits.OUTPUT_LIMIT
            assert probe(victim, "print(6 * 7)") == "42\n"
        assert _rss(sandbox_server.proc.pid) - before < 128 * MIB
    finally:
        for box in (attacker, victim):
            box.stop()
            box.close()


# -- the kernel's own stdout and stderr ---------------------------------------------------


FD_FLOOD = """
import os
fake = {fake!r}
for fd in (1, 2):
    os.write(fd, ('\\n' + fake + '\\n').encode())
    chunk = b'y' * (1 << 20)
    for _ in range(64):  # 64 MiB without a line break
        os.write(fd, chunk)
print('done')
"""


@pytest.mark.parametrize("sandboxed", [True, False])
def test_a_kernels_own_stdout_is_bounded_and_injects_no_log_line(sandboxed, caplog):
    import logging

    from codebox.settings import CodeBoxSettings

    fake = f"INFO:     codebox.server.sessions: session {uuid.uuid4().int} stopped"
    caplog.set_level(logging.DEBUG, logger="codebox")
    before = _rss(os.getpid())
    # Output kept small (1 MiB a run): what could grow us by 64 MiB is the log reader alone.
    with LocalBox(sandbox=Sandbox(output_limit=MIB) if sandboxed else False,
                  settings=CodeBoxSettings(debug=True, output_limit=MIB)) as box:
        out = box.run(FD_FLOOD.format(fake=fake), timeout=120)
        # A sandboxed ipykernel forwards what is written to fd 1 and 2 as output too: cut.
        assert out.error is None and ("done" in out.stdout or CUT in out.stdout), out
        assert _rss(os.getpid()) - before < 64 * MIB  # the log reader kept no 64 MiB line
        kernel = box.kernel_id
    messages = [r.getMessage() for r in caplog.records]
    for message in messages:
        assert not message.startswith(fake) and "\n" not in message
        assert len(message) < 8192, len(message)
    if sandboxed:  # its own channel, logged by the gateway: marked as the kernel's, escaped
        assert any(f"kernel {kernel}: {fake}" in m for m in messages), messages[-20:]


def test_a_kernels_stdout_reaches_no_line_of_the_servers_log(tmp_path_factory):
    fake = f"WARNING:  codebox.server.sessions: session {uuid.uuid4().int} gone"
    env = {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_LOG_LEVEL": "debug"}
    with running_server(tmp_path_factory, env=env) as srv:
        with CodeBox(api_key=KEY, base_url=srv.base_url) as box:
            before = _rss(srv.proc.pid)
            out = box.run(FD_FLOOD.format(fake=fake), timeout=120)
            assert out.error is None and CUT in out.stdout, out
            assert _rss(srv.proc.pid) - before < 64 * MIB
        wait_until(lambda: "stopped" in srv.log(), timeout=30)
        lines = srv.log().splitlines()
    assert not any(line.startswith(fake) for line in lines)
    assert max(len(line) for line in lines) < 16384
