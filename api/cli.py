"""The `hexabase` command: run the control plane, its parts, and admin tasks.

hexabase up                       embedded PostgreSQL + NATS, migrations, API and a worker
hexabase api | worker             one part, against HEXABASE_DATABASE_URL / HEXABASE_NATS_URL
hexabase migrate                  apply database migrations
hexabase token create --email E   a personal API token (creates the user if needed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from api.settings import Settings, get_settings

RUNTIME_FILE = "runtime.json"


def runtime_settings() -> Settings:
    """Settings from the environment, completed by what a running `hexabase up` wrote down."""
    settings = get_settings()
    runtime = settings.data_dir / RUNTIME_FILE
    if (not settings.database_url or not settings.nats_url) and runtime.exists():
        found = json.loads(runtime.read_text())
        settings = get_settings(
            database_url=settings.database_url or found["database_url"],
            nats_url=settings.nats_url or found["nats_url"],
        )
    if not settings.database_url or not settings.nats_url:
        sys.exit(
            "hexabase: no database or NATS configured. Start everything with `hexabase up`, "
            "or set HEXABASE_DATABASE_URL and HEXABASE_NATS_URL."
        )
    return settings


def cmd_migrate(_: argparse.Namespace) -> None:
    from api.db.migrate import upgrade

    upgrade(runtime_settings().database_url)
    print("database is at the latest migration")


def cmd_token(args: argparse.Namespace) -> None:
    from api.db.session import make_engine, make_sessionmaker
    from api.db.users import create_token

    settings = runtime_settings()
    engine = make_engine(settings.database_url, pool_size=1)
    token = create_token(
        make_sessionmaker(engine), email=args.email, name=args.name, token_name=args.token_name
    )
    engine.dispose()
    print(token)


def cmd_api(_: argparse.Namespace) -> None:
    serve_api(runtime_settings())


def serve_api(settings: Settings) -> None:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def cmd_worker(_: argparse.Namespace) -> None:
    asyncio.run(run_worker(runtime_settings()))


async def run_worker(settings: Settings) -> None:
    from api.db.session import make_engine, make_sessionmaker
    from api.queue import Queue
    from api.worker import Worker, committer_from_settings

    engine = make_engine(settings.database_url)
    queue = await Queue.connect(
        settings.nats_url, stream=settings.stream_name, prefix=settings.subject_prefix
    )
    worker = Worker(
        committer_from_settings(settings, make_sessionmaker(engine)),
        queue,
        ack_wait=settings.ack_wait,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(worker, "stopping", True))
    logging.getLogger("hexabase").info("worker started; repositories in %s", settings.repos_path)
    try:
        await worker.run()
    finally:
        await queue.close()
        engine.dispose()


def cmd_watcher(_: argparse.Namespace) -> None:
    asyncio.run(run_watcher(runtime_settings()))


async def run_watcher(settings: Settings) -> None:
    """The status watcher, with NATS for live events; stands by while another one leads."""
    from api.db.session import make_engine, make_sessionmaker
    from api.kube import FluxApi
    from api.queue import Queue
    from api.watcher import StatusWatcher, nats_publisher, run_as_leader
    from reconciler.gitstore import GitStore

    if not settings.kubeconfig:
        sys.exit("hexabase watcher: set HEXABASE_KUBECONFIG to the host cluster's kubeconfig")
    engine = make_engine(settings.database_url)
    queue = await Queue.connect(
        settings.nats_url, stream=settings.stream_name, prefix=settings.subject_prefix
    )
    loop = asyncio.get_running_loop()
    watcher = StatusWatcher(
        api=FluxApi(settings.kubeconfig),
        sessions=make_sessionmaker(engine),
        store=GitStore(settings.repos_path, durability="none"),  # reads only
        publish=nats_publisher(loop, queue),
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, watcher.stopping.set)
    try:
        await asyncio.to_thread(run_as_leader, watcher)
    finally:
        watcher.api.close()
        await queue.close()
        engine.dispose()


def cmd_up(args: argparse.Namespace) -> None:
    """Everything on embedded defaults, in the foreground, until Ctrl-C."""
    from api.db.migrate import upgrade
    from api.embedded import EmbeddedNats, EmbeddedPostgres

    settings = get_settings()
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    print(f"hexabase: data directory {data}", flush=True)
    postgres: EmbeddedPostgres | None = None
    nats_server: EmbeddedNats | None = None
    database_url, nats_url = settings.database_url, settings.nats_url
    if not database_url:
        print("hexabase: starting embedded PostgreSQL ...", flush=True)
        postgres = EmbeddedPostgres.start(data / "postgres")
        if "hexabase" not in postgres.server.psql("SELECT datname FROM pg_database;"):
            postgres.create_database("hexabase")
        database_url = postgres.url("hexabase")
    if not nats_url:
        print("hexabase: starting embedded NATS with JetStream ...", flush=True)
        nats_server = EmbeddedNats.start(data / "nats", port=args.nats_port)
        nats_url = nats_server.url
    print("hexabase: applying database migrations ...", flush=True)
    upgrade(database_url)
    settings = get_settings(database_url=database_url, nats_url=nats_url, data_dir=data)
    (data / RUNTIME_FILE).write_text(
        json.dumps({"database_url": database_url, "nats_url": nats_url})
    )
    env = {
        **os.environ,
        "HEXABASE_DATABASE_URL": database_url,
        "HEXABASE_NATS_URL": nats_url,
        "HEXABASE_DATA_DIR": str(data),
    }
    workers = [
        subprocess.Popen([sys.executable, "-m", "api.cli", "worker"], env=env)
        for _ in range(args.workers)
    ]
    if settings.kubeconfig:
        workers.append(subprocess.Popen([sys.executable, "-m", "api.cli", "watcher"], env=env))
    else:
        print("hexabase: status watcher off (set HEXABASE_KUBECONFIG to follow a cluster)")
    url = f"http://{settings.host}:{settings.port}"
    print(
        f"""
