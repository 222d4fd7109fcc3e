"""Fuzz: mutated OTLP requests never get a 5xx or a dropped connection, and good spans
sent after them are stored (``telemetry/otlp_fuzz.py`` makes the requests; the bench
``python -m bench fuzz`` sends 10,000).

A few hundred payloads of each kind, from a fixed seed, against a real receiver on a
loopback port writing a real store.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cliffwatch.telemetry.otlp_fuzz import (
    GOOD_TASK_CLASS,
    JSON,
    KINDS,
    FuzzCase,
    fuzz_cases,
    good_request,
    http_request,
    send_raw,
    to_protobuf,
)
from cliffwatch.telemetry.receiver import OtlpReceiver, ReceiverConfig
from cliffwatch.telemetry.store import open_store
from cliffwatch.telemetry.usage_bounds import UsageRejection

SEED = 20261130
PER_KIND = 200
TOKEN = "fuzz-token"
LIMIT = 2 * 1024 * 1024


@pytest.mark.slow
def test_fuzzed_requests_get_4xx_or_200_and_good_spans_after_them_are_stored(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fuzz.duckdb"
    config = ReceiverConfig(port=0, token=TOKEN, max_body_bytes=LIMIT, body_idle_timeout_s=10)
    with OtlpReceiver(db, config) as rx:

        def send(case: FuzzCase) -> tuple[FuzzCase, int | None]:
            return case, send_raw("127.0.0.1", rx.port, case.request, token=TOKEN)

        cases = list(fuzz_cases(SEED, PER_KIND))
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(send, cases))

        dropped = [f"{c.kind}: {c.label}" for c, status in results if status is None]
        server_errors = [f"{c.kind}: {c.label} -> {s}" for c, s in results if s and s >= 500]
        assert dropped == [] and server_errors == []
        by_kind = Counter(c.kind for c, _ in results)
        assert by_kind == {kind: PER_KIND for kind in KINDS}
        # the corpus reaches every answer it should: stored, malformed, too large, bad type
        statuses = Counter(status for _, status in results)
        assert {200, 400, 413, 415} <= set(statuses), statuses

        # good spans after the fuzz: every one stored, JSON and protobuf alike
        rng = random.Random(SEED + 1)
        good = [good_request(rng, 3) for _ in range(20)]
        for i, request in enumerate(good):
            body = json.dumps(request).encode() if i % 2 else to_protobuf(request)
            content_type = JSON if i % 2 else "application/x-protobuf"
            status = send_raw("127.0.0.1", rx.port, http_request(body, content_type), token=TOKEN)
            assert status == 200
        health_url = f"http://127.0.0.1:{rx.port}/health"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with urllib.request.urlopen(urllib.request.Request(health_url, headers=auth)) as r:
            health = json.loads(r.read())
    assert health["requests_failed"] == 0
    assert health["spans_usage_rejected"] == sum(health["usage_rejected"].values())
    assert set(health["usage_rejected"]) == {str(reason) for reason in UsageRejection}
    assert health["spans_rejected"] > 0  # lone surrogates, bad ids: named, not stored
    with open_store(db, read_only=True) as con:
        stored = con.execute(
            "SELECT count(*), count(DISTINCT trace_id) FROM spans WHERE task_class = ?",
            [GOOD_TASK_CLASS],
        ).fetchall()[0]
        # no absurd value reached a run's figures
        worst = con.execute(
            "SELECT max(cost_usd), max(input_tokens), min(input_tokens), "
            "max(output_tokens) FROM runs"
        ).fetchall()[0]
    assert stored == (60, 20)
    assert worst[0] is None or worst[0] < 10_000 * 10
    assert worst[1] is None or worst[1] <= 10**9 * 10
    assert worst[2] is None or worst[2] >= 0
