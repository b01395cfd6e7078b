"""The app worker's gRPC surface: AppRunner.Invoke runs one endpoint call on a runner of the app
(starting one if needed) and streams its logs, partial outputs, usage and result."""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import grpc

from genmesh import blobstore, bus, jsonpb
from genmesh.apps import wire
from genmesh.apps.spec import endpoint_path
from genmesh.errors import Cancelled, Internal, InvalidArgument, NotFound
from genmesh.rpc import servicer_errors
from genmesh.settings import Settings
from genmesh.v1 import apps_pb2, apps_pb2_grpc, common_pb2
from genmesh.worker import WorkerComponent
from genmesh.services.apps.codecache import CodeCache
from genmesh.services.apps.deployments import AppsRuntime, Deployments, cache_dir, log_entry
from genmesh.services.apps.runners import Gateway
from genmesh.services.apps.sandbox import detect as detect_sandbox

log = logging.getLogger("genmesh.apps.server")
# How long a call naming a version this worker has not heard of yet waits for it.
VERSION_WAIT_S = 10.0


def _event(**kwargs: Any) -> apps_pb2.InvokeEvent:
    return apps_pb2.InvokeEvent(**kwargs)


class AppRunnerServicer(apps_pb2_grpc.AppRunnerServicer):
    def __init__(self, component: "AppsWorker") -> None:
        self.component = component

    @servicer_errors
    async def Invoke(self, request: apps_pb2.InvokeRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[apps_pb2.InvokeEvent]:
        deployments = self.component.deployments
        async with self.component.runtime.job(context, request.model_id) as job:
            app_id = job.model.id
            if request.version:
                await deployments.wait_version(app_id, request.version, VERSION_WAIT_S)
            app = deployments.apps.get(app_id)
            if app is None:
                raise NotFound(f"app '{app_id}' is not deployed on this worker")
            path = endpoint_path(app_id, request.model_id)
            if path not in {e.path for e in app.endpoints}:
                raise NotFound(f"app '{app_id}' has no endpoint '{path}'")
            payload = jsonpb.plain_json(jsonpb.struct_to_dict(request.input))
            async with deployments.pool(app_id).lease() as lease:
                runner = lease.runner
                cold = lease.cold_start_seconds
                if cold is not None:
                    message = (f"cold start: runner {runner.runner_id} of {app_id} v{runner.version} "
                               f"ready in {cold:.3f}s (setup {runner.setup_seconds:.3f}s)")
                    deployments.publish_log(app_id, message, "info", runner_id=runner.runner_id,
                                            request_id=job.request_id, version=runner.version)
                    yield _event(log=log_entry(message, "info", "worker"))
                async for frame in runner.invoke(path, payload, request_id=job.request_id):
                    kind = frame["t"]
                    if kind == wire.LOG:
                        yield _event(log=log_entry(str(frame.get("message", "")),
                                                   str(frame.get("level", "info")), "app"))
                    elif kind == wire.PARTIAL:
                        partial = common_pb2.PartialOutput()
                        partial.data.update(frame.get("data") or {})
                        yield _event(partial=partial)
                    elif kind == wire.RESULT:
                        seconds = float(frame.get("seconds", 0.0))
                        yield _event(usage=common_pb2.Usage(items=[common_pb2.UsageItem(
                            unit="runner_seconds", quantity=seconds)]))
                        result = apps_pb2.InvokeResult(
                            runner_seconds=seconds, cold_start=cold is not None,
                            cold_start_seconds=cold or 0.0, version=runner.version)
                        result.output.update(frame.get("output") or {})
                        yield _event(result=result)
                    elif kind == wire.ERROR:
                        if frame.get("kind") == wire.INVALID_INPUT:
                            raise InvalidArgument(str(frame.get("message", "")), field=frame.get("field") or "input")
                        raise Internal(f"app '{app_id}' failed: {frame.get('message', '')}")
                    elif kind == wire.CANCELLED:
                        raise Cancelled("the call was cancelled")


class AppsWorker(WorkerComponent):
    service = "apps"
    grpc_services = ["genmesh.v1.AppRunner"]
    uses_torch = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # The same runtime, reporting runners in its heartbeat; apps arrive from the bucket.
        self.runtime = AppsRuntime(settings, self.service, [], use_torch=False)
        self.runtime.loader = None  # runners load code, not models
        self.gateway = Gateway()
        self.nc: Any = None
        self.deployments: Deployments

    def add_servicers(self, server: grpc.aio.Server) -> None:
        apps_pb2_grpc.add_AppRunnerServicer_to_server(AppRunnerServicer(self), server)

    async def start(self, port: int) -> None:
        s = self.settings
        if not s.nats_url:
            raise RuntimeError("the apps worker needs GENMESH_NATS_URL (`genmesh up` sets it)")
        self.nc = await bus.connect(s.nats_url, f"{self.runtime.worker_id}-apps")
        await self.gateway.start()
        sandbox, reason = await detect_sandbox(s)
        if sandbox is None:
            log.warning("app sandbox unavailable: only apps deployed by admin keys will run, unsandboxed",
                        extra={"reason": reason})
        else:
            log.info("app runners are sandboxed", extra={"sandbox": reason, "uid": s.apps_sandbox_uid})
        code = CodeCache(cache_dir(s.data_dir), blobstore.open_store(s),
                         on_log=lambda app_id, message, level: self.deployments.publish_log(app_id, message, level))
        self.deployments = Deployments(self.runtime, nc=self.nc, code=code, gateway=self.gateway,
                                       sandbox=sandbox, sandbox_reason=reason,
                                       call_timeout_s=s.apps_call_timeout_s)
        self.runtime.deployments = self.deployments
        await self.deployments.start()
        await super().start(port)

    async def stop(self) -> None:
        await self.deployments.stop()
        await self.gateway.stop()
        await super().stop()
        if self.nc is not None:
            await self.nc.close()
