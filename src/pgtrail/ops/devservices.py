"""Throwaway local PostgreSQL and Redis servers for the demo and the tests.

Used only when no server is configured or reachable. ``postgres`` refuses to run as root,
so as root the cluster is created and run as an unprivileged account (``nobody``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgtrail.errors import PgtrailError

INSTALL_POSTGRES = "apt-get install -y postgresql"
INSTALL_REDIS = "apt-get install -y redis-server"
_UNPRIVILEGED = "nobody"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres, or an error naming the install."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if candidates:
        return candidates[0].parent
    raise PgtrailError(
        f"PostgreSQL server binaries not found; install them with: {INSTALL_POSTGRES}"
    )


def _run_as() -> str | None:
    return _UNPRIVILEGED if os.geteuid() == 0 else None


def _others_can_enter(path: Path) -> bool:
    """True when every existing ancestor of ``path`` is searchable by other users."""
    for folder in [path, *path.parents]:
        if folder.exists() and not folder.stat().st_mode & 0o001:
            return False
    return True


def _reachable_home(base_dir: Path) -> Path:
    """A folder the unprivileged server account can reach, stable for a given base_dir."""
    if _others_can_enter(base_dir.parent):
        return base_dir
    digest = hashlib.sha1(str(base_dir.resolve()).encode(), usedforsecurity=False).hexdigest()
    return Path(tempfile.gettempdir()) / f"pgtrail-pg-{digest[:12]}"


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in a temporary folder, trust auth, loopback only."""

    port: int = field(default_factory=free_port)
    base_dir: Path | None = None
    user: str = "postgres"
    _data: Path | None = None
    _owned_base: bool = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def start(self) -> LocalPostgres:
        """initdb (first time) and start; waits until the server accepts connections."""
        bin_dir = postgres_bin_dir()
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="pgtrail-pg-"))
            self._owned_base = True
        run_as = _run_as()
        if run_as:
            self.base_dir = _reachable_home(self.base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._data = self.base_dir / "data"
        if run_as:
            account = pwd.getpwnam(run_as)
            os.chmod(self.base_dir, 0o755)  # noqa: S103  (the server account must enter it)
            os.chown(self.base_dir, account.pw_uid, account.pw_gid)
        if not (self._data / "PG_VERSION").exists():
            self._pg(
                bin_dir / "initdb",
                "-D",
                str(self._data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        self._pg(
            bin_dir / "pg_ctl",
            "-D",
            str(self._data),
            "-l",
            str(self.base_dir / "postgres.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``fast`` rolls back open work; ``immediate`` is a crash)."""
        if self._data and (self._data / "postmaster.pid").exists():
            self._pg(postgres_bin_dir() / "pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stops the server and removes its folder if this object created it."""
        with contextlib.suppress(PgtrailError):
            self.stop("immediate")
        if self._owned_base and self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _pg(self, exe: Path, *args: str) -> None:
        run_as = _run_as()
        try:
            subprocess.run(  # noqa: S603
                [str(exe), *args],
                check=True,
                capture_output=True,
                text=True,
                user=run_as,
                cwd=self.base_dir,
                timeout=120,
            )
        except subprocess.CalledProcessError as exc:
            raise PgtrailError(
                f"{exe.name} failed (exit {exc.returncode}): "
                f"{exc.stderr.strip() or exc.stdout.strip()}"
            ) from exc


@dataclass
class LocalRedis:
    """A Redis server on a loopback port that keeps nothing on disk."""

    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        """Starts redis-server and waits until it answers."""
        exe = shutil.which("redis-server")
        if not exe:
            raise PgtrailError(f"redis-server not found; install it with: {INSTALL_REDIS}")
        self._proc = subprocess.Popen(  # noqa: S603
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                tempfile.gettempdir(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise PgtrailError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Kills the server; everything it held is gone."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)


def _ensure_database(admin_dsn: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    from pgtrail.statements import STATEMENTS

    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute(STATEMENTS["devservices_database_exists"], (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def demo_environment(state_dir: Path, dbname: str = "pgtrail_demo") -> dict[str, str]:
    """PGTRAIL_DSN and PGTRAIL_REDIS_URL for the demo: configured, local, or started here.

    A server started here keeps running (its data in ``state_dir``) so the demo's data can
    be explored with psql afterwards; ``stop_demo_services`` stops it.
    """
    env: dict[str, str] = {}
    if os.environ.get("PGTRAIL_DSN"):
        env["PGTRAIL_DSN"] = os.environ["PGTRAIL_DSN"]
    elif port_open("127.0.0.1", 5432):
        _ensure_database("postgresql://postgres@127.0.0.1:5432/postgres", dbname)
        env["PGTRAIL_DSN"] = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
    else:
        port_file = state_dir / "postgres.port"
        port = int(port_file.read_text()) if port_file.exists() else free_port()
        local = LocalPostgres(port=port, base_dir=state_dir / "postgres")
        if not port_open("127.0.0.1", port):
            local.start()
        port_file.write_text(str(port))
        _ensure_database(local.dsn, dbname)
        env["PGTRAIL_DSN"] = local.dsn.rsplit("/", 1)[0] + f"/{dbname}"
    if os.environ.get("PGTRAIL_REDIS_URL"):
        env["PGTRAIL_REDIS_URL"] = os.environ["PGTRAIL_REDIS_URL"]
    elif port_open("127.0.0.1", 6379):
        env["PGTRAIL_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    else:
        port_file = state_dir / "redis.port"
        port = int(port_file.read_text()) if port_file.exists() else free_port()
        if not port_open("127.0.0.1", port):
            exe = shutil.which("redis-server")
            if not exe:
                raise PgtrailError(f"redis-server not found; install it with: {INSTALL_REDIS}")
            subprocess.run(  # noqa: S603
                [
                    exe,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "yes",
                    "--pidfile",
                    str(state_dir / "redis.pid"),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
        port_file.write_text(str(port))
        env["PGTRAIL_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    return env


def main(argv: list[str] | None = None) -> int:
    """``python -m pgtrail.ops.devservices demo-env DIR``: print export lines for the demo."""
    import shlex
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "demo-env":
        print("usage: python -m pgtrail.ops.devservices demo-env STATE_DIR", file=sys.stderr)
        return 2
    state_dir = Path(args[1])
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        env = demo_environment(state_dir)
    except PgtrailError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
