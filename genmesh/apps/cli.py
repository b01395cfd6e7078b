"""The apps commands of the `genmesh` CLI: `run` (serve an app locally), `deploy`, and `apps list |
get | scale | logs | delete`. The mesh is found through GENMESH_URL (the edge) and the caller
authenticates with GENMESH_API_KEY; `--url` and `--key` override both."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from genmesh.apps.app import AppDefinitionError


def _client(args: argparse.Namespace) -> Any:
    from genmesh.apps.client import Client

    return Client(url=args.url, key=args.key)


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the edge's base URL (default: $GENMESH_URL or http://127.0.0.1:8080)")
    p.add_argument("--key", help="API key (default: $GENMESH_API_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _guarded(fn: Any) -> Any:
    """Client and definition errors become one line on stderr and exit status 1."""
    def run(args: argparse.Namespace) -> int:
        import httpx

        from genmesh.apps.client import ClientError

        try:
            return fn(args)
        except ClientError as exc:
            field = f" (field {exc.field})" if exc.field else ""
            return _fail(f"{exc.message}{field} [{exc.status_code} {exc.error_type}]")
        except (AppDefinitionError, ValueError) as exc:
            return _fail(str(exc))
        except httpx.HTTPError as exc:
            return _fail(f"cannot reach the mesh at {args.url or 'GENMESH_URL'}: {exc}")
    return run


def cmd_run(args: argparse.Namespace) -> int:
    from genmesh.apps.loader import AppRef, load_class
    from genmesh.apps.local import serve

    try:
        ref = AppRef.parse(args.app)
        cls = load_class(ref)
        cls.manifest()
    except AppDefinitionError as exc:
        return _fail(str(exc))
    print(f"serving {ref.class_name} on http://{args.host}:{args.port} "
          f"(endpoints: {', '.join(sorted(cls.endpoints()))}); Ctrl-C stops it", file=sys.stderr, flush=True)
    serve(cls, entrypoint=args.app, host=args.host, port=args.port)
    return 0


def _print_app(app: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(app, indent=2))
        return
    print(f"{app['id']}  version {app['version']}  {app['machine_type']}  "
          f"runners {app['runners']} (busy {app['busy_runners']})  "
          f"concurrency {app['min_concurrency']}..{app['max_concurrency']}  keep_alive {app['keep_alive']:g}s")
    for ep in app["endpoints"]:
        print(f"  POST {ep.get('url') or ep['path']}{'  (streaming)' if ep['streaming'] else ''}")


@_guarded
def cmd_deploy(args: argparse.Namespace) -> int:
    from pathlib import Path

    with _client(args) as client:
        app = client.deploy(args.app, name=args.name, root=Path(args.root) if args.root else None)
    if not args.json:
        print(f"deployed {app['id']} version {app['version']}", file=sys.stderr)
    _print_app(app, args.json)
    return 0


@_guarded
def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        apps = client.list_apps()
    if args.json:
        print(json.dumps(apps, indent=2))
        return 0
    print(f"{'APP':40} {'VERSION':>7} {'MACHINE':9} {'RUNNERS':>7} {'BUSY':>4} {'MIN':>3} {'MAX':>3} "
          f"{'KEEP_ALIVE':>10}")
    for a in apps:
        print(f"{a['id']:40} {a['version']:>7} {a['machine_type']:9} {a['runners']:>7} {a['busy_runners']:>4} "
              f"{a['min_concurrency']:>3} {a['max_concurrency']:>3} {a['keep_alive']:>9g}s")
    return 0


@_guarded
def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_app(client.get_app(args.id), args.json)
    return 0


@_guarded
def cmd_scale(args: argparse.Namespace) -> int:
    if args.min is None and args.max is None and args.keep_alive is None:
        return _fail("give at least one of --min, --max, --keep-alive")
    with _client(args) as client:
        app = client.scale_app(args.id, min_concurrency=args.min, max_concurrency=args.max,
                               keep_alive=args.keep_alive)
    _print_app(app, args.json)
    return 0


@_guarded
def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            for line in client.app_logs(args.id, follow=args.follow):
                if args.json:
                    print(json.dumps(line), flush=True)
                    continue
                where = f" {line['runner_id']}" if line.get("runner_id") else f" {line['source']}"
                request = f" [{line['request_id'][:8]}]" if line.get("request_id") else ""
                print(f"{line['timestamp']} v{line['version']}{where}{request} {line['level']}: {line['message']}",
                      flush=True)
        except KeyboardInterrupt:
            pass
    return 0


@_guarded
def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_app(args.id)
    print(f"deleted {args.id}", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="serve an app locally for development (no mesh needed)")
    run.add_argument("app", help="path/to/file.py::ClassName")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.set_defaults(func=cmd_run)

    deploy = sub.add_parser("deploy", help="deploy an app to the mesh (a new version when it exists)")
    deploy.add_argument("app", help="path/to/file.py::ClassName")
    deploy.add_argument("--name", help="owner/alias (default: the class's `name`, under your key)")
    deploy.add_argument("--root", help="the directory to bundle (default: the file's directory)")
    _connection_args(deploy)
    deploy.set_defaults(func=cmd_deploy)

    apps = sub.add_parser("apps", help="deployed apps")
    asub = apps.add_subparsers(dest="apps_command", required=True)
    ls = asub.add_parser("list", help="your apps with their runners")
    _connection_args(ls)
    ls.set_defaults(func=cmd_list)
    get = asub.add_parser("get", help="one app with its endpoints")
    get.add_argument("id", help="owner/alias")
    _connection_args(get)
    get.set_defaults(func=cmd_get)
    scale = asub.add_parser("scale", help="change concurrency or keep-alive")
    scale.add_argument("id", help="owner/alias")
    scale.add_argument("--min", type=int, help="runners kept warm")
    scale.add_argument("--max", type=int, help="most runners at once")
    scale.add_argument("--keep-alive", type=float, help="seconds an idle runner stays up")
    _connection_args(scale)
    scale.set_defaults(func=cmd_scale)
    logs = asub.add_parser("logs", help="the app's log lines")
    logs.add_argument("id", help="owner/alias")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    _connection_args(logs)
    logs.set_defaults(func=cmd_logs)
    delete = asub.add_parser("delete", help="delete an app")
    delete.add_argument("id", help="owner/alias")
    _connection_args(delete)
    delete.set_defaults(func=cmd_delete)
