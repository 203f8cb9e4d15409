"""The watch over a run's processes: one small process beside each training process, so that when one of them
dies (kill -9, its host gone) or is interrupted (Ctrl-C), every other stops at once with one line saying which.

Why a process and not a thread: a training process waiting in a CPU collective for a peer that is gone holds
Python's lock, and a watching thread in it stops running (measured), so only JAX's heartbeat would end it, with
pages of log. The watcher imports nothing heavy and needs no lock of the trainer's.

Process 0's watcher is the hub: it listens on a TCP port (published to the others through JAX's key-value store)
and the other watchers connect to it and beat every BEAT_SECONDS. A watcher learns from its trainer, through
its stdin, that the trainer ended normally (``done``) or was interrupted (``interrupted``); it notices when its
trainer is gone without a word (killed). The hub tells every watcher when a process is lost or interrupted; each
then prints one line and ends its trainer (SIGKILL: it may be waiting in a collective that will never finish; the
run folder keeps its last complete epoch, whose files are all written whole).

Run as ``python PATH/peer_watch.py TRAINER_PID PROCESS COUNT [HUB_HOST:PORT]`` (a script, not ``-m``: the package's
import would load JAX) (no address: the hub, which prints
its port on stdout first).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

BEAT_SECONDS = 1.0
LOST_AFTER_SECONDS = 10.0
"""A process whose watcher has not beaten for this long is taken as lost."""


def _stop_trainer(trainer: int, line: str, interrupted: bool) -> None:
    print(f"error: {line}; every process of the run stops{' (interrupted)' if interrupted else ''}. The run keeps "
          "its last complete epoch: resume it with all processes (jaxcnn train --resume RUN)", file=sys.stderr,
          flush=True)  # fmt: skip
    with contextlib.suppress(OSError):
        os.kill(trainer, signal.SIGKILL)
    sys.exit(0)


def _trainer_alive(trainer: int) -> bool:
    return os.getppid() == trainer


class _Lines:
    """Whole lines out of the bytes received so far."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode(errors="replace").strip() for line in lines]


@dataclass
class _Peer:
    """What the hub knows of another process's watcher."""

    index: int | None = None
    heard: float = field(default_factory=time.monotonic)
    lines: _Lines = field(default_factory=_Lines)
    done: bool = False


def hub(trainer: int, count: int) -> None:
    """Process 0's watcher: accept the others, follow their beats, and tell all when one is lost."""
    server = socket.create_server(("", 0))
    print(server.getsockname()[1], flush=True)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, "accept")
    os.set_blocking(sys.stdin.fileno(), False)
    selector.register(sys.stdin, selectors.EVENT_READ, "trainer")
    peers: dict[socket.socket, _Peer] = {}
    started = time.monotonic()

    def tell_all(message: str) -> None:
        for connection in list(peers):
            with contextlib.suppress(OSError):
                connection.sendall(f"{message}\n".encode())

    while True:
        for key, _ in selector.select(timeout=BEAT_SECONDS):
            if key.data == "accept":
                connection, _ = server.accept()
                selector.register(connection, selectors.EVENT_READ, "peer")
                peers[connection] = _Peer()
            elif key.data == "trainer":
                data = os.read(sys.stdin.fileno(), 4096)
                if b"done" in data:
                    tell_all("done 0")  # process 0 ended normally: the others are past their last collective
                    return
                if b"interrupted" in data:
                    tell_all("interrupted 0")
                    return
                if not data:  # the pipe closed without a word: the trainer is gone
                    tell_all(f"lost process 0 of {count}")
                    return
            else:
                peer_socket = key.fileobj
                assert isinstance(peer_socket, socket.socket)
                peer = peers[peer_socket]
                try:
                    data = peer_socket.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(peer_socket)
                    del peers[peer_socket]
                    if not peer.done:  # gone without saying it was done: killed
                        who = "a process" if peer.index is None else f"process {peer.index} of {count}"
                        tell_all(f"lost {who}")
                        _stop_trainer(trainer, f"lost {who}", False)
                    continue
                peer.heard = time.monotonic()
                for line in peer.lines.feed(data):
                    word, _, index = line.partition(" ")
                    if word == "hello":
                        peer.index = int(index)
                    elif word == "done":
                        peer.done = True
                    elif word == "interrupted":
                        tell_all(f"interrupted {index}")
                        _stop_trainer(trainer, f"process {index} of {count} was interrupted", True)
        if not _trainer_alive(trainer):
            tell_all(f"lost process 0 of {count}")
            return
        tell_all("beat")  # so that the others notice a hub that is gone without closing (its host lost)
        now = time.monotonic()
        for peer in list(peers.values()):
            if not peer.done and now - peer.heard > LOST_AFTER_SECONDS:
                who = f"process {peer.index} of {count}"
                tell_all(f"lost {who} (silent for {LOST_AFTER_SECONDS:g} s)")
                _stop_trainer(trainer, f"lost {who}, silent for {LOST_AFTER_SECONDS:g} s", False)
        if len(peers) < count - 1 and now - started > 300:
            return  # the others never came: JAX's own join has failed them long ago


