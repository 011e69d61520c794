#!/usr/bin/env bash
# make demo: ccflow doing its main job on this machine, in about two minutes.
#
# Builds ccflow, creates an epoch key, starts `ccflow run` (collector, privacy,
# detector, Parquet sink in one process) on free loopback ports, and drives it
# with `ccflow simulate` (a synthetic ISP with 3 botnets, exported as NetFlow
# v9 and IPFIX by two routers) at DEMO_SPEED event seconds per wall second for
# DEMO_SECONDS of wall time. Then it stops ccflow with SIGTERM (drain,
# checkpoint, flush) and prints the candidates, their evaluation against the
# simulator's truth, where the Parquet files are and a query that reads them.
#
# The last line is the eval summary `recall=R false_candidates=N`. Exit status
# 0 means the demo worked: every C&C server of the truth was found and no
# benign service (the simulator's --benign list: NTP, update, DNS servers)
# became a candidate. See docs/demo.md.
#
# Environment (all optional):
#   DEMO_SECONDS      wall seconds of traffic (default 120)
#   DEMO_SPEED        event seconds per wall second (default 120: 4 h of traffic)
#   DEMO_DIR          working directory: keys, state, Parquet, candidates, logs
#                     (default ccflow-data/demo; emptied first if it is a demo dir)
#   DEMO_SUBSCRIBERS  simulated subscribers (default 1000)
#   DEMO_WINDOW       detection window, event time (default 1h)
#   DEMO_HOP          evaluation hop, event time (default 15m)
#   DEMO_PROGRESS     seconds between progress lines (default 10)
#   DEMO_BIN        where to build the binary (default bin/ccflow)
#   GO                the go command (default go)
set -euo pipefail
cd "$(dirname "$0")/.."

wall=${DEMO_SECONDS:-120}
speed=${DEMO_SPEED:-120}
dir=${DEMO_DIR:-ccflow-data/demo}
subs=${DEMO_SUBSCRIBERS:-1000}
window=${DEMO_WINDOW:-1h}
hop=${DEMO_HOP:-15m}
every=${DEMO_PROGRESS:-10}
bin=${DEMO_BIN:-bin/ccflow}
prefixes=100.64.0.0/10,2001:db8::/32 # the simulator's default subscriber prefixes

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is needed (see README, Set-up)"
[[ $wall =~ ^[0-9]+$ && $wall -gt 0 ]] || die "DEMO_SECONDS=$wall: want a positive whole number"
[[ $speed =~ ^[0-9]+$ && $speed -gt 0 ]] || die "DEMO_SPEED=$speed: want a positive whole number"
event=$((wall * speed)) # event seconds of traffic

# Small helpers in Python (standard library only): free ports, /metrics,
# the candidate table and the verdict.
read -r -d '' PY <<'EOF' || true
import csv, json, socket, sys, urllib.request

def ports():
    # Two free UDP ports (NetFlow, IPFIX) and a free TCP port (metrics).
    out, keep = [], []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        keep.append(s)
        out.append(str(s.getsockname()[1]))
    print(" ".join(out))

def scrape(addr):
    # Sums of the metrics the demo shows, as NAME=VALUE words for bash.
    want = {
        "ccflow_collector_datagrams_total": "datagrams",
        "ccflow_collector_flows_total": "flows",
        "ccflow_collector_socket_drops_total": "drops",
        "ccflow_collector_decode_errors_total": "decode_errors",
        "ccflow_analysis_flows_total": "detected",
        "ccflow_detect_windows_total": "windows",
        "ccflow_bus_inproc_queued_batches": "queued",
        "ccflow_detect_evaluation_duration_seconds_sum": "eval_ms",
        "ccflow_detect_evaluation_duration_seconds_count": "evals",
    }
    got = {v: 0.0 for v in want.values()}
    try:
        body = urllib.request.urlopen("http://%s/metrics" % addr, timeout=5).read().decode()
    except Exception:
        print("scrape=failed")
        return
    for line in body.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in want:
            got[want[name]] += float(line.rsplit(" ", 1)[1])
    got["eval_ms"] = 1000 * got["eval_ms"] / max(1, got["evals"])  # mean per evaluation
    print(" ".join("%s=%d" % kv for kv in got.items()))

def ready(addr):
    try:
        urllib.request.urlopen("http://%s/readyz" % addr, timeout=2)
    except Exception:
        sys.exit(1)

def endpoints(path):
    # Reported candidates, one per endpoint (its best window), best first.
    best = {}
    try:
        f = open(path)
    except FileNotFoundError:
        return []
    with f:
        for line in f:
            if not line.strip():
                continue
            c = json.loads(line)
            if c.get("suppressed"):
                continue
            k = (c["remote_addr"], c["remote_port"], c["proto"])
            if k not in best or c["score"] > best[k]["score"]:
                best[k] = c
    return sorted(best.values(), key=lambda c: (-c["score"], c["remote_addr"]))

