"""The local Label Studio server: start, stop, status and annotator accounts.

The server runs from its own virtual environment (``labelstudio.venv``, made by ``make setup``) on 127.0.0.1
only, with its SQLite data under ``labelstudio.home``:

- ``data/``: Label Studio's data dir (database, media, its own SECRET_KEY).
- ``credentials.json`` (mode 0600): the admin e-mail, password and API token, generated on first start.
- ``annotators.json`` (mode 0600): passwords of annotator accounts made by ``add_annotator``.
- ``server.json``: pid, port, URL and document root of the running server; ``server.log``: its output.

A fresh database costs Label Studio 60-100 s of migrations, so the first start builds a migrated, user-less
template data dir under ``labelstudio.template_dir`` (one per server version) and every new data dir starts as a
copy of it (~15 s). The admin user and token are created by the server itself on first start, from environment
variables, so they never appear on a command line, in params.yaml or in the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from curation.studio.errors import StudioError

if TYPE_CHECKING:
    from schemas.params_studio import LabelStudioParams

LOOPBACK = "127.0.0.1"
ADMIN_EMAIL = "admin@studio.local"
DB_FILE = "label_studio.sqlite3"
_LOG_TAIL_LINES = 15
_STOP_TIMEOUT_S = 30.0

Status = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class StudioHome:
    """Where one local server keeps its data, credentials, state and log."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.json"

    @property
    def annotators(self) -> Path:
        return self.root / "annotators.json"

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    @property
    def log(self) -> Path:
        return self.root / "server.log"


@dataclass(frozen=True)
class Credentials:
    """The local admin account. ``repr`` hides the secrets so they cannot leak into logs or tracebacks."""

    email: str
    password: str = field(repr=False)
    token: str = field(repr=False)


@dataclass(frozen=True)
class ServerState:
    pid: int
    port: int
    url: str
    document_root: str
    data_dir: str
    log: str
    version: str


@dataclass(frozen=True)
class ServerStatus:
    state: ServerState | None
    alive: bool
    healthy: bool


# ---------------------------------------------------------------------------------------------- secrets on disk


def write_private_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically to ``path`` with mode 0600 from the first byte (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_private_json(path: Path) -> dict:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StudioError(f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def load_credentials(home: StudioHome) -> Credentials | None:
    if not home.credentials.exists():
        return None
    data = read_private_json(home.credentials)
    return Credentials(email=data["email"], password=data["password"], token=data["token"])


def _create_credentials(home: StudioHome) -> Credentials:
    creds = Credentials(email=ADMIN_EMAIL, password=secrets.token_urlsafe(18), token=secrets.token_hex(20))
    write_private_json(home.credentials, {"email": creds.email, "password": creds.password, "token": creds.token})
    return creds


# ---------------------------------------------------------------------------------------------- the server venv


def studio_binary(venv: Path) -> Path:
    binary = Path(venv) / "bin" / "label-studio"
    if not binary.exists():
        raise StudioError(
            f"the Label Studio server is not installed: {binary} not found; run `make setup` (it creates {venv})"
        )
    return binary


def server_version(venv: Path) -> str:
    """The label-studio version installed in ``venv``, read from its dist-info folder name (no interpreter start)."""
    found = sorted(Path(venv).glob("lib/python*/site-packages/label_studio-*.dist-info"))
    if not found:
        raise StudioError(f"no label-studio package in {venv}; run `make setup` (it creates {venv})")
    return found[-1].name.removeprefix("label_studio-").removesuffix(".dist-info")


# The local server lets ML backends on loopback through (`curation serve` binds 127.0.0.1): Label Studio's SSRF
# guard bans loopback among other reserved ranges and checks both the ML backend URL and the webhook it registers
# beside it, so such a backend is refused (HTTP 403). These settings keep every default-banned range banned
# except 127.0.0.0/8.
_SSRF_BANNED = (
    "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,169.254.0.0/16,172.16.0.0/12,192.0.0.0/24,192.0.2.0/24,192.88.99.0/24,"
    "192.168.0.0/16,198.18.0.0/15,198.51.100.0/24,203.0.113.0/24,224.0.0.0/4,233.252.0.0/24,240.0.0.0/4,"
    "255.255.255.255/32,::/128,::1/128,::ffff:0:0/96,::ffff:0:0:0/96,64:ff9b::/96,64:ff9b:1::/48,100::/64,"
    "2001:0000::/32,2001:20::/28,2001:db8::/32,2002::/16,fc00::/7,fe80::/10,ff00::/8"
)
LOCAL_BACKEND_ENV = {"USE_DEFAULT_BANNED_SUBNETS": "false", "USER_ADDITIONAL_BANNED_SUBNETS": _SSRF_BANNED}


def _server_env(data_dir: Path, document_root: Path, creds: Credentials | None) -> dict[str, str]:
    """Environment for the server: ours only. Label Studio also reads bare USERNAME/PASSWORD/PORT/HOST/...
    (``get_env`` tries the unprefixed name last), so those and any LABEL_STUDIO_* from the caller are dropped."""
    dropped = {"USERNAME", "PASSWORD", "USER_TOKEN", "PORT", "HOST", "BASE_DATA_DIR", "DATABASE_NAME", "SECRET_KEY"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "HEARTEX_", "DJANGO_", "POSTGRE"))
        and k not in dropped
        and k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            **LOCAL_BACKEND_ENV,
        }
    )
    if creds is not None:
        env.update(
            {
                "LABEL_STUDIO_USERNAME": creds.email,
                "LABEL_STUDIO_PASSWORD": creds.password,
                "LABEL_STUDIO_USER_TOKEN": creds.token,
            }
        )
    return env


