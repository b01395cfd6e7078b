"""Live collections: publish -> searchable latency of a document published on a vector store's NATS
subject (issue 16's target: within one second), beside the same document attached through the
HTTP API (upload to /v1/files, attach, poll until completed) in the same run.

    python -m bench.collections [--docs 20]

A document counts as searchable when its vector_store_files row is completed: search reads only
completed files, and the row commits in the same transaction as its chunks. Polling Postgres, not
the search endpoint, keeps the measurement from loading the embedding model it measures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats

from bench.mesh import bench_mesh

TARGET_S = 1.0
EMBEDDINGS = "sentence-transformers/all-MiniLM-L6-v2"


async def _completed(conn: asyncpg.Connection, store_id: str, file_id: str, start: float,
                     timeout_s: float = 30.0) -> float:
    while True:
        status = await conn.fetchval("SELECT status FROM vector_store_files WHERE vector_store_id=$1 AND file_id=$2",
                                     store_id, file_id)
        elapsed = time.perf_counter() - start
        if status == "completed":
            return elapsed
        if status == "failed" or elapsed > timeout_s:
            raise RuntimeError(f"{file_id}: {status or 'missing'} after {elapsed:.1f} s")
        await asyncio.sleep(0.002)


async def measure(docs: int = 20) -> dict[str, Any]:
    """Median and worst publish->searchable seconds over `docs` documents, and the HTTP attach path's."""
    with tempfile.TemporaryDirectory(prefix="gm-bench-coll-") as tmp:
        async with bench_mesh(Path(tmp), ["router", "billing", "llm", "edge"]) as mesh:
            headers = {"authorization": f"Bearer {mesh.api_key}"}
            async with httpx.AsyncClient(base_url=mesh.edge_url, headers=headers, timeout=300) as http:
                # Load the embedding model before timing anything.
                (await http.post("/v1/embeddings", json={"model": EMBEDDINGS, "input": "warm"})).raise_for_status()
                store = (await http.post("/v1/vector_stores", json={"name": "bench",
                                                                    "follow_subject": True})).json()
                nc = await nats.connect(mesh.nats_url)
                conn = await asyncpg.connect(mesh.database_url)
                live, attach = [], []
                try:
                    for i in range(docs):
                        text = f"Bulletin {i}: the harbour crane number {i} was repaired on shift {i % 3}."
                        start = time.perf_counter()
                        await nc.publish(store["subject"], json.dumps({"id": f"doc-{i}", "text": text}).encode())
                        await nc.flush()
                        live.append(await _completed(conn, store["id"], f"doc-{i}", start))
                        start = time.perf_counter()
                        up = await http.post("/v1/files", files={"file": (f"doc-{i}.txt", text.encode(), "text/plain")},
                                             data={"purpose": "assistants"})
                        file_id = up.json()["id"]
                        await http.post(f"/v1/vector_stores/{store['id']}/files", json={"file_id": file_id})
                        attach.append(await _completed(conn, store["id"], file_id, start))
                finally:
                    await nc.close()
                    await conn.close()
    return {"docs": docs, "target_s": TARGET_S,
            "live_p50_s": statistics.median(live), "live_max_s": max(live),
            "http_attach_p50_s": statistics.median(attach), "http_attach_max_s": max(attach),
            "live_vs_http_attach": statistics.median(live) / statistics.median(attach)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.docs)), indent=2))


if __name__ == "__main__":
    main()
