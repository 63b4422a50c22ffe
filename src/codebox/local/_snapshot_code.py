"""The kernel side of snapshots, for IPython: the snippet bodies `_dialect` runs (see its
prelude: ``args``, ``_k``, ``_send``; they are indented as the body of one function).

A snapshot leaves the kernel as two streams of records, ``files`` (the box's files, then
its package directory's) and ``vars`` (its variables), each sent in messages of at most
``chunk_size`` bytes as it is read: a file or a large buffer is never gathered whole. A
record is a head (`HEAD`: kind, meta length, payload length), JSON meta, then the payload:

- ``D`` a directory, ``F`` a file (its bytes), ``L`` a symbolic link (``target``); meta
  ``path`` (relative, ``/``-separated), ``mode``, ``mtime``, and ``in: "site"`` for the
  package directory (``CODEBOX_SITE``);
- ``V`` a variable: meta ``name``, ``pickle`` (the length of its pickle) and ``buffers``
  (the lengths of its out-of-band buffers); the payload is the pickle, then the buffers.

Variables are pickled with cloudpickle (functions and classes defined in the session by
value), protocol 5: a NumPy array's data leaves as an out-of-band buffer, straight from
its memory. One pickler pickles them all, so objects they share stay shared when
restored; one that cannot be pickled is listed, and the ones after it go on (sharing
nothing with those before it: the pickler forgets what the failed one memoized). A function
of the session is rebuilt over the session's namespace, not over a copy of it, so it sees
later changes of its globals as before.

Restoring pushes the same records back in chunks (``restore``, one execution per chunk,
the parser kept on the kernel between them), then ``restore_end`` says what could not be
restored. Links are made last, so no file is written through one.
"""

from __future__ import annotations

HEAD_FORMAT = ">cIQ"
"""A record's head: kind (one byte), meta length (u32), payload length (u64)."""

_COMMON = """\
    import json, struct
    head = struct.Struct(HEAD_FORMAT)
"""