def count(path):
    print(len(endpoints(path)))

def listed(path, addr_col):
    with open(path) as f:
        return {(r[addr_col], r["dport"], r["proto"]): r for r in csv.DictReader(f)}

def key(c):
    return (c["remote_addr"].removeprefix("::ffff:"), str(c["remote_port"]), c["proto"])

def table(cands, truth, benign, top):
    truth, benign = listed(truth, "c2_dst"), listed(benign, "dst")
    cs = endpoints(cands)
    print("%d candidate endpoints (best window of each); the top %d:" % (len(cs), min(top, len(cs))))
    fmt = "%-4s %-16s %5s %-5s %6s %8s %11s  %s"
    print(fmt % ("rank", "address", "port", "proto", "score", "period", "subscribers", "truth"))
    for i, c in enumerate(cs[:top], 1):
        k = key(c)
        label = "C&C" if k in truth else ("BENIGN" if k in benign else "-")
        print(fmt % (i, k[0], k[1], k[2], "%.3f" % c["score"], "%.0fs" % c["period_s"],
                     c["subscribers"], label))
        print("     " + c["explanation"])

def verdict(evaljson, benign):
    # The summary line, and whether the demo worked.
    rep = json.load(open(evaljson))
    benign = listed(benign, "dst")
    bad = [c for c in rep["false_candidates"] if key(c) in benign]
    for c in bad:
        print("demo: FAIL: benign service %s:%s/%s (%s) is a candidate, score %.3f"
              % (key(c) + (benign[key(c)]["kind"], c["score"])))
    if rep["found"] < rep["total"]:
        print("demo: FAIL: found %d of %d C&C servers" % (rep["found"], rep["total"]))
    print("recall=%.2f false_candidates=%d" % (rep["recall"], len(rep["false_candidates"])))
    sys.exit(0 if rep["total"] > 0 and rep["found"] == rep["total"] and not bad else 1)

cmd, args = sys.argv[1], sys.argv[2:]
{"ports": ports, "scrape": scrape, "ready": ready, "count": count,
 "table": lambda *a: table(a[0], a[1], a[2], int(a[3])), "verdict": verdict}[cmd](*args)
EOF
py() { python3 -c "$PY" "$@"; }

# --- build, directories, key -------------------------------------------------
say "building $bin"
"${GO:-go}" build -o "$bin" ./cmd/ccflow

if [[ -e $dir ]]; then
  [[ -e $dir/.ccflow-demo ]] || [[ -z $(ls -A "$dir") ]] ||
    die "$dir exists and is not a demo directory; set DEMO_DIR to a new or empty directory"
  rm -rf "$dir"
fi
mkdir -p "$dir"
touch "$dir/.ccflow-demo"
dir=$(cd "$dir" && pwd)
keys=$dir/keys parquet=$dir/parquet cands=$dir/candidates.jsonl
truth=$dir/truth.csv benign=$dir/benign.csv runlog=$dir/ccflow-run.log

# Event time runs from now-event to now; create the keys of the epochs it
# covers (ccflow run would also create a missing one on first use).
from=$(date -u -d "@$(($(date +%s) - event))" +%Y-%m-%dT%H:%M:%SZ)
"$bin" keygen --dir "$keys" --from "$from" | sed 's/^/demo: keygen: /'

read -r nfport ipfixport mport < <(py ports)
maddr=127.0.0.1:$mport

# --- start ccflow run ---------------------------------------------------------
say "starting ccflow run: NetFlow 127.0.0.1:$nfport, IPFIX 127.0.0.1:$ipfixport, metrics http://$maddr/metrics, log $runlog"
"$bin" run --subscribers "$prefixes" --keys "$keys" --state-dir "$dir/state" \
  --parquet-dir "$parquet" --candidates "$cands" \
  --netflow-addr "127.0.0.1:$nfport" --ipfix-addr "127.0.0.1:$ipfixport" --sflow-addr "" \
  --metrics-addr "$maddr" --window "$window" --hop "$hop" >"$runlog" 2>&1 &
