"""A hostile tenant against its neighbours and the host, on a `LocalBox` and on a two-key
``codebox serve`` (as root, as these tests run): each attack fails, and the last test of
each kind shows the same probe succeeding where nothing stops it, so the probes can tell."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from codebox import LocalBox, Sandbox
from codebox.local import _boxdisk
from tests.helpers import alive, kernel_host_pid, wait_until
from tests.sandbox import probes
from tests.sandbox.conftest import probe

MIB = 1024 * 1024
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="these attacks are made as root")


def _healthy(site):
    assert probe(site.attacker, "print(6 * 7)") == "42\n"
    assert probe(site.victim, "print(6 * 7)") == "42\n"
    assert alive(site.gateway_pid)
    if site.server_pid is not None:
        assert alive(site.server_pid)


def _host_pid(box) -> int:
    return kernel_host_pid(lambda code: box.run(code).content)


def _uids(pid: int) -> list[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return [int(x) for x in next(line for line in status.splitlines()
                                 if line.startswith("Uid:")).split()[1:]]


# -- the kernel keyrings --------------------------------------------------------------


@pytest.fixture
def secret_key():
    """A key in this process's session keyring, which every process it starts shares."""
    name = f"codebox-secret-{uuid.uuid4().hex[:8]}"
    key = probes.add_key(name, b"the launcher's secret")
    assert key > 0, f"cannot add a key here: errno {-key}"
    yield name
    probes.unlink_key(key)


def test_the_launchers_keyring_is_out_of_reach(site, secret_key):
    planted = f"codebox-planted-{uuid.uuid4().hex[:8]}"
    out = probe(site.attacker, probes.KEYRING.format(name=secret_key.encode(),
                                                     planted=planted.encode()))
    assert out.startswith("FOUND [] PLANTED False"), out
    assert probes.read_key(secret_key) == b"the launcher's secret"  # still there, untouched
    assert probes.read_key(planted) is None
    _healthy(site)


def test_a_plain_kernel_reaches_the_keyring(secret_key):
    # The control: with no sandbox, the same probe reads the key, removes it, plants one.
    planted = f"codebox-planted-{uuid.uuid4().hex[:8]}"
    with LocalBox(sandbox=False) as box:
        out = probe(box, probes.KEYRING.format(name=secret_key.encode(),
                                               planted=planted.encode()))
    assert "b\"the launcher's secret\"" in out and "PLANTED True" in out, out
    assert probes.read_key(planted) == b"x"


# -- io_uring ---------------------------------------------------------------------------


def test_io_uring_cannot_make_a_setuid_file(tmp_path):
    target = tmp_path / "uring-suid"
    with LocalBox(working_dir=tmp_path, sandbox=True) as box:
        out = probe(box, probes.IO_URING_OPENAT.format(path=str(target)))
        assert out.startswith("SETUP Function not implemented"), out
        assert probe(box, "print(6 * 7)") == "42\n"
    assert not target.exists()


def test_io_uring_makes_a_setuid_file_where_nothing_stops_it(tmp_path):
    target = tmp_path / "uring-suid"
    with LocalBox(working_dir=tmp_path, sandbox=False) as box:
        out = probe(box, probes.IO_URING_OPENAT.format(path=str(target)))
    assert "RESULT opened" in out and "MODE 0o6755" in out, out
    assert os.stat(target).st_mode & stat.S_ISUID


# -- a host user of its own -------------------------------------------------------------


def test_each_box_runs_as_a_host_user_of_its_own(site):
    attacker, victim = _host_pid(site.attacker), _host_pid(site.victim)
    uids = _uids(attacker)
    assert len(set(uids)) == 1 and uids[0] >= 1000, uids  # real, effective, saved, fs
    assert _uids(victim)[0] not in (0, uids[0])
    out = probe(site.attacker, "import os\nprint(os.getuid(), os.geteuid(), os.getgroups())")
    assert out.split()[:2] == [str(uids[0])] * 2  # the same uid inside
    _healthy(site)


def test_root_only_host_files_are_unreadable(tmp_path):
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "public.txt").write_text("anyone may read this")
    (granted / "private.txt").write_text("root only")
    (granted / "private.txt").chmod(0o600)
    with LocalBox(sandbox=Sandbox(read_only_paths=[str(granted)])) as box:
        out = probe(box, f"""
import os
for path in ({str(granted / "public.txt")!r}, {str(granted / "private.txt")!r},
             '/etc/ssl/private'):
    try:
        print(path, 'LISTED' if os.path.isdir(path) and os.listdir(path) is not None
              else 'READ ' + open(path).read())
    except OSError as e:
        print(path, 'DENIED', type(e).__name__)
""")
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines[str(granted / "public.txt")] == "READ anyone may read this"
    assert lines[str(granted / "private.txt")] == "DENIED PermissionError"
    if os.path.isdir("/etc/ssl/private") and not os.stat("/etc/ssl/private").st_mode & 0o005:
        assert lines["/etc/ssl/private"].startswith("DENIED"), out


