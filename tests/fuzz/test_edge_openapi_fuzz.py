"""Schemathesis against the edge's own OpenAPI document (`/openapi.json` of a running mesh:
router, billing, echo worker, edge): generated requests, valid and invalid, never get a 5xx and
never hang (each call has a 10 s timeout; a timeout is a failure).

The OpenAI inference routes (chat, completions, embeddings, images, audio) are left out: they need
model workers this mesh does not run, and with none the router waits its 30 s for one to appear
and then answers 503, which is the designed answer rather than a finding. The FAL routes are
fuzzed against the echo model the mesh does run.

Driven by hand rather than through schemathesis' pytest plugin (its lazy fixture loader does not
run under the pytest this project uses); the number of examples is bounded so the whole fuzz
takes well under a minute.
"""
from __future__ import annotations

import os
import time
from collections import Counter

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.conftest import ADMIN_KEY, Mesh

EXAMPLES_PER_OPERATION = 10  # per generation mode (valid, invalid)
REQUEST_TIMEOUT_S = 10.0
# Fixed examples in CI; GENMESH_FUZZ_EXPLORE=1 draws new ones on every run.
DERANDOMIZE = not os.environ.get("GENMESH_FUZZ_EXPLORE")
MODEL_BACKED = r"^/v1/(chat/completions|completions|embeddings|images/|audio/)"


def test_edge_never_answers_5xx_nor_hangs(echo_mesh: Mesh) -> None:
    schema = schemathesis.openapi.from_url(f"{echo_mesh.edge_url}/openapi.json", timeout=10)
    schema = schema.exclude(path_regex=MODEL_BACKED)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    not_generated: list[str] = []
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=DERANDOMIZE, database=None,
                      suppress_health_check=list(HealthCheck))
            def call(case: schemathesis.Case) -> None:
                try:
                    response = case.call(headers=headers, timeout=REQUEST_TIMEOUT_S)
                except requests.Timeout:
                    failures.append(f"{case.operation.label} ({mode.value}): no answer in {REQUEST_TIMEOUT_S:g}s"
                                    f"\n  {case.as_curl_command(headers=headers)}")
                    return
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(f"{case.operation.label} ({mode.value}): HTTP {response.status_code} "
                                    f"{response.text[:200]}\n  {case.as_curl_command(headers=headers)}")

            try:
                call()
            except Exception as exc:  # noqa: BLE001 - e.g. no invalid input exists for this operation
                not_generated.append(f"{operation.label} ({mode.value}): {type(exc).__name__}")
    print(f"\nfuzzed {len(operations)} operations, {sum(statuses.values())} requests in "
          f"{time.monotonic() - started:.0f}s; statuses {dict(sorted(statuses.items()))}; "
          f"{len(not_generated)} operation/mode pairs had nothing to generate")
    assert sum(statuses.values()) > 100, "the fuzz barely ran"
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