def spoke(trainer: int, index: int, count: int, address: str) -> None:
    """Another process's watcher: beat to the hub, pass on the trainer's word, obey the hub."""
    host, _, port = address.rpartition(":")
    connection = socket.create_connection((host, int(port)), timeout=30)
    connection.sendall(f"hello {index}\n".encode())
    selector = selectors.DefaultSelector()
    selector.register(connection, selectors.EVENT_READ, "hub")
    os.set_blocking(sys.stdin.fileno(), False)
    selector.register(sys.stdin, selectors.EVENT_READ, "trainer")
    lines = _Lines()
    heard = time.monotonic()
    while True:
        for key, _ in selector.select(timeout=BEAT_SECONDS):
            if key.data == "trainer":
                data = os.read(sys.stdin.fileno(), 4096)
                if b"done" in data:
                    connection.sendall(f"done {index}\n".encode())
                    return
                if b"interrupted" in data:
                    connection.sendall(f"interrupted {index}\n".encode())
                    return
                if not data:  # the pipe closed without a word: the trainer is gone (the hub sees this close)
                    return
            else:
                data = connection.recv(4096)
                if not data:
                    _stop_trainer(trainer, f"lost process 0 of {count} (the coordinator)", False)
                heard = time.monotonic()
                for line in lines.feed(data):
                    word, _, rest = line.partition(" ")
                    if word == "done":
                        return  # process 0 ended normally: nothing is left to wait for
                    if word == "interrupted":
                        _stop_trainer(trainer, f"process {rest} of {count} was interrupted", True)
                    if word == "lost":
                        _stop_trainer(trainer, f"lost {rest}", False)
        if not _trainer_alive(trainer):
            return  # the connection closes with this process: the hub takes it as lost
        if time.monotonic() - heard > LOST_AFTER_SECONDS:
            _stop_trainer(trainer, f"lost process 0 of {count} (silent for {LOST_AFTER_SECONDS:g} s)", False)
        try:
            connection.sendall(b"beat\n")
        except OSError:  # the hub closed: normally after telling that process 0 is done (read it), else it is gone
            connection.setblocking(False)
            with contextlib.suppress(OSError):
                if b"done" in connection.recv(4096):
                    return
            _stop_trainer(trainer, f"lost process 0 of {count} (the coordinator)", False)


def main() -> None:
    trainer, index, count = (int(a) for a in sys.argv[1:4])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the trainer, which tells this watcher
    try:
        if len(sys.argv) > 4:
            spoke(trainer, index, count, sys.argv[4])
        else:
            hub(trainer, count)
    except OSError as err:
        print(f"warning: the watch over the run's processes stopped ({err}); JAX's heartbeat still ends every "
              "process 20 s after one is lost", file=sys.stderr, flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