runpid=$!
simpid=
cleanup() {
  [[ -n $simpid ]] && kill "$simpid" 2>/dev/null || true
  [[ -n $runpid ]] && kill "$runpid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq 150); do
  py ready "$maddr" && break
  kill -0 "$runpid" 2>/dev/null || { tail -20 "$runlog" >&2; die "ccflow run exited at start (log above)"; }
  sleep 0.2
done
py ready "$maddr" || die "ccflow run is not ready after 30 s (see $runlog)"

# --- simulate -----------------------------------------------------------------
say "simulating $subs subscribers for ${wall}s at ${speed}x: $((event / 3600))h$((event % 3600 / 60))m of event time, window $window, hop $hop"
"$bin" simulate --netflow-addr "127.0.0.1:$nfport" --ipfix-addr "127.0.0.1:$ipfixport" \
  --subscribers "$subs" --subscriber-prefixes "$prefixes" \
  --truth "$truth" --benign "$benign" --summary "$dir/simulate.json" \
  --speed "$speed" --duration "${event}s" --start="-${event}s" \
  --wall-duration "$((wall * 2 + 30))s" --progress "${every}s" > >(sed -u 's/^/demo: /') 2>&1 &
simpid=$!

progress() {
  local m
  m=$(py scrape "$maddr")
  local datagrams=0 flows=0 drops=0 decode_errors=0 detected=0 windows=0 queued=0 eval_ms=0 evals=0 scrape=ok
  eval "$m"
  [[ $scrape == ok ]] || { say "ccflow: /metrics did not answer"; return; }
  say "ccflow: collected $flows flows in $datagrams datagrams ($drops socket drops, $decode_errors decode errors) | detector: $detected flows, $windows windows (${eval_ms} ms each) | candidates so far: $(py count "$cands")"
}
start=$(date +%s)
next=$((start + every))
while kill -0 "$simpid" 2>/dev/null; do
  kill -0 "$runpid" 2>/dev/null || die "ccflow run exited while the simulator was running (see $runlog)"
  if (($(date +%s) >= next)); then
    progress
    next=$((next + every))
  fi
  sleep 1
done
wait "$simpid" || die "the simulator failed"
simpid=

# Wait until the collector has read every datagram sent (or 20 s), then stop.
sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["datagrams"])' "$dir/simulate.json")
for _ in $(seq 40); do
  eval "$(py scrape "$maddr")"
  ((${datagrams:-0} >= sent)) && break
  sleep 0.5
done
progress
say "simulator sent $sent datagrams; ccflow received ${datagrams:-?} and counted ${drops:-?} kernel socket drops"

say "stopping ccflow run (SIGTERM: close listeners, drain the bus, checkpoint the detector, flush the sinks)"
kill -TERM "$runpid"
rc=0
wait "$runpid" || rc=$?
runpid=
if ((rc != 0)); then
  tail -20 "$runlog" >&2
  die "ccflow run exited with status $rc (log above)"
fi
grep -E 'msg="(stopping|final checkpoint written)' "$runlog" | sed 's/^/demo: ccflow: /' || true

# --- results ------------------------------------------------------------------
[[ -e $cands ]] || : >"$cands" # no candidate at all: evaluate that (recall 0)
echo
echo "== Candidates ($cands)"
py table "$cands" "$truth" "$benign" 10
echo
echo "== Evaluation against the simulator's truth ($truth)"
"$bin" eval --truth "$truth" --candidates "$cands"
"$bin" eval --truth "$truth" --candidates "$cands" --json >"$dir/eval.json"
echo
echo "== Parquet files (pseudonymized flows, pair scores, candidates) under $parquet"
(cd "$parquet" && find . -name '*.parquet' | sort | sed 's|^\./|  |')
top=$(py table "$cands" "$truth" "$benign" 1 | awk 'NR == 3 && $1 == 1 { print $2, $3 }')
if [[ -n $top ]]; then
  read -r taddr tport <<<"$top"
  cat >"$dir/query.sql" <<EOF
-- Who calls the top candidate $taddr:$tport, and when: one row per subscriber
-- pseudonym (no subscriber address is stored anywhere).
SELECT hex(sub) AS subscriber_pseudonym, count() AS flows,
       min(time_start) AS first_flow, max(time_start) AS last_flow
FROM file('$parquet/flows/date=*/*.parquet', Parquet,
          'sub FixedString(16), remote_addr IPv6, remote_port UInt16, time_start DateTime64(3, \'UTC\')')
WHERE remote_addr = toIPv6('$taddr') AND remote_port = $tport
GROUP BY sub ORDER BY flows DESC
EOF
  echo
  echo "== One query over them ($dir/query.sql), with chDB (ClickHouse in Python):"
  echo "   python3 -c \"import chdb; print(chdb.query(open('$dir/query.sql').read(), 'PrettyCompact'))\""
  sed 's/^/   /' "$dir/query.sql"
  if python3 -c 'import chdb' 2>/dev/null; then
    python3 -c "import chdb, sys; print(chdb.query(open(sys.argv[1]).read(), 'PrettyCompact'), end='')" "$dir/query.sql" ||
      die "the query failed"
  else
    echo "   (chdb is not installed: pip install chdb; pyarrow.parquet.read_table('$parquet/flows') reads the files too)"
  fi
fi
echo
py verdict "$dir/eval.json" "$benign"
