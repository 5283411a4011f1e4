"""Celery 5 on the same Redis, for comparison with `cargo bench --bench redis_tasks`.

The same measurements: enqueue latency (p50/p99 over 10,000 `apply_async` calls, one after
another) and 10,000 no-op tasks from enqueue to SUCCESS with 2 prefork workers (a worker
process of concurrency 2, prefetch multiplier 1 as the original hub set it), results in Redis.

    pip install "celery[redis]>=5,<6"
    python benches/celery_noop.py redis://127.0.0.1:6379/15

It starts and stops its own worker; it flushes the Redis database it is given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

# The worker process imports this module: it gets the URL from the environment.
URL = os.environ.get("CELERY_NOOP_URL") or (
    sys.argv[1] if __name__ == "__main__" and len(sys.argv) > 1 else "redis://127.0.0.1:6379/15"
)
JOBS = 10_000
CLIENTS = 8

app = Celery("celery_noop", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_track_started=True,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
)


@app.task(name="noop")
def noop() -> None:
    return None


def percentile(values: list[float], p: float) -> float:
    return values[min(int(len(values) * p), len(values) - 1)]


def main() -> None:
    app.backend.client.flushdb()
    latencies = []
    for _ in range(JOBS):
        start = time.perf_counter()
        noop.apply_async()
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    print(
        f"celery enqueue: p50 {percentile(latencies, 0.5) * 1e3:.3f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1e3:.3f} ms over {JOBS}"
    )
    app.control.purge()
    app.backend.client.flushdb()

    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "--concurrency", "2",
         "--prefetch-multiplier", "1", "--loglevel", "warning", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=here,
        env={**os.environ, "CELERY_NOOP_URL": URL},
    )
    try:
        time.sleep(3)
        for round_ in range(1, 4):
            start = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                results = list(pool.map(lambda _: noop.apply_async(), range(JOBS)))
            for result in results:
                result.get(timeout=600)
            elapsed = time.perf_counter() - start
            print(f"celery {JOBS} no-op tasks, batch {round_}: {elapsed:.2f} s, {JOBS / elapsed:.0f} tasks/s")
    finally:
        worker.terminate()
        worker.wait(timeout=60)


if __name__ == "__main__":
    main()