Hexabase is starting at {url}  (OpenAPI: {url}/docs)
Tenant repositories: {settings.repos_path}

Get a first API token (in another shell, from this directory):
    ./hexabase token create --email you@example.com
Then:
    curl -H "Authorization: Bearer $TOKEN" {url}/api/v1/me
""",
        flush=True,
    )
    try:
        serve_api(settings)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(10)
        if nats_server:
            nats_server.stop()
        if postgres:
            postgres.stop()
        (data / RUNTIME_FILE).unlink(missing_ok=True)


def cmd_changes_watch(args: argparse.Namespace) -> None:
    from api.follow import watch

    if not args.token:
        sys.exit("hexabase: give --token or set HEXABASE_TOKEN (see `hexabase token create`)")
    sys.exit(watch(args.api, args.token, args.change_id))


def cmd_testbed(args: argparse.Namespace) -> None:
    from api.testbed import testbed

    workdir = Path(args.workdir) if args.workdir else get_settings().data_dir / "testbed"
    if args.testbed_command == "up":
        testbed.up(workdir, port=args.port)
    elif testbed.down(workdir):
        print(f"testbed in {workdir} stopped")
    else:
        print(f"no testbed running in {workdir}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="hexabase", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run Hexabase on embedded defaults")
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    up.add_argument("--nats-port", type=int, default=None)
    up.set_defaults(func=cmd_up)
    sub.add_parser("api", help="serve the HTTP API").set_defaults(func=cmd_api)
    sub.add_parser("worker", help="run a worker").set_defaults(func=cmd_worker)
    sub.add_parser(
        "watcher", help="run the status watcher (needs HEXABASE_KUBECONFIG)"
    ).set_defaults(func=cmd_watcher)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    token = sub.add_parser("token", help="personal API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token, printing it once")
    create.add_argument("--email", required=True)
    create.add_argument("--name", default="", help="the person's display name")
    create.add_argument("--token-name", default="cli")
    create.set_defaults(func=cmd_token)
    changes = sub.add_parser("changes", help="follow changes")
    changes_sub = changes.add_subparsers(dest="changes_command", required=True)
    follow = changes_sub.add_parser(
        "watch", help="follow a change until it is applied (exit 0) or failed (exit 1)"
    )
    follow.add_argument("change_id", type=int)
    follow.add_argument(
        "--api", default=os.environ.get("HEXABASE_API_URL", "http://127.0.0.1:8000")
    )
    follow.add_argument("--token", default=os.environ.get("HEXABASE_TOKEN", ""))
    follow.set_defaults(func=cmd_changes_watch)
    bed = sub.add_parser(
        "testbed", help="a real host API server, Flux and workspace API servers, with Hexabase"
    )
    bed_sub = bed.add_subparsers(dest="testbed_command", required=True)
    bed_up = bed_sub.add_parser("up", help="start it all in the foreground (Ctrl-C stops it)")
    bed_up.add_argument("--port", type=int, default=None, help="Hexabase API port")
    bed_down = bed_sub.add_parser("down", help="stop the testbed started by `testbed up`")
    for p in (bed_up, bed_down):
        p.add_argument("--workdir", default="", help="default: <data dir>/testbed")
        p.set_defaults(func=cmd_testbed)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
