"""The live collections' durable consumer is made by genmesh.bus.ensure_consumer, as the queue's and
billing's are: router replicas starting at once (each calling it) all succeed and share one
consumer with the collection's settings, on a real nats-server."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from genmesh import bus
from genmesh.services.router import collections
from tests.conftest import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_replicas_starting_at_once_share_one_consumer_with_the_collections_settings(infra: Infra) -> None:
    # A stream of this test's own (the session's meshes may use COLLECTIONS on the same server).
    stream, prefix = f"COLLECTIONS_{uuid.uuid4().hex[:8].upper()}", f"test{uuid.uuid4().hex[:8]}."
    replicas = [await bus.connect(infra.nats_url, f"router-{i}") for i in range(4)]
    js = replicas[0].jetstream()
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[prefix + ">"], retention=RetentionPolicy.WORK_QUEUE,
                                         storage=StorageType.MEMORY))
        made = await asyncio.gather(*(bus.ensure_consumer(nc.jetstream(), stream, collections.CONSUMER, prefix + ">",
                                                          ack_wait=60.0, max_deliver=collections.MAX_DELIVER)
                                      for nc in replicas), return_exceptions=True)
        assert made == [None] * len(replicas)
        [name] = [c.name for c in await js.consumers_info(stream)]
        config = (await js.consumer_info(stream, name)).config
        assert (name, config.filter_subject, config.ack_wait, config.max_deliver) == (
            collections.CONSUMER, prefix + ">", 60.0, collections.MAX_DELIVER)
    finally:
        await js.delete_stream(stream)
        for nc in replicas:
            await nc.close()