# -- what the host's kernel tells --------------------------------------------------------


MASKED = ("/proc/slabinfo", "/proc/vmallocinfo", "/proc/timer_list", "/proc/keys")


def test_the_hosts_kernel_internals_are_masked(site, secret_key):
    on_host = {p: Path(p).read_text()[:200] for p in MASKED if os.path.exists(p)}
    assert on_host["/proc/timer_list"] and secret_key in Path("/proc/keys").read_text()
    out = probe(site.attacker, f"""
for path in {list(on_host)!r}:
    try:
        print(path, repr(open(path).read()[:200]))
    except OSError as e:
        print(path, 'DENIED', type(e).__name__)
""")
    for line in out.splitlines():
        _, seen = line.split(" ", 1)
        assert seen in ("''", "DENIED PermissionError"), line
    _healthy(site)


def test_pid_1_shows_no_host_path_of_the_box(site):
    out = probe(site.attacker, """
import os
print(open('/proc/1/cmdline', 'rb').read().replace(b'\\0', b' ').replace(b'\\n', b' ')
      .decode())
print(os.getcwd())
""")
    cmdline, cwd = out.splitlines()
    for hidden in (site.runtime_dir, "--bind", "--setenv", "--seccomp", str(site.gateway_pid)):
        assert hidden not in cmdline, cmdline
    assert site.runtime_dir not in cmdline.replace(cwd, "")
    _healthy(site)


# -- the caller's import path ----------------------------------------------------------


def test_the_callers_import_path_is_not_bound(tmp_path, monkeypatch):
    app = tmp_path / "app"
    app.mkdir()
    (app / ".env").write_text("CODEBOX_SERVER_API_KEYS=the-real-keys\n")
    (app / "settings.py").write_text("KEYS = 'the-real-keys'\n")
    monkeypatch.setenv("PYTHONPATH", str(app))
    from codebox.local._gateway import GatewayProcess

    gateway = GatewayProcess(pool_size=0)  # of its own: our changed PYTHONPATH ends with it
    try:
        with LocalBox(gateway_url=gateway.url, gateway_token=gateway.token,
                      sandbox=True) as box:
            out = probe(box, f"""
import os, sys
for path in ({str(app / '.env')!r}, {str(app)!r}):
    print(path, os.path.exists(path))
try:
    import settings
    print('IMPORTED', settings.KEYS)
except ImportError:
    print('NOT IMPORTED')
print(any({str(app)!r} in p for p in sys.path))
import ipykernel  # the installation itself is there
""")
    finally:
        gateway.close()
    assert out.splitlines() == [f"{app / '.env'} False", f"{app} False", "NOT IMPORTED",
                                "False"], out


# -- memory, disk and CPU of a box ---------------------------------------------------------


