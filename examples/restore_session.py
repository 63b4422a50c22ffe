"""Come back to a session by its id with CodeBox.from_id.

    python examples/restore_session.py

A chat app keeps one box per conversation and stores only the box's session id (in a
cookie, a database row, ...). Each request reattaches with ``CodeBox.from_id(session_id)``
and finds the kernel as the last request left it: variables, imports and files.

With CODEBOX_API_KEY set, the session lives on the CodeBox server and any process can
reattach. Without a key, boxes are LocalBoxes and ``from_id`` finds the live box of this
process with that id (here the app's ``BOXES`` registry keeps it alive).
"""

from __future__ import annotations

from codebox import BaseBox, CodeBox

BOXES: list[BaseBox] = []  # the app's own boxes, stopped when it shuts down


def first_request() -> str:
    """Start a conversation: make a box, set some state, return only the id."""
    box = CodeBox()
    box.start()
    BOXES.append(box)
    box.run("history = ['hello']\nimport statistics")
    box.upload("notes.txt", "remember the milk\n")
    print(f"request 1: started session {box.session_id}")
    return box.session_id


def later_request(session_id: str, message: str) -> None:
    """A later request knows only the id, and reattaches."""
    box = CodeBox.from_id(session_id)
    out = box.run(f"history.append({message!r})\nprint(len(history), history)")
    notes = box.download("notes.txt").content.decode().strip()
    print(f"request: session {box.session_id}: {out.stdout.strip()} | notes: {notes}")


def main() -> None:
    session_id = first_request()
    later_request(session_id, "how are you?")
    later_request(session_id, "bye")
    for box in BOXES:
        box.stop()
    print("stopped; status:", [str(box.status()) for box in BOXES])


if __name__ == "__main__":
    main()
