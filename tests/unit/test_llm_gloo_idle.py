"""A process alone in its torch.distributed world (vLLM's CPU worker) keeps one quiet gloo loop:
every gloo group shares one device, whose loop thread carries the timer slack it was given."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from genmesh.services.llm import vllm_engine
from genmesh.services.llm.gloo import one_gloo_device
from genmesh.settings import Settings


def _loop_threads() -> list[str]:
    return [t for t in os.listdir("/proc/self/task")
            if Path(f"/proc/self/task/{t}/comm").read_text().strip() == "gloo_tcp_loop"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_gloo_groups_alone_in_their_world_share_one_slack_loop_and_still_work(tmp_path: Path) -> None:
    before = set(_loop_threads())
    own_slack = Path("/proc/self/timerslack_ns").read_text()
    with one_gloo_device(0.5):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
        try:
            groups = [dist.new_group([0], backend="gloo") for _ in range(6)]
            t = torch.ones(3)
            for g in groups:
                dist.all_reduce(t, group=g)
                objects: list[object] = [{"a": 1}]
                dist.broadcast_object_list(objects, src=0, group=g)
                assert objects == [{"a": 1}]
            assert t.tolist() == [1.0, 1.0, 1.0]
            new = set(_loop_threads()) - before
            assert len(new) == 1  # torch alone makes one loop per group: seven here
            assert Path(f"/proc/{new.pop()}/timerslack_ns").read_text().strip() == str(500_000_000)
        finally:
            dist.destroy_process_group()
    assert Path("/proc/self/timerslack_ns").read_text() == own_slack  # this thread's is restored


@pytest.mark.skipif(not vllm_engine.available(), reason="vLLM is not installed")
def test_vllm_on_cpu_starts_its_quiet_worker_with_the_settings_slack(tmp_path: Path) -> None:
    from vllm.platforms import current_platform
    from vllm.utils.import_utils import resolve_obj_by_qualname
    from vllm.v1.worker.cpu_worker import CPUWorker

    if not current_platform.is_cpu():
        pytest.skip("the quiet worker is vLLM's CPU worker")
    args = vllm_engine.engine_args(tmp_path, None, vllm_engine.VLLMConfig(gloo_timer_slack_s=0.5))
    assert args.worker_cls == vllm_engine.CPU_WORKER
    assert args.additional_config[vllm_engine.GLOO_SLACK_KEY] == 0.5
    assert issubclass(resolve_obj_by_qualname(vllm_engine.CPU_WORKER), CPUWorker)
    assert Settings().llm_gloo_timer_slack_s == vllm_engine.VLLMConfig().gloo_timer_slack_s == 1.0