HOG = """
import os, mmap, errno
MIB = 1024 * 1024
held = {'tmp': 0, 'shm': 0}
def fill(path, key, limit):
    with open(path, 'wb') as f:
        for _ in range(limit):
            f.write(b'x' * MIB)
            f.flush()
            held[key] += 1
children = []
hold_r, hold_w = os.pipe()  # never written: the children block on it, holding their memory
for _ in range(2):  # two children, each holding what it can of 200 MiB
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        hold = []
        try:
            for _ in range(200):
                hold.append(bytearray(MIB))
                os.write(w, b'.')
        finally:
            os.close(w)  # the parent's count of this child ends here
            os.read(hold_r, 1)  # hold it until killed
            os._exit(0)
    os.close(w)
    children.append((pid, r))
for path, key in (('/tmp/hog', 'tmp'), ('/dev/shm/hog', 'shm')):
    try:
        fill(path, key, 200)
    except OSError as e:
        print('FULL', key, errno.errorcode.get(e.errno))
got, alive = 0, []
for pid, r in children:
    mine = 0
    while (chunk := os.read(r, 4096)):  # up to the child's end: all it allocated
        mine += len(chunk)
    if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still holding it (one killed holds nothing)
        got += mine
        alive.append(pid)
print('HELD', held['tmp'] + held['shm'] + got)  # at once: the children still hold theirs
for pid in alive:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def _hog(box, limit_mb: int, *, counted_from_outside: bool = False) -> None:
    """Try to hold far more than the box's memory across its tmpfs and two children: it
    never holds more than its limit (the kernel is killed, or the writes fail). Counted from
    the outside (no memory cgroup), the box may overshoot for a moment, as documented, but
    it does not keep it: it is killed right after."""
    out = box.run(HOG, timeout=120)
    if out.error is None:
        held = int(out.stdout.split("HELD ")[1].split()[0])
        if held > limit_mb and counted_from_outside:
            # its /tmp and /dev/shm still hold 400 MiB: the box must die within seconds
            waited = box.run("import time; time.sleep(30)", timeout=60)
            assert waited.error is not None and waited.error.name == "KernelDiedError", (
                out.stdout, waited)
        else:
            assert held <= limit_mb, out.stdout
    else:
        assert out.error.name in ("KernelDiedError", "MemoryError", "OSError"), out.error
    assert probe(box, "print(6 * 7)") == "42\n"


def test_tmp_shm_and_children_are_inside_the_memory_limit():
    with LocalBox(sandbox=Sandbox(memory_mb=300, disk_mb=1024)) as box:
        _hog(box, 300)


@pytest.fixture
def nobody_python():
    """A Python the unprivileged user ``nobody`` can run, with this checkout's packages: a
    venv of the system's interpreter whose site-packages names ours (a ``.pth`` file, so
    they are part of the installation, as a sandbox binds it). This machine's own
    interpreter lives under /root, which nobody may enter."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        pytest.skip("no system Python for an unprivileged user")
    import sysconfig
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="codebox-nobody-"))
    try:
        subprocess.run([str(system), "-m", "venv", "--without-pip", str(home / "venv")],
                       check=True, timeout=60)
        site = next((home / "venv" / "lib").glob("python3*/site-packages"))
        root = Path(__file__).resolve().parents[2]
        (site / "codebox-checkout.pth").write_text(
            f"{sysconfig.get_paths()['purelib']}\n{root / 'src'}\n{root}\n")
        subprocess.run(["chown", "-R", "65534:65534", str(home)], check=True)
        home.chmod(0o755)
        yield home, home / "venv" / "bin" / "python"
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(home)], check=False)


def test_the_memory_limit_holds_as_an_unprivileged_user(nobody_python):
    """Without root there is no memory cgroup: the box is counted from the outside, and its
    sandbox killed past its limit, children and tmpfs included."""
    home, python = nobody_python
    script = home / "hog.py"
    script.write_text("""
from codebox import LocalBox, Sandbox
from tests.sandbox.test_tenants import _hog
with LocalBox(sandbox=Sandbox(memory_mb=300, disk_mb=1024)) as box:
    assert box.run("import os; print(os.getuid())").stdout.strip() == "65534"
    _hog(box, 300, counted_from_outside=True)
print("HELD WITHIN THE LIMIT")
""")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home))
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(python),
         str(script)], cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "HELD WITHIN THE LIMIT" in done.stdout, (
        done.stdout[-2000:] + done.stderr[-4000:])


FILL = """
import os, errno
written, outcome = 0, 'ALL WRITTEN'
try:
    for i in range(3):  # 3 files of 6 MiB: each within the 16 MiB of a file, not together
        with open(f'fill-{i}', 'wb') as f:
            for _ in range(6):
                f.write(b'x' * 1024 * 1024)
                f.flush()
                written += 1
except OSError as e:
    outcome = errno.errorcode.get(e.errno)
made, files = 0, 'ALL MADE'
try:
    os.makedirs('many', exist_ok=True)
    for i in range({files}):
        open(f'many/{{i}}', 'w').close()
        made += 1
except OSError as e:
    files = errno.errorcode.get(e.errno)
print(written, outcome, made, files)
"""


def test_the_working_directory_holds_disk_mb_and_a_bounded_number_of_files(small_box):
    inodes = 16 * _boxdisk.FILES_PER_MB
    out = probe(small_box, FILL.replace("{files}", str(inodes + 50)).replace("{{i}}", "{i}"))
    written, outcome, made, files = out.split()
    assert outcome == "ENOSPC" and int(written) <= 16, out
    assert files == "ENOSPC" and int(made) <= inodes, out
    probe(small_box, "import shutil, os\nshutil.rmtree('many')\n"
                     "[os.remove(f'fill-{i}') for i in range(3) if os.path.exists(f'fill-{i}')]")
    small_box.upload("fits.bin", b"f" * MIB)  # the box works on
    assert probe(small_box, "print(6 * 7)") == "42\n"


