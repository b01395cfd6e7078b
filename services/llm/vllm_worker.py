"""vLLM's CPU worker, its gloo process groups on one quiet device when it is alone in its world.

Idle, the per-group gloo devices torch makes were the whole of a vLLM engine's CPU (gloo.py has
the numbers). vLLM imports this module in its worker process (`worker_cls`, see
vllm_engine.CPU_WORKER); the loop's timer slack comes from genmesh's settings through vLLM's
`additional_config` (vllm_engine.GLOO_SLACK_KEY).
"""
from __future__ import annotations

from vllm.v1.worker.cpu_worker import CPUWorker

from .gloo import one_gloo_device
from .vllm_engine import GLOO_SLACK_KEY


class OneDeviceCPUWorker(CPUWorker):
    """vLLM's CPU worker; alone in its world, its process groups share one quiet gloo device."""

    def init_device(self) -> None:
        if self.parallel_config.world_size_across_dp != 1:
            # Ranks in other processes talk over gloo: torch's devices and loops stay as they are.
            super().init_device()
            return
        extra = self.vllm_config.additional_config
        slack = float(extra.get(GLOO_SLACK_KEY, 0.0)) if isinstance(extra, dict) else 0.0
        with one_gloo_device(slack):
            super().init_device()
