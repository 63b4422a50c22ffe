"""Shell commands: strings and lists, cwd and env, output in order and whole, exit codes as
data, timeouts and interrupts that end the command and everything it started."""

from __future__ import annotations

import pytest

from codebox import CodeBoxError, CommandResult
from codebox.errors import CodeBoxNotFoundError
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

# Prints the pid of a grandchild (in the background) and of a child, then waits.
FAMILY = "sleep 60 & echo $!; sh -c 'echo $$; sleep 60'"


def alive(box, pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not), as the box sees it: the pids a
    command prints are those of the box's own pid namespace when it is sandboxed."""
    out = box.run(f"try:\n    s = open('/proc/{pid}/stat').read()\n"
                  "    print(s.rsplit(')', 1)[1].split()[0] != 'Z')\n"
                  "except OSError:\n    print(False)", timeout=10)
    return out.stdout == "True\n"


def pids_in(text: str) -> list[int]:
    return [int(word) for word in text.split() if word.isdigit()]


def test_a_string_runs_in_sh_and_a_list_runs_without_a_shell(box):
    out = box.shell("echo $((6 * 7)) | tr 4 X")
    assert isinstance(out, CommandResult)
    assert (out.exit_code, out.stdout, out.stderr, out.timed_out) == (0, "X2\n", "", False)
    # No shell: the argument arrives as written, `$HOME` and `;` included.
    out = box.shell(["printf", "%s|", "$HOME", "a b", "; rm -rf x"])
    assert out.stdout == "$HOME|a b|; rm -rf x|"
    missing = box.shell(["no-such-program-here"])
    assert missing.exit_code == 127 and "no-such-program-here" in missing.stderr


def test_a_failure_is_data_with_stdout_and_stderr_apart(box):
    out = box.shell("echo out; echo err >&2; exit 3")
    assert (out.exit_code, out.stdout, out.stderr) == (3, "out\n", "err\n")
    assert {c.type for c in out.chunks} == {"stdout", "stderr"}
    assert not out.ok


def test_output_chunks_keep_their_order(box):
    # Each write waits a moment, so the box sees them one at a time.
    command = "echo o1; sleep 0.2; echo e1 >&2; sleep 0.2; echo o2; sleep 0.2; echo e2 >&2"
    seen = []
    out = box.shell(command, on_output=seen.append)
    expected = [("stdout", "o1\n"), ("stderr", "e1\n"), ("stdout", "o2\n"), ("stderr", "e2\n")]
    assert [(c.type, c.content) for c in out.chunks] == expected
    assert [(c.type, c.content) for c in seen] == expected
    chunks, result = box.stream_shell(command)
    assert [(c.type, c.content) for c in chunks] == expected
    assert [(c.type, c.content) for c in result.chunks] == expected
    assert (result.exit_code, result.stdout) == (0, "o1\no2\n")


def test_it_runs_in_the_box_with_cwd_and_env(box):
    box.upload("work/in.txt", "from upload")
    out = box.shell("cat in.txt; echo \"$GREETING\" > out.txt; pwd", cwd="work",
                    env={"GREETING": "héllo wörld"})
    assert out.exit_code == 0 and out.stdout.startswith("from upload")
    assert out.stdout.rstrip().endswith("/work")
    assert box.download("work/out.txt").content == "héllo wörld\n".encode()
    # The variable was for that command only; the box's own directory is the default.
    again = box.shell(["sh", "-c", 'echo "[$GREETING]"; ls'])
    assert again.stdout.startswith("[]\n") and "work" in again.stdout
    # The kernel sees what the command wrote, and the other way round.
    box.run("open('from_kernel.txt', 'w').write('k')")
    assert box.shell("cat from_kernel.txt").stdout == "k"
    # Commands leave nothing behind in the user's namespace.
    assert box.run("[n for n in dir() if 'codebox' in n or n == 'args']").content == "[]"


def test_five_megabytes_of_output_arrive_whole(box):
    out = box.shell(["python3", "-c",
                     "import sys; sys.stdout.write('0123456789' * 500_000); "
                     "sys.stderr.write('é' * 1000)"])
    assert out.exit_code == 0
    assert len(out.stdout) == 5_000_000 and out.stdout == "0123456789" * 500_000
    assert out.stderr == "é" * 1000 and not out.truncated