# ---------------------------------------------------------------------------------------------- template


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_template(template_dir: Path, *, venv: Path, timeout_s: float = 600.0, on_status: Status = _quiet) -> Path:
    """Return a migrated, user-less Label Studio data dir for this server version, building it once (~60-100 s).

    Concurrent callers (two test sessions) wait on a file lock instead of migrating twice.
    """
    binary = studio_binary(venv)
    target = Path(template_dir).resolve() / f"label-studio-{server_version(venv)}"
    if (target / DB_FILE).exists():
        return target
    with _locked(target.parent / ".lock"):
        if (target / DB_FILE).exists():
            return target
        on_status(f"building the Label Studio template data dir in {target} (once; about 1-2 minutes)")
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        log = build.parent / f"{build.name}.log"
        try:
            with open(log, "w") as out:
                done = subprocess.run(
                    [str(binary), "init", "--quiet", "--no-browser"],
                    env=_server_env(build, build, None),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout_s,
                    check=False,
                )
            if done.returncode != 0 or not (build / DB_FILE).exists():
                raise StudioError(
                    f"`label-studio init` failed (exit {done.returncode}) while building {target}:\n{_tail(log)}"
                )
            (build / ".env").unlink(missing_ok=True)  # the SECRET_KEY: every copy must make its own
            os.replace(build, target)
        except subprocess.TimeoutExpired as err:
            raise StudioError(f"`label-studio init` took over {timeout_s:.0f} s building {target}") from err
        finally:
            shutil.rmtree(build, ignore_errors=True)
            log.unlink(missing_ok=True)
    return target


def new_data_dir(data_dir: Path, template: Path) -> None:
    """Copy the template into an empty ``data_dir`` (owner-only permissions)."""
    shutil.copytree(template, data_dir, ignore=shutil.ignore_patterns(".env"), dirs_exist_ok=True)
    os.chmod(data_dir, 0o700)
    os.chmod(data_dir / DB_FILE, 0o600)


# ---------------------------------------------------------------------------------------------- processes

_children: dict[int, subprocess.Popen] = {}  # servers started by this process, reaped on stop


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state != "Z"


