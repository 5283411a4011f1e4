#!/usr/bin/env bash
# The HTTP figures of the performance issue, measured in one run against their references, and
# printed as ratios (this machine is shared and noisy: ratios travel, absolute figures do not).
#
#   bash scripts/bench-http.sh [DURATION_SECONDS]
#
# Builds the release `hub` and the no-op axum server (examples/noop_server.rs), starts both on
# loopback with a throwaway data folder, and measures with wrk (Debian package `wrk`):
#   - GET /api/tasks/{id}/status and GET /health, against the no-op handler (wrk -t2 -c32);
#   - POST /api/orchestration/{id}/start → 202, one fresh empty-stack project per request,
#     sequential (1 connection) and at 32 connections: latency percentiles;
#   - queue drain: a third of the projects started over 32 connections at once, the rate from the
#     first one queued to the last one finished (the tasks' own timestamps);
#   - GET /api/projects with BENCH_PROJECTS projects (2,800 by default) and a page of 50;
#     the PSS of `hub serve` at the end;
#   - then, with the hub stopped, the two figures of the issue's table measured in process by
#     the criterion benches: 10,000 no-op jobs with 2 workers (`cargo bench --bench tasks`,
#     criterion's median) and the 4-service test stack's start against the `docker run` script,
#     with the engine's own floor for that stack beside them (`cargo bench --bench stack`,
#     medians of 7 rounds each, taken in turns). BENCH_HTTP_ONLY=1 skips them.
# Run by hand, not by CI. Empty stacks start without touching the engine, but the hub refuses
# starts while an engine is down, and the stack bench runs one: a running engine and the test
# images are expected (scripts/docker-up.sh sets up both).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$PWD/target}

cargo build --release --quiet -p hub-http --bin hub
cargo build --release --quiet --example noop_server
http_only=${BENCH_HTTP_ONLY:-0}
if [ "$http_only" != 1 ]; then
    cargo bench --quiet --bench tasks --bench stack --no-run
fi
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
noop_port=$(free_port)
hub_port=$(free_port)
"$target/release/examples/noop_server" "127.0.0.1:$noop_port" &
noop_pid=$!
mkdir -p "$work/projects"
HUB_LOG=warn "$target/release/hub" serve --bind "127.0.0.1:$hub_port" --data-dir "$work/state" \
    --project-root "$work/projects" --result-expires 0 >"$work/hub.log" 2>&1 &
hub_pid=$!
trap 'kill $noop_pid $hub_pid 2>/dev/null || true; rm -rf "$work"' EXIT
hub="http://127.0.0.1:$hub_port"
for _ in $(seq 1 100); do curl -sf "$hub/health" >/dev/null && break; sleep 0.1; done

