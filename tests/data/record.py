"""Record the messages a real kernel sends for one execution, as tests/data/*.json holds
them: ``python -m tests.data.record NAME CODE`` (CODE runs after SETUP, unrecorded).

Only what codebox reads is kept: channel, the header's ``msg_id``/``msg_type``, the
parent's ``msg_id``, metadata when not empty, and the content.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

SETUP = "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')"


def record(code: str, setup: str = SETUP, timeout: float = 60) -> list[dict]:
    """The messages of executing ``code`` in a fresh kernel, in the order they came."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        client.execute_interactive(setup, timeout=timeout, output_hook=lambda msg: None)
        msg_id = client.execute(code)
        messages, idle, reply = [], False, False
        deadline = time.monotonic() + timeout
        while not (idle and reply):
            if time.monotonic() > deadline:
                raise TimeoutError("the kernel did not finish")
            # IOPub first, as its messages were published before the reply was sent.
            channel, msg = _next(client)
            if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(_kept(channel, msg))
            idle |= msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
            reply |= msg["msg_type"] == "execute_reply"
        return messages
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


def _next(client: object) -> tuple[str, dict | None]:
    for channel in ("iopub", "shell"):
        try:
            return channel, getattr(client, f"get_{channel}_msg")(timeout=0.02)
        except queue.Empty:
            continue
    return "", None


def _kept(channel: str, msg: dict) -> dict:
    kept = {
        "channel": channel,
        "header": {"msg_id": msg["header"]["msg_id"], "msg_type": msg["msg_type"]},
        "parent_header": {"msg_id": msg["parent_header"]["msg_id"]},
        "content": msg["content"],
    }
    if msg.get("metadata"):
        kept["metadata"] = msg["metadata"]
    return kept


if __name__ == "__main__":
    name, code = sys.argv[1], sys.argv[2]
    out = Path(__file__).parent / f"{name}.json"
    out.write_text(json.dumps(record(code), indent=1, default=str) + "\n")
    sys.stdout.write(f"wrote {out}\n")
