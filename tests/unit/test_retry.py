"""The one backoff of the mesh's retrying loops."""
from __future__ import annotations

import pytest

from genmesh.retry import Backoff, retry


def test_delays_double_up_to_the_cap_and_start_again_after_a_success() -> None:
    backoff = Backoff(0.1, maximum=0.5)
    assert [backoff.next_delay() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


async def test_retry_calls_again_after_listed_errors_and_raises_the_last() -> None:
    calls: list[int] = []
    retried: list[float] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("not yet")
        return "up"

    result = await retry(flaky, attempts=5, backoff=Backoff(0.001), retry_on=(OSError,),
                         on_retry=lambda _exc, delay: retried.append(delay))
    assert (result, len(calls)) == ("up", 3)
    assert retried == pytest.approx([0.001, 0.002])

    async def down() -> None:
        calls.append(1)
        raise OSError("down")

    calls.clear()
    with pytest.raises(OSError, match="down"):
        await retry(down, attempts=3, backoff=Backoff(0.001), retry_on=(OSError,))
    assert len(calls) == 3

    async def broken() -> None:
        calls.append(1)
        raise ValueError("not retried")

    calls.clear()
    with pytest.raises(ValueError):
        await retry(broken, attempts=3, backoff=Backoff(0.001), retry_on=(OSError,))
    assert len(calls) == 1