def test_a_sessions_directory_is_a_filesystem_of_its_own(site):
    if site.kind != "server":
        return
    work = probe(site.attacker, "import os; print(os.getcwd())").strip()
    assert os.path.ismount(work)
    assert os.stat(work).st_dev != os.stat(os.path.dirname(work)).st_dev
    assert os.path.exists(os.path.join(work, _boxdisk.IMAGE)) is False  # hidden under it
    _healthy(site)


def test_each_box_has_a_cpu_share_of_its_own(site):
    groups = {}
    for box in (site.attacker, site.victim):
        lines = Path(f"/proc/{_host_pid(box)}/cgroup").read_text().splitlines()
        cpu = next(line.split(":", 2)[2] for line in lines
                   if "cpu" in line.split(":", 2)[1].split(",") or line.startswith("0::"))
        assert "codebox-" in cpu, lines
        groups[box] = cpu
    assert len(set(groups.values())) == 2
    _healthy(site)


def test_a_stopped_boxs_cgroups_are_removed():
    box = LocalBox(sandbox=True)
    box.start()
    kernel = box.kernel_id
    box.stop()

    def left() -> list[str]:
        return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/**/codebox-{kernel}-*")]

    wait_until(lambda: not left(), timeout=10)


# -- a kernel that dies at launch ---------------------------------------------------------


FAKE_BWRAP = """#!/bin/sh
# A bwrap that works for the check (bwrap ... true) and fails to start any kernel.
for last; do :; done
if [ "$last" = true ]; then exec {bwrap} "$@"; fi
echo launch >> {count}
echo "bwrap: execvp /opt/missing/python: No such file or directory" >&2
exit 1
"""


def test_a_kernel_that_dies_at_launch_is_reported_at_once_and_the_pool_backs_off(
        monkeypatch):
    import tempfile
    import time

    import httpx

    from codebox.local import _sandbox
    from codebox.local._gateway import GatewayProcess

    # Where a box's own user may run it (and write its count).
    where = Path(tempfile.mkdtemp(prefix="codebox-fake-bwrap-"))
    where.chmod(0o755)
    count, fake = where / "launches", where / "bwrap"
    count.touch(0o666)
    count.chmod(0o666)
    fake.write_text(FAKE_BWRAP.format(bwrap=_sandbox.find_bwrap(), count=count))
    fake.chmod(0o755)
    monkeypatch.setenv("CODEBOX_BWRAP", str(fake))
    policy = Sandbox().policy()
    # A gateway of its own: the changed environment ends with it, not in the shared one.
    gateway = GatewayProcess(pool_size=1, sandbox=policy)
    try:
        box = LocalBox(gateway_url=gateway.url, gateway_token=gateway.token, sandbox=True)
        started = time.monotonic()
        with pytest.raises(Exception, match="execvp /opt/missing/python") as raised:
            box.start()
        assert time.monotonic() - started < 15, raised.value
        box.stop()
        before = count.read_text().count("launch")
        for _ in range(5):  # boxes asking the pool for a kernel, one after the other
            answer = httpx.post(f"{gateway.url}/codebox/pool", trust_env=False, timeout=10,
                                json={"name": "python3", "sandbox": policy},
                                headers={"Authorization": f"token {gateway.token}"})
            assert answer.status_code == 204  # nothing to hand out
        assert count.read_text().count("launch") - before <= 1  # it waits before it tries
        # What the failed launches held is given back: filesystems, directories.
        boxes = Path(gateway._runtime_dir, "codebox-boxes")
        wait_until(lambda: gateway._runtime_dir not in Path("/proc/self/mountinfo")
                   .read_text() and not [p for p in boxes.iterdir()
                                         if not p.name.startswith(".")], timeout=10)
    finally:
        gateway.close()
        subprocess.run(["rm", "-rf", str(where)], check=False)


def test_a_killed_gateway_leaves_no_filesystem_and_no_cgroup_of_its_boxes():
    import signal

    from codebox.local._gateway import GatewayProcess

    gateway = GatewayProcess(pool_size=0)
    try:
        box = LocalBox(gateway_url=gateway.url, gateway_token=gateway.token, sandbox=True)
        box.start()
        work = probe(box, "import os; print(os.getcwd())").strip()
        kernel = box.kernel_id
        assert os.path.ismount(work)
        assert list(Path("/sys/fs/cgroup").glob(f"*/**/codebox-{kernel}-*"))
        os.kill(gateway.pid, signal.SIGKILL)  # no cleanup of its own
        wait_until(lambda: not alive(gateway.pid), timeout=15)
    finally:
        gateway.close()
    assert f" {work} " not in Path("/proc/self/mountinfo").read_text()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/**/codebox-{kernel}-*"))
    assert not os.path.exists(work)