SNAPSHOT = _COMMON + """\
    import io, re, types
    chunk, limit, root = args["chunk_size"], args["limit"], args["root"]
    state = {"part": "files", "held": 0, "total": 0}
    pending = []

    def flush():
        if pending:
            _send({"part": state["part"]}, [b"".join(pending)])
            pending.clear()
            state["held"] = 0

    def count(n):
        state["total"] += n
        if limit is not None and state["total"] > limit:
            raise OverflowError("the snapshot is larger than the " + str(limit)
                                + " bytes it may take")

    def put(data):
        count(len(data))
        pending.append(data)
        state["held"] += len(data)
        if state["held"] >= chunk:
            flush()

    def put_view(view):
        view = memoryview(view).cast("B")
        if len(view) < 1 << 16:
            put(bytes(view))
            return
        flush()
        count(len(view))
        for i in range(0, len(view), chunk):
            _send({"part": state["part"]}, [view[i:i + chunk]])

    def record(kind, meta, size):
        m = json.dumps(meta).encode()
        put(head.pack(kind, len(m), size) + m)

    def tree(base, where):
        extra = {"in": where} if where else {}
        for top, dirs, names in os.walk(base):
            dirs.sort()
            for n in list(dirs) + sorted(names):
                full = os.path.join(top, n)
                if n.startswith(PARTIAL):
                    continue
                rel = os.path.relpath(full, base).replace(os.sep, "/")
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                meta = dict(extra, path=rel, mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime)
                if stat.S_ISLNK(st.st_mode):
                    record(b"L", dict(meta, target=os.readlink(full)), 0)
                elif stat.S_ISDIR(st.st_mode):
                    record(b"D", meta, 0)
                elif stat.S_ISREG(st.st_mode):
                    try:
                        f = open(full, "rb")
                    except OSError:
                        continue
                    with f:
                        size = st.st_size
                        record(b"F", meta, size)
                        flush()
                        left = size
                        while left:
                            data = f.read(min(chunk, left)) or bytes(min(chunk, left))
                            count(len(data))
                            _send({"part": "files"}, [data])
                            left -= len(data)

    tree(root, None)
    site = os.environ.get("CODEBOX_SITE")
    if site and os.path.isdir(site) and not os.path.abspath(site).startswith(root + os.sep):
        tree(site, "site")
    flush()

    import cloudpickle
    state["part"] = "vars"
    shell = get_ipython()
    ns, hidden = shell.user_ns, shell.user_ns_hidden
    cache = re.compile(r"_(|_|__|i|ii|iii|i[0-9]+|[0-9]+|ih|oh|dh)$")
    names = sorted(n for n in ns if not (n in hidden and hidden[n] is ns[n])
                   and not (n.startswith("__") and n.endswith("__")) and not cache.match(n))

    def main_function(code, name, defaults, closure, kwdefaults, qualname, doc, notes):
        import sys, types
        f = types.FunctionType(code, sys.modules["__main__"].__dict__, name, defaults, closure)
        f.__kwdefaults__, f.__qualname__, f.__doc__, f.__annotations__ = (
            kwdefaults, qualname, doc, notes)
        return f

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj):
            if type(obj) is types.FunctionType and obj.__globals__ is ns:
                return (main_function, (obj.__code__, obj.__name__, obj.__defaults__,
                                        obj.__closure__, obj.__kwdefaults__, obj.__qualname__,
                                        obj.__doc__, obj.__annotations__), obj.__dict__ or None)
            return super().reducer_override(obj)

    out, buffers = io.BytesIO(), []

    def keep(buf):
        try:
            buffers.append(buf.raw())
        except BufferError:
            return True  # not contiguous: pickled in-band
        return False

    pickler = Pickler(out, protocol=5, buffer_callback=keep)
    unpicklable, reasons, fresh = [], {}, False
    for name in names:
        out.seek(0)
        out.truncate()
        buffers.clear()
        try:
            pickler.dump(ns[name])
        except Exception as exc:
            # What it memoized of this one was never sent: both sides start afresh.
            pickler.clear_memo()
            fresh = True
            unpicklable.append(name)
            reasons[name] = type(exc).__name__ + ": " + str(exc)[:200]
            continue
        data = out.getvalue()
        sizes = [b.nbytes for b in buffers]
        record(b"V", {"name": name, "pickle": len(data), "buffers": sizes, "fresh": fresh},
               len(data) + sum(sizes))
        fresh = False
        put_view(data)
        for b in buffers:
            put_view(b)
    buffers.clear()
    flush()
    _send({"done": True, "unpicklable": unpicklable, "reasons": reasons})
"""

