"""One quiet gloo device for a process alone in its torch.distributed world.

torch gives each gloo process group its own gloo TCP device, and each device runs an event-loop
thread that wakes every 10 ms (the epoll_wait timeout in gloo's tcp::Loop, there only to notice
shutdown) whether or not anything is sent. vLLM's CPU worker makes fourteen such groups in a
world of one; idle, their loops were the whole of its engine's CPU: 1.7% of a core here, and a
single loop thread alone 1.0% (a timer wake-up is dear on this VM).

Alone in its world a process never makes a gloo connection (a group of one has no peer), so:
  - one device, one loop thread, serves every group: gloo devices are made to be shared between
    contexts, torch just makes a new one per group by default;
  - that thread gets a timer slack (Linux PR_SET_TIMERSLACK, which a thread inherits from the
    thread that starts it), so the kernel may defer its idle timeouts by up to that much: with
    1 s it wakes about once a second. A socket would still wake it at once; only its shutdown
    waits longer.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import sys
from collections.abc import Iterator

import torch.distributed.distributed_c10d as c10d

# What torch's own constructor gives a group with one device: two worker threads (they wait on a
# condition variable, costing nothing idle).
GLOO_THREADS = 2
PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30


@contextlib.contextmanager
def timer_slack(seconds: float) -> Iterator[None]:
    """Within, this thread's timer slack is `seconds` (threads it starts keep it); 0, or off
    Linux: unchanged."""
    if seconds <= 0 or not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(int(seconds * 1e9)), 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(before), 0, 0, 0)


@contextlib.contextmanager
def one_gloo_device(loop_slack_s: float = 0.0) -> Iterator[None]:
    """Within, every gloo process group torch makes in this process shares one gloo device,
    whose loop thread has `loop_slack_s` of timer slack. Only for a process alone in its world."""
    real = c10d.ProcessGroupGloo
    with timer_slack(loop_slack_s):
        device = real.create_default_device()  # starts the loop thread, which keeps the slack

    class SharedDeviceGloo(real):  # type: ignore[misc, valid-type]
        # torch calls ProcessGroupGloo(store, rank, size, timeout=...) for each new gloo group;
        # a subclass (not a factory) keeps its isinstance checks true.
        def __init__(self, store: c10d.Store, rank: int, size: int,
                     timeout: dt.timedelta = c10d.default_pg_timeout) -> None:
            options = real._Options()
            options._devices = [device]
            options._timeout = timeout
            options._threads = GLOO_THREADS
            super().__init__(store, rank, size, options)

    c10d.ProcessGroupGloo = SharedDeviceGloo
    try:
        yield
    finally:
        c10d.ProcessGroupGloo = real