def test_a_timeout_ends_the_command_and_everything_it_started(box):
    box.run("kept = 'yes'")
    out = box.shell(FAMILY, timeout=2)  # time enough to start both, even on a busy machine
    assert out.timed_out and out.exit_code < 0 and not out.ok
    pids = pids_in(out.stdout)
    assert len(pids) == 2  # the output before the timeout is kept
    wait_until(lambda: not any(alive(box, pid) for pid in pids), timeout=10)
    assert box.run("kept").content == "'yes'"
    assert box.shell("echo again").stdout == "again\n"


def test_what_a_command_leaves_running_ends_with_it(box):
    out = box.shell("sleep 60 > /dev/null 2>&1 & echo $!")
    assert out.exit_code == 0
    (pid,) = pids_in(out.stdout)
    wait_until(lambda: not alive(box, pid), timeout=10)


def test_interrupt_ends_the_command_and_the_box_lives_on(box):
    box.run("state = 7")
    out = box.interrupted("shell", FAMILY)
    assert out.exit_code < 0 and not out.timed_out
    pids = pids_in(out.stdout)
    assert pids
    wait_until(lambda: not any(alive(box, pid) for pid in pids), timeout=10)
    assert box.run("state", timeout=10).content == "7"


def test_leaving_a_command_stream_early_ends_the_command(box):
    if box.kind == "sync":
        with box.box.stream_shell("echo $$; sleep 60") as stream:
            first = next(stream)
    else:
        async def main():
            async with box.box.astream_shell("echo $$; sleep 60") as stream:
                return await stream.__anext__()

        first = box.wait(main())
    (pid,) = pids_in(first.content)
    wait_until(lambda: not alive(box, pid), timeout=10)
    assert box.shell("echo next", timeout=10).stdout == "next\n"


def test_an_abandoned_command_stream_is_ended_by_the_next_operation(box):
    if box.kind == "sync":
        stream = box.box.stream_shell("echo $$; sleep 60")
        first = next(stream)  # neither finished nor closed
    else:
        async def main():
            stream = box.box.astream_shell("echo $$; sleep 60")
            return stream, await stream.__anext__()

        stream, first = box.wait(main())
    (pid,) = pids_in(first.content)
    assert box.shell("echo next", timeout=30).stdout == "next\n"
    wait_until(lambda: not alive(box, pid), timeout=10)
    assert stream.result is None


def test_bad_commands_and_paths_are_refused_before_anything_runs(box):
    for bad in ["", "   ", [], [""], ["echo", 3], 42, b"ls", "echo \x00"]:
        with pytest.raises(ValueError):
            box.shell(bad)
    for env in [{"A=B": "x"}, {"": "x"}, {"A": 1}, {"A": "nul\x00"}]:
        with pytest.raises(ValueError):
            box.shell("true", env=env)
    for timeout in [0, -1, float("nan")]:
        with pytest.raises(ValueError):
            box.shell("true", timeout=timeout)
    for cwd in ["/tmp", "../..", "a/../../b", "nul\x00"]:
        with pytest.raises(CodeBoxError):
            box.shell("touch escaped", cwd=cwd)
    with pytest.raises(CodeBoxNotFoundError) as info:
        box.shell("true", cwd="no/such/dir")
    assert isinstance(info.value, FileNotFoundError)
    assert not box.exists("escaped")


def test_env_given_at_start_is_in_the_kernel_and_its_commands(make_box):
    box = make_box(env={"BOX_VAR": "from start", "OTHER": "2"})
    assert box.shell('echo "$BOX_VAR/$OTHER"').stdout == "from start/2\n"
    assert box.shell("echo $BOX_VAR", env={"BOX_VAR": "override"}).stdout == "override\n"
    assert box.run("import os; os.environ['BOX_VAR']").content == "'from start'"
    box.restart()
    assert box.shell("echo $BOX_VAR").stdout == "from start\n"