# Projects with empty stacks: a start costs the hub's own path only.
# The default layout's roles overlap after ~500 slots (frontend 3000+10k meets backend 8000+10j),
# so about 3,000 projects fit.
projects=${BENCH_PROJECTS:-2800}
python3 - "$hub" "$work/projects" "$projects" <<'PY'
import json, os, sys, urllib.error, urllib.request
hub, root, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    folder = os.path.join(root, f"p{i}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "hub.toml"), "w") as f:
        f.write("# no services\n")
    body = json.dumps({"name": f"p{i}", "path": folder}).encode()
    req = urllib.request.Request(hub + "/api/projects", body, {"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req).read()
    except urllib.error.HTTPError as err:
        sys.exit(f"registering project {i}: {err.code} {err.read().decode()}")
PY
task=$(curl -sf -X POST "$hub/api/orchestration/1/start" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
sleep 1

rps() { wrk -t2 -c32 -d"${duration}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
echo "== throughput (wrk -t2 -c32, ${duration}s each)"
noop=$(rps "http://127.0.0.1:$noop_port/")
status=$(rps "$hub/api/tasks/$task/status")
health=$(rps "$hub/health")

# One POST per project, ids 2.. (1 was started above); each wrk thread stops at the end of its
# share (wrk's req/s would then count the idle rest of the duration: only latencies are kept).
cat >"$work/start.lua" <<'LUA'
local counter = 1
local threads = {}
function setup(thread)
  thread:set("first", #threads)
  table.insert(threads, thread)
end
function init(args)
  -- Thread t of `step` threads posts first+1+t, first+1+t+step, ... up to `last`.
  step = tonumber(args[1])
  id = tonumber(args[2]) + first + 1 - step
  last = tonumber(args[3])
end
request = function()
  id = id + step
  return wrk.format("POST", "/api/orchestration/" .. id .. "/start")
end
response = function()
  -- Every project once: stop before running out of fresh ones.
  if id + step > last then wrk.thread:stop() end
end
LUA
echo "== POST /start → 202, one fresh project each"
# A third of the projects each: sequential latency, latency at 32 connections, then the drain.
third=$((projects / 3))
latency() { # connections, seconds, first project id - 1, last project id
    wrk -t"$1" -c"$1" -d"$2s" --latency -s "$work/start.lua" "$hub" -- "$1" "$3" "$4" \
        | awk '/ 50%/ {p50=$2} / 99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {printf "p50 %s p99 %s (non-2xx %s)\n", p50, p99, bad+0}'
}
sequential=$(latency 1 2 1 "$third")
concurrent=$(latency 32 2 "$third" $((2 * third)))
# Wait until those have run, so the drain starts from an empty queue.
python3 - "$hub" <<'PY'
import json, sys, time, urllib.request
while True:
    with urllib.request.urlopen(sys.argv[1] + "/api/tasks?state=PENDING,STARTED,BUILDING,RUNNING&limit=1") as r:
        if not json.load(r):
            break
    time.sleep(0.05)
PY
# The drain: the last third submitted over 32 connections at once by wrk, a client cheap enough
# that the hub's two workers, not the client, set the pace (32 Python threads could submit only
# about as fast as the workers run); the rate is the tasks over the time from the first one
# queued to the last one finished, read from their own records.
wrk -t32 -c32 -d10s -s "$work/start.lua" "$hub" -- 32 $((2 * third)) "$projects" >/dev/null
python3 - "$hub" $((2 * third + 1)) "$projects" <<'PY' >"$work/drain"
import json, sys, time, urllib.request
from datetime import datetime
hub, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
while True:
    with urllib.request.urlopen(hub + "/api/tasks?state=PENDING,STARTED,BUILDING,RUNNING&limit=1") as r:
        if not json.load(r):
            break
    time.sleep(0.05)
# The drain's tasks are the newest, one per project of its range.
tasks, offset = [], 0
while True:
    with urllib.request.urlopen(f"{hub}/api/tasks?limit=1000&offset={offset}") as r:
        page = json.load(r)
    offset += len(page)
    mine = [t for t in page if first <= (t.get("project_id") or 0) <= last]
    tasks.extend(mine)
    if len(mine) < len(page) or not page:
        break
def at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
queued = [at(t["queued_at"]) for t in tasks]
finished = [at(t["finished_at"]) for t in tasks]
ok = sum(t["state"] == "SUCCESS" for t in tasks)
span = max(finished) - min(queued)
print(f"{len(tasks) / span:.0f} tasks/s: {ok} of {len(tasks)} SUCCESS in {span:.2f} s, "
      f"queued in {max(queued) - min(queued):.2f} s")
PY

list_ms() { python3 - "$hub" "$1" <<'PY'
import sys, time, urllib.request
hub, path = sys.argv[1], sys.argv[2]
samples = []
for _ in range(30):
    t = time.perf_counter()
    body = urllib.request.urlopen(hub + path).read()
    samples.append((time.perf_counter() - t) * 1000)
samples.sort()
print(f"{samples[len(samples)//2]:.2f} ms p50, {len(body) // 1024} KB")
PY
}
whole=$(list_ms /api/projects)
page=$(list_ms "/api/projects?limit=50&offset=$((projects / 2))")
pss=$(awk '/^Pss:/ {print $2}' "/proc/$hub_pid/smaps_rollup")
kill "$hub_pid" "$noop_pid" 2>/dev/null || true
wait "$hub_pid" "$noop_pid" 2>/dev/null || true

# The in-process figures, each bench's own lines kept for the record.
engine="not measured (BENCH_HTTP_ONLY=1)"
stack="not measured (BENCH_HTTP_ONLY=1)"
if [ "$http_only" != 1 ]; then
    echo "== cargo bench --bench tasks -- 10k_noop"
    cargo bench --quiet --bench tasks -- 10k_noop --noplot 2>&1 | tee "$work/tasks.out" \
        | grep -E 'thrpt:|jobs/s' || true
    # criterion's line: thrpt:  [low unit median unit high unit]
    engine=$(awk '/thrpt:/ {print $4, $5; exit}' "$work/tasks.out")
    [ -n "$engine" ] || tail -20 "$work/tasks.out" >&2
    echo "== cargo bench --bench stack"
    cargo bench --quiet --bench stack 2>&1 | tee "$work/stack.out" | grep -E 'median' || true
    hub_stack=$(sed -n 's/.*all healthy: median \([^ ]*\) .*/\1/p' "$work/stack.out")
    script_stack=$(sed -n 's/.*docker run script: median \([^ ]*\) .*/\1/p' "$work/stack.out")
    floor_stack=$(sed -n 's/.*engine floor, no hub: median \([^ ]*\) .*/\1/p' "$work/stack.out")
    stack="${hub_stack:-?} ${script_stack:-?} ${floor_stack:-?}"
    [ -n "$hub_stack" ] && [ -n "$script_stack" ] && [ -n "$floor_stack" ] \
        || tail -20 "$work/stack.out" >&2
fi

# Every figure beside its goal (issue "Performance to the machine's limit"), as a ratio to it.
python3 - "$noop" "$status" "$health" "$sequential" "$concurrent" "$(cat "$work/drain")" \
    "$whole" "$page" "$pss" "$projects" "$engine" "$stack" <<'PY'
import re, sys
noop, status, health = map(float, sys.argv[1:4])
sequential, concurrent, drain, whole, page, pss_kb, projects, engine, stack = sys.argv[4:13]

def seconds(text):
    """A Rust `Duration` as `{:?}` prints it (`1.23s`, `987.6ms`), in seconds."""
    value, unit = re.fullmatch(r"([\d.]+)(ns|µs|us|ms|s)", text).groups()
    return float(value) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]

def skipped(figure):
    return figure.startswith("not measured")

def engine_row():
    found = re.fullmatch(r"([\d.]+) (K|M)?elem/s", engine)
    if not found:
        return ("in-process no-op jobs, 2 workers", engine or "no criterion figure",
                ">= 20,000 jobs/s", "", None if skipped(engine) else False)
    rate = float(found.group(1)) * {"K": 1e3, "M": 1e6, None: 1.0}[found.group(2)]
    return ("in-process no-op jobs, 2 workers", f"{rate:,.0f} jobs/s (criterion median)",
            ">= 20,000 jobs/s", f"{rate / 20000:.0%} of the goal", rate >= 20000)

def stack_row():
    """The hub against the script, with the engine's own floor (no hub code) beside it: no
    orchestrator brings the stack up faster than the floor on this engine."""
    try:
        hub, script, floor = map(seconds, stack.split())
    except (AttributeError, ValueError):
        return ("4-service test stack start", stack, "<= 0.7x docker run", "",
                None if skipped(stack) else False)
    return ("4-service test stack start",
            f"hub {hub:.2f} s, docker run script {script:.2f} s, engine floor {floor:.2f} s (medians)",
            "<= 0.7x docker run",
            f"{hub / script:.2f}x the script (floor {floor / script:.2f}x)", hub / script <= 0.7)

def p99_ms(latency):
    """The p99 of a `p50 … p99 …` line from wrk, in milliseconds."""
    value, unit = re.search(r"p99 ([\d.]+)(us|ms|s)\b", latency).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

seq99, con99 = p99_ms(sequential), p99_ms(concurrent)
rate = float(re.search(r"(\d+) tasks/s", drain).group(1))
page_ms = float(page.split()[0])
pss_mb = int(pss_kb) / 1024
rows = [
    # figure, measured, goal, ratio to the goal, met (None: no goal)
    ("no-op axum handler (reference)", f"{noop:,.0f} req/s", "", "", None),
    ("GET /api/tasks/{id}/status", f"{status:,.0f} req/s", ">= 50 % of the no-op",
     f"{status / noop:.0%} of the no-op", status / noop >= 0.5),
    ("GET /health", f"{health:,.0f} req/s", ">= 50 % of the no-op",
     f"{health / noop:.0%} of the no-op", health / noop >= 0.5),
    ("POST /start -> 202, sequential", sequential, "p99 < 1 ms",
     f"p99 {seq99:.2f}x the goal", seq99 < 1.0),
    ("POST /start -> 202, 32 connections", concurrent, "p99 < 5 ms",
     f"p99 {con99 / 5:.2f}x the goal", con99 < 5.0),
    ("queue drain (empty stacks, 2 workers)", drain, ">= 3,000 tasks/s",
     f"{rate / 3000:.0%} of the goal", rate >= 3000),
    (f"GET /api/projects ({projects} projects)", whole, "", "", None),
    ("GET /api/projects?limit=50 (a page)", page, "< 2 ms",
     f"{page_ms / 2:.0%} of the limit", page_ms < 2.0),
    ("PSS of hub serve after the run", f"{pss_mb:.0f} MB", "<= 20 MB",
     f"{pss_mb / 20:.2f}x the goal", pss_mb <= 20),
    engine_row(),
    stack_row(),
]
print()
print(f"{'figure':<40} {'measured':<62} {'goal':<22} {'ratio':<22} met")
for figure, measured, goal, ratio, met in rows:
    mark = "" if met is None else ("yes" if met else "NO")
    print(f"{figure:<40} {measured:<62} {goal:<22} {ratio:<22} {mark}")
PY
