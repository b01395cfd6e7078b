"""Placement is a pure function: resident first, then room, then LRU eviction, else queue."""
from __future__ import annotations

import random

from genmesh.services.router.placement import (GB, ModelNeeds, RandomChoice, Resident, ResidentFirst,
                                               RoundRobin, WorkerInfo)


def worker(wid: str, *, models=("m",), capacity=4, in_flight=0, resident=(), mem_gb=24, gpu="A100",
           zone="", draining=False) -> WorkerInfo:
    return WorkerInfo(wid, frozenset(models), capacity, in_flight,
                      tuple(Resident(m, int(g * GB), t) for m, g, t in resident),
                      int(mem_gb * GB), gpu, 1 if gpu else 0, zone, draining)


def test_prefers_a_worker_where_the_model_is_resident() -> None:
    workers = [worker("cold"), worker("warm", resident=[("m", 2, 1.0)])]
    d = ResidentFirst(random.Random(0)).place(ModelNeeds("m", 2 * GB), workers)
    assert (d.worker_id, d.cold) == ("warm", False)


def test_power_of_two_picks_the_less_loaded_resident_worker() -> None:
    workers = [worker("busy", in_flight=3, resident=[("m", 1, 0)]), worker("idle", resident=[("m", 1, 0)])]
    picks = {ResidentFirst(random.Random(i)).place(ModelNeeds("m", GB), workers).worker_id for i in range(20)}
    assert picks == {"idle"}


def test_saturated_resident_worker_is_skipped_for_one_with_room() -> None:
    workers = [worker("warm", in_flight=4, resident=[("m", 1, 0)]), worker("free")]
    d = ResidentFirst().place(ModelNeeds("m", GB), workers)
    assert (d.worker_id, d.cold, d.evict) == ("free", True, ())


def test_evicts_idle_models_least_recently_used_first() -> None:
    full = worker("w", models=("m", "a", "b"), mem_gb=10,
                  resident=[("a", 4, 100.0), ("b", 4, 50.0)])
    d = ResidentFirst().place(ModelNeeds("m", 5 * GB), [full])
    assert (d.worker_id, d.evict) == ("w", ("b",))


def test_busy_models_are_never_evicted() -> None:
    w = WorkerInfo("w", frozenset({"m", "a"}), 4, 1, (Resident("a", 8 * GB, 0.0, in_flight=1),), 10 * GB, "A100", 1)
    d = ResidentFirst().place(ModelNeeds("m", 5 * GB), [w])
    assert d.worker_id is None


def test_hardware_constraints_are_respected() -> None:
    workers = [worker("cpu", gpu=""), worker("small", mem_gb=24), worker("h100", gpu="H100", mem_gb=80)]
    needs = ModelNeeds("m", 30 * GB, min_device_memory_bytes=40 * GB, gpu_required=True, gpu_classes=("H100",))
    assert ResidentFirst().place(needs, workers).worker_id == "h100"
    assert ResidentFirst().place(ModelNeeds("m", GB, gpu_required=True), [worker("cpu", gpu="")]).worker_id is None


def test_zone_is_preferred_when_possible() -> None:
    workers = [worker("a", zone="eu"), worker("b", zone="us")]
    assert ResidentFirst().place(ModelNeeds("m", GB, zone="us"), workers).worker_id == "b"
    assert ResidentFirst().place(ModelNeeds("m", GB, zone="ap"), workers).worker_id in ("a", "b")


def test_draining_and_non_serving_workers_are_ignored_and_nothing_fits_means_queue() -> None:
    workers = [worker("d", draining=True), worker("x", models=("other",))]
    d = ResidentFirst().place(ModelNeeds("m", GB), workers)
    assert d.worker_id is None and d.reason


def test_baselines_spread_requests() -> None:
    workers = [worker("a"), worker("b")]
    rr = RoundRobin()
    assert [rr.place(ModelNeeds("m"), workers).worker_id for _ in range(4)] == ["a", "b", "a", "b"]
    assert RandomChoice(random.Random(1)).place(ModelNeeds("m"), workers).worker_id in ("a", "b")
