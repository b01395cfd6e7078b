"""The Apps registry on the router: deploys (code bundle to the blob store, app and version to
Postgres, spec to the NATS KV bucket that router replicas and app workers watch), list, get, scale
and delete with owner checks, runner counts from worker heartbeats, and app logs from JetStream.

Every replica keeps its catalog in step with the bucket; at start it loads apps from Postgres
(the source of truth) and brings the bucket up to date if NATS lost it.

Deploy rights. Deploying, scaling and deleting need a key with the `deploy` scope (granted by an
admin: a key created with API_KEY_SCOPE_DEPLOY) or an admin key. The owner namespace of an app
(`owner/` in `owner/alias`) belongs to the first key that deployed under it (table app_owners).
A deploy key may deploy only under
  - `<its key id>/` (what `alias` alone means, e.g. key_3f9a.../echo), and
  - `<its key name>/` when the admin gave the key a name that is a valid owner (e.g. alice/echo),
and only while that namespace is free or already bound to it: another key's namespace is refused,
and so is any other name, free or not, so no key can squat a name meant for someone else.
`genmesh/` and the owners of catalog models are reserved for admin keys. Admin keys may deploy
under any owner; a free namespace they deploy under is bound to them.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any, AsyncIterator

import asyncpg
import grpc
from google.protobuf import json_format
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError

from genmesh import blobstore, jsonpb
from genmesh.apps import bus as apps_bus
from genmesh.apps.spec import (APP_TASK, AppSpec, check_app_id, check_deploy, check_scaling,
                               default_owner, is_owner_name, spec_of)
from genmesh.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from genmesh.keys import Identity
from genmesh.rpc import servicer_errors
from genmesh.v1 import apps_pb2, apps_pb2_grpc, common_pb2

log = logging.getLogger("genmesh.router.apps")

_COLUMNS = ("id, owner_key_id, version, entrypoint, code_key, machine_type, num_gpus, requirements, "
            "keep_alive_s, min_concurrency, max_concurrency, endpoints, description, created_at, "
            "updated_at, trusted")
RESERVED_OWNERS = frozenset({"genmesh"})


def _endpoints_json(app: apps_pb2.App) -> list[dict[str, Any]]:
    return [{"path": e.path, "input_schema": jsonpb.struct_to_dict(e.input_schema),
             "output_schema": jsonpb.struct_to_dict(e.output_schema), "streaming": e.streaming}
            for e in app.endpoints]


def app_of(row: asyncpg.Record) -> apps_pb2.App:
    app = apps_pb2.App(
        id=row["id"], owner_key_id=row["owner_key_id"], version=row["version"],
        entrypoint=row["entrypoint"], code_url=row["code_key"], machine_type=row["machine_type"],
        num_gpus=row["num_gpus"], requirements=row["requirements"],
        keep_alive_seconds=row["keep_alive_s"], min_concurrency=row["min_concurrency"],
        max_concurrency=row["max_concurrency"], description=row["description"],
        trusted=row["trusted"])
    for ep in row["endpoints"]:
        out = app.endpoints.add(path=ep["path"], streaming=bool(ep.get("streaming")))
        out.input_schema.update(ep.get("input_schema") or {})
        out.output_schema.update(ep.get("output_schema") or {})
    app.created_at.FromDatetime(row["created_at"])
    app.updated_at.FromDatetime(row["updated_at"])
    return app


def _newer(a: apps_pb2.App, b: apps_pb2.App) -> bool:
    return (a.version, a.updated_at.ToNanoseconds()) > (b.version, b.updated_at.ToNanoseconds())


class AppStore:
    """The apps and app_versions tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, app_id: str) -> apps_pb2.App | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM apps WHERE id=$1", app_id)
        return app_of(row) if row else None

    async def list(self, owner_key_id: str | None = None) -> list[apps_pb2.App]:
        if owner_key_id is None:
            rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM apps ORDER BY id")
        else:
            rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM apps WHERE owner_key_id=$1 ORDER BY id",
                                         owner_key_id)
        return [app_of(r) for r in rows]

    async def save_version(self, identity: Identity, app: apps_pb2.App, code_key: str,
                           code: bytes) -> apps_pb2.App:
        """Stores a new version and makes it current; versions of one app are serialized."""
        manifest = json_format.MessageToDict(app, preserving_proto_field_name=True)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", app.id)
            await claim_namespace(conn, identity, app.id)
            owner = await conn.fetchval("SELECT owner_key_id FROM apps WHERE id=$1", app.id)
            check_owner(identity, app.id, owner)
            version = await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM app_versions WHERE app_id=$1", app.id)
            owner = owner or identity.key_id
            await conn.execute(
                "INSERT INTO app_versions (app_id, version, owner_key_id, entrypoint, code_key, "
                "code_sha256, code_bytes, manifest) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                app.id, version, owner, app.entrypoint, code_key, hashlib.sha256(code).hexdigest(),
                len(code), manifest)
            row = await conn.fetchrow(
                f"INSERT INTO apps (id, owner_key_id, version, entrypoint, code_key, machine_type, "
                f"num_gpus, requirements, keep_alive_s, min_concurrency, max_concurrency, endpoints, "
                f"description, trusted) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) "
                f"ON CONFLICT (id) DO UPDATE SET version=EXCLUDED.version, entrypoint=EXCLUDED.entrypoint, "
                f"code_key=EXCLUDED.code_key, machine_type=EXCLUDED.machine_type, "
                f"num_gpus=EXCLUDED.num_gpus, requirements=EXCLUDED.requirements, "
                f"keep_alive_s=EXCLUDED.keep_alive_s, min_concurrency=EXCLUDED.min_concurrency, "
                f"max_concurrency=EXCLUDED.max_concurrency, endpoints=EXCLUDED.endpoints, "
                f"description=EXCLUDED.description, trusted=EXCLUDED.trusted, updated_at=now() "
                f"RETURNING {_COLUMNS}",
                app.id, owner, version, app.entrypoint, code_key, app.machine_type, app.num_gpus,
                list(app.requirements), app.keep_alive_seconds, app.min_concurrency,
                app.max_concurrency, _endpoints_json(app), app.description, identity.is_admin)
        return app_of(row)

    async def scale(self, identity: Identity, request: apps_pb2.ScaleAppRequest) -> apps_pb2.App:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM apps WHERE id=$1 FOR UPDATE", request.id)
            if row is None:
                raise NotFound(f"app '{request.id}' not found")
            check_owner(identity, request.id, row["owner_key_id"])
            app = app_of(row)
            for name in ("min_concurrency", "max_concurrency", "keep_alive_seconds"):
                if request.HasField(name):
                    setattr(app, name, getattr(request, name))
            check_scaling(app)
            row = await conn.fetchrow(
                f"UPDATE apps SET min_concurrency=$2, max_concurrency=$3, keep_alive_s=$4, "
                f"updated_at=now() WHERE id=$1 RETURNING {_COLUMNS}",
                app.id, app.min_concurrency, app.max_concurrency, app.keep_alive_seconds)
        return app_of(row)

    async def delete(self, identity: Identity, app_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            owner = await conn.fetchval("SELECT owner_key_id FROM apps WHERE id=$1 FOR UPDATE", app_id)
            if owner is None:
                raise NotFound(f"app '{app_id}' not found")
            check_owner(identity, app_id, owner)
            await conn.execute("DELETE FROM apps WHERE id=$1", app_id)


def namespaces_of(identity: Identity) -> list[str]:
    """The owner namespaces a deploy key may claim (see the module docstring)."""
    names = [default_owner(identity.key_id)]
    if is_owner_name(identity.name) and identity.name not in names:
        names.append(identity.name)
    return names


def check_deploy_scope(identity: Identity, what: str) -> None:
    if not identity.can_deploy:
        raise PermissionDenied(f"{what} needs an API key with the 'deploy' scope; ask an admin for "
                               "one (CreateApiKey with API_KEY_SCOPE_DEPLOY)")


def check_namespace(identity: Identity, app_id: str, reserved: set[str] | frozenset[str]) -> str:
    """The app's owner, if this key may deploy under it at all (before looking at who holds it)."""
    owner = app_id.split("/", 1)[0]
    if identity.is_admin:
        return owner
    if owner in reserved:
        raise PermissionDenied(f"name: the owner '{owner}/' is reserved for the platform's own "
                               "models; deploy under your own namespace", field="name")
    return owner


async def claim_namespace(conn: asyncpg.Connection, identity: Identity, app_id: str) -> None:
    """Binds a free owner namespace to the deploying key, or refuses one bound to another key
    or not meant for this one; inside the deploy's transaction."""
    owner = app_id.split("/", 1)[0]
    mine = namespaces_of(identity)
    bound = await conn.fetchval("SELECT key_id FROM app_owners WHERE owner=$1", owner)
    if bound is None and (identity.is_admin or owner in mine):
        await conn.execute("INSERT INTO app_owners (owner, key_id) VALUES ($1, $2) "
                           "ON CONFLICT (owner) DO NOTHING", owner, identity.key_id)
        bound = await conn.fetchval("SELECT key_id FROM app_owners WHERE owner=$1", owner)
    if identity.is_admin or bound == identity.key_id:
        return
    choices = " or ".join(f"'{n}/'" for n in mine)
    if bound is not None:
        raise PermissionDenied(f"name: the owner namespace '{owner}/' belongs to another API key; "
                               f"this key deploys under {choices}", field="name")
    raise PermissionDenied(f"name: this key may deploy only under {choices}, not '{owner}/' "
                           "(an admin names a key to give it a namespace of that name)", field="name")


def check_owner(identity: Identity, app_id: str, owner_key_id: str | None) -> None:
    if owner_key_id is not None and owner_key_id != identity.key_id and not identity.is_admin:
        raise PermissionDenied(f"app '{app_id}' belongs to another API key; only the key that "
                               "deployed it (or an admin key) may change it")


class AppRegistry:
    """Deployed apps on one router replica: the store, the bucket, the catalog entries."""

    def __init__(self, mesh: Any) -> None:  # the router's Mesh (started)
        self.mesh = mesh
        self.catalog = mesh.catalog
        self.store = AppStore(mesh.pool)
        self.blobs = blobstore.open_store(mesh.settings)
        self.js = mesh.nc.jetstream()
        self.kv: Any = None
        self.watcher = apps_bus.AppWatcher(self.js, self._on_app, self._on_delete)

    async def start(self) -> None:
        await apps_bus.ensure_log_stream(self.js)
        self.kv = await apps_bus.bucket(self.js)
        apps = await self.store.list()
        for app in apps:
            self.catalog.add(spec_of(app))
        await self._reconcile(apps)
        await self.watcher.start()
        log.info("apps loaded", extra={"apps": len(apps)})

    async def stop(self) -> None:
        await self.watcher.stop()

    async def _reconcile(self, apps: list[apps_pb2.App]) -> None:
        """Brings the bucket up to date with Postgres (it may be new, or NATS may have lost it);
        compare-and-set, so a concurrent deploy on another replica is never overwritten."""
        wanted = {a.id: a for a in apps}
        try:
            present = set(await self.kv.keys())
        except Exception:  # noqa: BLE001 - an empty bucket answers "no keys found"
            present = set()
        for app_id, app in wanted.items():
            with contextlib.suppress(Exception):
                try:
                    entry = await self.kv.get(app_id)
                except KeyNotFoundError:
                    await self.kv.create(app_id, app.SerializeToString())
                    continue
                if not entry.value or _newer(app, apps_pb2.App.FromString(entry.value)):
                    await self.kv.update(app_id, app.SerializeToString(), last=entry.revision)
        for app_id in present - set(wanted):
            with contextlib.suppress(Exception):
                entry = await self.kv.get(app_id)
                if await self.store.get(app_id) is None:
                    await self.kv.delete(app_id, last=entry.revision)

    async def _on_app(self, app: apps_pb2.App) -> None:
        current = self.catalog.find(app.id)
        if isinstance(current, AppSpec) and current.id == app.id and _newer(current.app, app):
            return  # a stale update (our own write arrived after a newer one)
        self.catalog.add(spec_of(app))

    async def _on_delete(self, app_id: str) -> None:
        current = self.catalog.find(app_id)
        if current is not None and current.task == APP_TASK and current.id == app_id:
            self.catalog.remove(app_id)

    async def _publish(self, app: apps_pb2.App) -> None:
        await self.kv.put(app.id, app.SerializeToString())
        await self._on_app(app)

    async def log(self, app_id: str, message: str, *, version: int = 0,
                  level: int = common_pb2.LOG_LEVEL_INFO) -> None:
        line = apps_pb2.StreamAppLogsResponse(entry=common_pb2.LogEntry(
            message=message, level=level, source="router"), version=version)
        line.entry.timestamp.GetCurrentTime()
        with contextlib.suppress(Exception):
            await self.mesh.nc.publish(apps_bus.log_subject(app_id), line.SerializeToString())

    # --- operations ----------------------------------------------------------------------------

    def reserved_owners(self) -> set[str]:
        """`genmesh` and the owner of every catalog model (apps excluded), lower-cased: `qwen/`
        must not pass for `Qwen/`."""
        return set(RESERVED_OWNERS) | {m.id.split("/", 1)[0].lower() for m in self.catalog
                                       if m.task != APP_TASK and "/" in m.id}

    def check_sandbox(self, identity: Identity) -> None:
        """Code from non-admin keys runs only sandboxed: refuse it at once when every app worker
        says it has no sandbox (the worker refuses it too, should one join without)."""
        if identity.is_admin:
            return
        views = self.mesh.registry.for_service("apps")
        labels = [v.state.labels for v in views]
        if labels and all(lab.get(apps_bus.SANDBOX_LABEL, "none") == "none" for lab in labels):
            reason = next((lab.get(apps_bus.SANDBOX_REASON_LABEL) for lab in labels
                           if lab.get(apps_bus.SANDBOX_REASON_LABEL)), "no sandbox")
            raise FailedPrecondition(f"no app worker can sandbox app code ({reason}); apps from "
                                     "non-admin keys run only in a sandbox")

    async def deploy(self, identity: Identity, request: apps_pb2.DeployAppRequest) -> apps_pb2.App:
        check_deploy_scope(identity, "deploying an app")
        app = check_deploy(request, identity.key_id)
        check_namespace(identity, app.id, self.reserved_owners())
        self.check_sandbox(identity)
        taken = self.catalog.find(app.id)
        if taken is not None and taken.task != APP_TASK:
            raise AlreadyExists(f"'{app.id}' is a catalog model; deploy the app under another name")
        async with self.store.pool.acquire() as conn:
            await claim_namespace(conn, identity, app.id)  # before the upload: refused costs nothing
        existing = await self.store.get(app.id)
        check_owner(identity, app.id, existing.owner_key_id if existing else None)
        alias = app.id.split("/")[1]
        code_key = blobstore.new_key(identity.key_id, "apps", "application/zip", name=f"{alias}.zip")
        await self.blobs.put(code_key, request.code, "application/zip")
        started = time.perf_counter()
        saved = await self.store.save_version(identity, app, code_key, request.code)
        await self._publish(saved)
        await self.log(saved.id, f"deployed version {saved.version} ({len(request.code)} bytes, "
                                 f"{saved.machine_type}, {len(saved.endpoints)} endpoints)", version=saved.version)
        log.info("app deployed", extra={"model_id": saved.id, "version": saved.version,
                                        "api_key_id": identity.key_id,
                                        "seconds": round(time.perf_counter() - started, 3)})
        return self.with_runners(saved)

    async def owned(self, identity: Identity, app_id: str) -> apps_pb2.App:
        check_app_id(app_id, field="id")
        app = await self.store.get(app_id)
        if app is None:
            raise NotFound(f"app '{app_id}' not found")
        check_owner(identity, app_id, app.owner_key_id)
        return app

    async def get(self, identity: Identity, app_id: str) -> apps_pb2.App:
        check_app_id(app_id, field="id")
        app = await self.store.get(app_id)
        if app is None:
            raise NotFound(f"app '{app_id}' not found")
        if app.owner_key_id != identity.key_id and not identity.is_admin:
            # Anyone may call an app and read its schemas; its code and owner stay private.
            app.ClearField("code_url")
            app.ClearField("owner_key_id")
        return self.with_runners(app)

    async def list(self, identity: Identity) -> list[apps_pb2.App]:
        apps = await self.store.list(None if identity.is_admin else identity.key_id)
        return [self.with_runners(a) for a in apps]

    async def scale(self, identity: Identity, request: apps_pb2.ScaleAppRequest) -> apps_pb2.App:
        check_deploy_scope(identity, "scaling an app")
        check_app_id(request.id, field="id")
        app = await self.store.scale(identity, request)
        await self._publish(app)
        await self.log(app.id, f"scaled: min {app.min_concurrency}, max {app.max_concurrency}, "
                               f"keep_alive {app.keep_alive_seconds:g}s", version=app.version)
        return self.with_runners(app)

    async def delete(self, identity: Identity, app_id: str) -> None:
        check_deploy_scope(identity, "deleting an app")
        check_app_id(app_id, field="id")
        await self.store.delete(identity, app_id)
        with contextlib.suppress(Exception):
            await self.kv.delete(app_id)
        await self._on_delete(app_id)
        await self.log(app_id, "deleted")

    def with_runners(self, app: apps_pb2.App) -> apps_pb2.App:
        runners = busy = 0
        for view in self.mesh.registry.for_service("apps"):
            labels = view.state.labels
            runners += int(labels.get(apps_bus.runners_label(app.id), "0") or 0)
            busy += int(labels.get(apps_bus.busy_label(app.id), "0") or 0)
        app.runners, app.busy_runners = runners, busy
        return app

    async def logs(self, identity: Identity, request: apps_pb2.StreamAppLogsRequest
                   ) -> AsyncIterator[apps_pb2.StreamAppLogsResponse]:
        """The app's retained log lines, oldest first; with `follow`, new ones as they come."""
        await self.owned(identity, request.id)
        lines: asyncio.Queue[Any] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            lines.put_nowait(msg)

        sub = await self.js.subscribe(apps_bus.log_subject(request.id), stream=apps_bus.LOGS_STREAM,
                                      cb=on_msg, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            info = await sub.consumer_info()
            if not request.follow and info.num_pending == 0 and lines.empty():
                return
            while True:
                msg = await lines.get()
                yield apps_pb2.StreamAppLogsResponse.FromString(msg.data)
                if not request.follow and msg.metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class AppsServicer(apps_pb2_grpc.AppsServicer):
    def __init__(self, component: "AppsComponent") -> None:
        self.component = component

    @property
    def registry(self) -> AppRegistry:
        return self.component.registry

    async def _identify(self, context: grpc.aio.ServicerContext) -> Identity:
        return await self.component.mesh.auth.identify(context)

    @servicer_errors
    async def DeployApp(self, request: apps_pb2.DeployAppRequest,
                        context: grpc.aio.ServicerContext) -> apps_pb2.DeployAppResponse:
        identity = await self._identify(context)
        return apps_pb2.DeployAppResponse(app=await self.registry.deploy(identity, request))

    @servicer_errors
    async def ListApps(self, request: apps_pb2.ListAppsRequest,
                       context: grpc.aio.ServicerContext) -> apps_pb2.ListAppsResponse:
        identity = await self._identify(context)
        return apps_pb2.ListAppsResponse(apps=await self.registry.list(identity))

    @servicer_errors
    async def GetApp(self, request: apps_pb2.GetAppRequest,
                     context: grpc.aio.ServicerContext) -> apps_pb2.GetAppResponse:
        identity = await self._identify(context)
        return apps_pb2.GetAppResponse(app=await self.registry.get(identity, request.id))

    @servicer_errors
    async def ScaleApp(self, request: apps_pb2.ScaleAppRequest,
                       context: grpc.aio.ServicerContext) -> apps_pb2.ScaleAppResponse:
        identity = await self._identify(context)
        return apps_pb2.ScaleAppResponse(app=await self.registry.scale(identity, request))

    @servicer_errors
    async def DeleteApp(self, request: apps_pb2.DeleteAppRequest,
                        context: grpc.aio.ServicerContext) -> apps_pb2.DeleteAppResponse:
        identity = await self._identify(context)
        await self.registry.delete(identity, request.id)
        return apps_pb2.DeleteAppResponse()

    @servicer_errors
    async def StreamAppLogs(self, request: apps_pb2.StreamAppLogsRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[apps_pb2.StreamAppLogsResponse]:
        identity = await self._identify(context)
        async for line in self.registry.logs(identity, request):
            yield line


class AppsComponent:
    """What the router component registers and starts for apps (after the mesh is up)."""

    service_names = ["genmesh.v1.Apps"]

    def __init__(self, mesh: Any) -> None:
        self.mesh = mesh
        self.registry: AppRegistry

    def register(self, server: grpc.aio.Server) -> None:
        apps_pb2_grpc.add_AppsServicer_to_server(AppsServicer(self), server)

    async def start(self) -> None:
        self.registry = AppRegistry(self.mesh)
        await self.registry.start()

    async def stop(self) -> None:
        with contextlib.suppress(AttributeError):
            await self.registry.stop()
