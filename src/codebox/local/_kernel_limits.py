# codebox: bounds on what one run may send out of this kernel, applied where the output is
# made, so that no message larger than the limits ever leaves the kernel; and every message
# sent whole, whenever an interrupt lands. The gateway and the client count and cut the
# same way (`codebox/_output_caps.py`): what this cut passes them whole; they cut only what
# a kernel without this bound sends.
#
# IPython runs this file at the kernel's start (`--IPKernelApp.exec_files`, added by the
# gateway codebox spawns) in the user's namespace: everything happens in functions deleted
# at the end, so that the namespace stays as it was. It loads `codebox/_output_caps.py` by
# path: a kernel must not import the codebox package (pydantic, httpx: ~0.3 s).
# Limits: CODEBOX_KERNEL_OUTPUT_LIMIT and CODEBOX_KERNEL_MESSAGE_LIMIT (bytes), else the
# defaults of codebox/_limits.py.


def _codebox_bound_output(here):
    import importlib.util
    import os
    import threading

    from IPython import get_ipython

    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return
    path = os.path.join(os.path.dirname(here), "..", "_output_caps.py")
    spec = importlib.util.spec_from_file_location("_codebox_output_caps", path)
    caps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(caps)
    budgets = caps.Budgets(*caps.limits_from_env())
    lock = threading.Lock()  # output streams flush from the IOPub thread
    session = kernel.session
    send = session.send

    def bounded(stream, msg_or_type, content=None, parent=None, ident=None, buffers=None,
                track=False, header=None, metadata=None):
        msg = msg_or_type
        if not isinstance(msg, dict):
            msg = session.msg(msg_or_type, content=content, parent=parent, header=header,
                              metadata=metadata)
        msg_type = msg["header"].get("msg_type")
        run = (msg.get("parent_header") or {}).get("msg_id")
        body = msg.get("content")
        ours = bool(run) and isinstance(body, dict)  # a message of a run
        if ours and msg_type in caps.OUTPUT_TYPES:
            extra = sum(len(memoryview(b)) for b in buffers or ())
            with lock:
                kept, dropped = budgets.run(run).take(msg_type, body, msg.get("metadata"), extra)
            if kept is None:
                return None
            if dropped:
                msg["content"] = kept
                msg["metadata"] = {**(msg.get("metadata") or {}), caps.TRUNCATED_KEY: dropped}
                buffers = None
        elif ours and msg_type == "execute_reply":  # its error again, on the shell channel
            with lock:
                kept, dropped = budgets.run(run).take_reply(body)
            if dropped:
                msg["content"] = kept
                msg["metadata"] = {**(msg.get("metadata") or {}), caps.TRUNCATED_KEY: dropped}
        elif ours and msg_type == "status" and body.get("execution_state") == "idle":
            with lock:
                said, dropped = budgets.closing(run)
            if said:
                note = session.msg("stream", content=caps.closing_content(said),
                                   parent=msg["parent_header"],
                                   metadata={caps.TRUNCATED_KEY: max(1, dropped)})
                send(stream, note, ident=ident)
        return send(stream, msg, ident=ident, buffers=buffers, track=track)

    session.send = bounded


def _codebox_whole_messages():
    # An interrupt (SIGINT: a KeyboardInterrupt in the main thread) that lands while a reply
    # is being sent leaves its ZMQ multipart half sent, and the next message sent on that
    # socket completes it: the gateway then reads the two as one malformed message. A send
    # on the main thread holds the interrupt until its message is whole, then delivers it.
    import signal
    import threading

    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return
    session = kernel.session
    send = session.send
    main = threading.main_thread()

    def whole(*args, **kwargs):
        if threading.current_thread() is not main:
            return send(*args, **kwargs)
        before = signal.getsignal(signal.SIGINT)
        if before is None:  # a handler not set from Python: it cannot be put back
            return send(*args, **kwargs)
        held = []
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
        try:
            return send(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, before)
            if held and callable(before):
                before(signal.SIGINT, held[0])  # (idle, ipykernel ignores it: SIG_IGN)

    session.send = whole


try:
    _codebox_bound_output(__file__)  # set by IPython while it runs this file
    _codebox_whole_messages()
finally:
    del _codebox_bound_output, _codebox_whole_messages