RESTORE = _COMMON + """\
    import io, collections
    r = getattr(_k, "_codebox_restore", None)
    if args["first"] or r is None:
        shell = get_ipython()
        r = _k._codebox_restore = {
            "bases": {None: args["root"], "site": os.environ.get("CODEBOX_SITE")},
            "small": bytearray(), "want": head.size, "meta": None, "left": 0,
            "sink": None, "links": [], "failed": [], "skipped_site": False,
            "ns": shell.user_ns, "oob": collections.deque(), "feed": io.BytesIO()}
        feed, oob = r["feed"], r["oob"]

        class Source:
            def read(self, n=-1):
                return r["feed"].read(n)

            def readline(self):
                return r["feed"].readline()

            def readinto(self, b):
                return r["feed"].readinto(b)

        def buffers():
            while True:
                yield oob.popleft()

        import pickle
        r["new_unpickler"] = lambda: pickle.Unpickler(Source(), buffers=buffers())
        r["unpickler"] = r["new_unpickler"]()

    def target(meta):
        base = r["bases"].get(meta.get("in"))
        parts = meta["path"].split("/")
        if base is None:
            r["skipped_site"] = True
            return None
        if not parts or any(p in ("", ".", "..") for p in parts) or "\\0" in meta["path"]:
            raise ValueError("a snapshot record names a bad path: " + repr(meta["path"]))
        return os.path.join(base, *parts)

    def begin(kind, meta, size):
        path = target(meta) if kind in b"DFL" else None
        r["sink"] = (lambda view: None, lambda: None)  # what is not restored is skipped
        if kind == b"D" and path is not None:
            os.makedirs(path, exist_ok=True)
            os.chmod(path, meta["mode"] | 0o700)
        elif kind == b"L" and path is not None:
            r["links"].append((meta["target"], path))
        elif kind == b"F" and path is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.lexists(path):
                os.remove(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            f = open(fd, "wb")
            r["sink"] = (f.write, lambda: end_file(f, path, meta))
        elif kind == b"V":
            whole = bytearray(size)
            at = [0]

            def put(view):
                whole[at[0]:at[0] + len(view)] = view
                at[0] += len(view)

            r["sink"] = (put, lambda: end_var(meta, memoryview(whole)))

    def end_file(f, path, meta):
        f.close()
        os.chmod(path, meta["mode"])
        os.utime(path, (meta["mtime"], meta["mtime"]))

    def end_var(meta, whole):
        name, at = meta["name"], meta["pickle"]
        if meta.get("fresh"):  # the pickler forgot what it memoized before: so do we
            r["unpickler"] = r["new_unpickler"]()
        r["feed"] = io.BytesIO(whole[:at])
        for size in meta["buffers"]:
            r["oob"].append(whole[at:at + size])
            at += size
        try:
            r["ns"][name] = r["unpickler"].load()
        except Exception as exc:
            r["failed"].append(name + " (" + type(exc).__name__ + ": " + str(exc)[:200] + ")")
        r["oob"].clear()

    for buf in _parent.get("buffers") or ():
        view = memoryview(buf).cast("B")
        while view:
            if r["left"]:
                n = min(r["left"], len(view))
                r["sink"][0](view[:n])
                view, r["left"] = view[n:], r["left"] - n
                if not r["left"]:
                    r["sink"][1]()
                continue
            small = r["small"]
            n = min(r["want"] - len(small), len(view))
            small += view[:n]
            view = view[n:]
            if len(small) < r["want"]:
                continue
            if r["meta"] is None:
                r["meta"] = head.unpack(bytes(small))
                r["want"] = r["meta"][1]
                small.clear()
                if r["want"]:
                    continue
            kind, _, size = r["meta"]
            meta = json.loads(bytes(small)) if small else {}
            small.clear()
            r["meta"], r["want"] = None, head.size
            begin(kind, meta, size)
            r["left"] = size
            if not size:
                r["sink"][1]()
    _send({})
"""

RESTORE_END = """\
    import importlib
    r = getattr(_k, "_codebox_restore", None)
    failed = []
    if r is not None:
        for target, path in r["links"]:
            try:
                if os.path.lexists(path):
                    os.remove(path)
                os.symlink(target, path)
            except OSError as exc:
                failed.append(os.path.basename(path) + " (a link: " + str(exc) + ")")
        failed = r["failed"] + failed
        if r["left"] or r["small"]:
            failed.append("(the snapshot ended inside a record: it is incomplete)")
        if r["skipped_site"]:
            failed.append("(the packages installed into the box: this kernel has no package "
                          "directory of its own)")
        del _k._codebox_restore
    importlib.invalidate_caches()
    _send({"failed": failed})
"""

MISSING = """\
    import importlib.metadata, re
    missing = []
    for requirement in args["requirements"]:
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        try:
            importlib.metadata.distribution(name.group(0) if name else requirement)
        except Exception:
            missing.append(requirement)
    _send({"missing": missing})
"""

BODIES = {"snapshot": SNAPSHOT, "restore": RESTORE, "restore_end": RESTORE_END,
          "missing": MISSING}
"""The snippet bodies, by operation name (see `_dialect.snippet`)."""