def _is_our_server(pid: int, port: int) -> bool:
    """Guard against pid reuse: only signal a process whose command line is a label-studio on our port."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)
    return any(b"label-studio" in a for a in args) and str(port).encode() in args


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback must not go through a proxy


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with _NO_PROXY.open(f"{url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(log: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(f"  | {line}" for line in text[-lines:])


def read_state(home: StudioHome) -> ServerState | None:
    if not home.state.exists():
        return None
    return ServerState(**json.loads(home.state.read_text(encoding="utf-8")))


def status(home: StudioHome) -> ServerStatus:
    state = read_state(home)
    if state is None:
        return ServerStatus(None, alive=False, healthy=False)
    alive = _pid_alive(state.pid) and _is_our_server(state.pid, state.port)
    return ServerStatus(state, alive=alive, healthy=alive and healthy(state.url))


def start(
    home: StudioHome,
    *,
    venv: Path,
    template_dir: Path,
    document_root: Path,
    port: int = 0,
    timeout_s: float = 240.0,
    on_status: Status = _quiet,
) -> ServerState:
    """Start the local server (or return the running one) and wait until ``/health`` answers.

    Raises:
        StudioError: the server venv is missing, the port is taken, the document root does not exist, or the
            server exited or stayed unhealthy during start-up (the message quotes the end of its log).
    """
    binary = studio_binary(venv)
    document_root = Path(document_root).resolve()
    if not document_root.is_dir():
        raise StudioError(f"labelstudio.document_root {document_root} is not a folder; point it at the images' root")
    current = status(home)
    if current.alive and current.state is not None:
        if Path(current.state.document_root) != document_root:
            on_status(
                f"note: the running server serves files under {current.state.document_root}, not {document_root}; "
                "run `curation studio stop` and start again to change it"
            )
        return current.state
    home.state.unlink(missing_ok=True)  # stale: the process is gone

    if port == 0:
        port = free_port()
    elif port_in_use(port):
        raise StudioError(
            f"port {port} on {LOOPBACK} is already in use by another program; set labelstudio.port to a free "
            "port, or to 0 to pick one"
        )

    home.root.mkdir(parents=True, exist_ok=True)
    os.chmod(home.root, 0o700)
    if not (home.data_dir / DB_FILE).exists():
        template = ensure_template(template_dir, venv=venv, on_status=on_status)
        new_data_dir(home.data_dir, template)
    creds = load_credentials(home) or _create_credentials(home)

    url = f"http://{LOOPBACK}:{port}"
    fd = os.open(home.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as log:
        log.write(f"\n=== starting label-studio on {url} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
        log.flush()
        process = subprocess.Popen(
            [str(binary), "start", "--no-browser", "--internal-host", LOOPBACK, "--port", str(port)],
            env=_server_env(home.data_dir.resolve(), document_root, creds),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal that started it does not stop the server
        )
    _children[process.pid] = process
    state = ServerState(
        pid=process.pid,
        port=port,
        url=url,
        document_root=str(document_root),
        data_dir=str(home.data_dir.resolve()),
        log=str(home.log.resolve()),
        version=server_version(venv),
    )
    home.state.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    on_status(f"starting Label Studio {state.version} on {url} (pid {process.pid}, log {home.log})")
    try:
        _wait_healthy(process, state, home, timeout_s)
    except BaseException:
        _terminate(process.pid, port)
        home.state.unlink(missing_ok=True)
        raise
    return state


def start_local(settings: LabelStudioParams, *, on_status: Status = _quiet) -> ServerState:
    """:func:`start` with the ``labelstudio`` params (home, venv, template dir, document root, port, timeout)."""
    return start(
        StudioHome(settings.home),
        venv=settings.venv,
        template_dir=settings.template_dir,
        document_root=settings.document_root,
        port=settings.port,
        timeout_s=settings.start_timeout_s,
        on_status=on_status,
    )


def _wait_healthy(process: subprocess.Popen, state: ServerState, home: StudioHome, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise StudioError(
                f"Label Studio exited with code {code} during start-up; end of {home.log}:\n{_tail(home.log)}"
            )
        if healthy(state.url, timeout_s=1.0):
            return
        log_text = home.log.read_text(encoding="utf-8", errors="replace") if home.log.exists() else ""
        if re.search(rf"Port {state.port} is in use", log_text):
            raise StudioError(
                f"port {state.port} was taken while Label Studio started; start again (labelstudio.port: 0 picks "
                "a free port)"
            )
        time.sleep(0.5)
    raise StudioError(
        f"Label Studio did not answer {state.url}/health within {timeout_s:.0f} s; end of {home.log}:\n"
        f"{_tail(home.log)}\nraise labelstudio.start_timeout_s on a slow machine"
    )


def _terminate(pid: int, port: int, timeout_s: float = _STOP_TIMEOUT_S) -> None:
    """SIGTERM the server by pid (never by name), then SIGKILL if it has not exited in ``timeout_s``."""
    if not (_pid_alive(pid) and _is_our_server(pid, port)):
        _reap(pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    _reap(pid)


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def stop(home: StudioHome) -> ServerState | None:
    """Stop the local server; returns its state, or None when none was running."""
    state = read_state(home)
    if state is None:
        return None
    running = _pid_alive(state.pid) and _is_our_server(state.pid, state.port)
    if running:
        _terminate(state.pid, state.port)
    home.state.unlink(missing_ok=True)
    return state if running else None


# ---------------------------------------------------------------------------------------------- annotators


def add_annotator(url: str, token: str, email: str, *, home: StudioHome, timeout_s: float = 30.0) -> Path:
    """Create an annotator account that can log in, through Label Studio's invite link; returns the file holding
    the generated password (``annotators.json``, mode 0600).

    The API cannot set a password on a new user (``users.create`` ignores it), so this signs up through the
    organisation's invite link exactly as a person would.
    """
    import httpx

    from curation.studio.client import scrub

    password = secrets.token_urlsafe(12)
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, follow_redirects=False, trust_env=False) as http:
            existing = http.get("/api/users/", headers={"Authorization": f"Token {token}"})
            if existing.status_code in (401, 403):
                raise StudioError(f"{url} rejected the API token (HTTP {existing.status_code}); see `studio status`")
            existing.raise_for_status()
            if any(u.get("email", "").lower() == email.lower() for u in existing.json()):
                raise StudioError(f"a user {email} already exists on {url}; pick another e-mail")
            invite = http.get("/api/invite", headers={"Authorization": f"Token {token}"})
            invite.raise_for_status()
            signup = f"/user/signup/?token={invite.json()['token']}"
            http.get(signup)
            form = {"csrfmiddlewaretoken": http.cookies.get("csrftoken", ""), "email": email, "password": password}
            answer = http.post(signup, data=form, headers={"Referer": f"{url}{signup}"})
    except httpx.HTTPError as err:
        raise StudioError(f"could not create annotator {email} on {url}: {scrub(str(err), token)}") from None
    if answer.status_code != 302:
        reason = re.findall(r'class="[^"]*error[^"]*"[^>]*>([^<]+)<', answer.text)
        detail = "; ".join(r.strip() for r in reason if r.strip()) or f"HTTP {answer.status_code}"
        raise StudioError(f"Label Studio refused to create annotator {email}: {detail}")
    known = read_private_json(home.annotators) if home.annotators.exists() else {}
    known[email] = {"password": password, "url": url}
    write_private_json(home.annotators, known)
    return home.annotators
