#!/usr/bin/env bash
# The cluster in one command: a throwaway PostgreSQL and three procpool-service instances on this
# machine share one queue; a burst of jobs goes in, one instance is killed with SIGKILL while it
# runs jobs, and the survivors find it dead and run its jobs again. Prints what happens and checks
# that every job ended exactly once; exits non-zero, saying why, when something did not go right
# (CI runs it as a test). Everything it starts is stopped and removed on exit.
#
# Usage: scripts/cluster-demo.sh. The binary is $PROCPOOL_SERVICE if set, else the release preset
# is built. Needs curl and the PostgreSQL 15 server (scripts/install-deps.sh). Takes ~10 s.
set -euo pipefail
bin="${PROCPOOL_SERVICE:-}"
case "$bin" in "" | /*) ;; *) bin="$PWD/$bin" ;; esac # relative to where it was started
cd "$(dirname "$0")/.."
# shellcheck source=SCRIPTDIR/lib/throwaway-pg.sh
source scripts/lib/throwaway-pg.sh

readonly instance_count=3 job_count=24
# Short heartbeats so that the demo sees a rescue within seconds (the defaults are 5 s and 30 s).
readonly heartbeat_ms=300 dead_after_ms=2000

t0=$(date +%s%3N)
say() { # message...
  local now
  now=$(date +%s%3N)
  printf '[%3d.%ds] %s\n' $(((now - t0) / 1000)) $(((now - t0) % 1000 / 100)) "$*"
}
fail() { # message...
  printf 'cluster demo: FAILED: %s\n' "$*" >&2
  exit 1
}
sql() { # query: rows as fields separated by |
  psql "$PG_URL" -X -q -At -F '|' -v ON_ERROR_STOP=1 -c "$1"
}
indent() { sed 's/^/           /'; }
alive() { kill -0 "$1" 2>/dev/null; }
running() { # pid: it exists and is not a zombie waiting for its parent (or init) to reap it
  local state=""
  read -r _ _ state _ 2>/dev/null <"/proc/$1/stat" || return 1
  [ "$state" != Z ]
}
descendants() { # pid: its children, grandchildren, ... (one ps: a pgrep per level is slow)
  ps -e -o pid= -o ppid= | awk -v root="$1" '{parent[$1] = $2} END {
    want[root] = 1
    do {
      more = 0
      for (p in parent) if (!(p in want) && (parent[p] in want)) { want[p] = 1; more = 1 }
    } while (more)
    for (p in want) if (p != root) print p
  }'
}
for tool in curl psql ps; do
  command -v "$tool" >/dev/null || fail "$tool is not installed; run scripts/install-deps.sh"
done
if [ -z "$bin" ]; then
  say "building procpool-service (release preset; set PROCPOOL_SERVICE to use another binary)"
  cmake --preset release >/dev/null || fail "cmake --preset release failed"
  cmake --build --preset release --target procpool-service || fail "the build failed"
  bin="$PWD/build/release/apps/service/procpool-service"
fi
[ -x "$bin" ] || fail "no procpool-service binary at $bin"

work="$(mktemp -d /tmp/procpool-cluster-demo.XXXXXX)"
pids=() ids=() ports=() leftovers=()
children_of=() # each instance's zygote and workers, to see them go
finished=0
cleanup() {
  local rc=$? pid i
  set +e
  trap - HUP INT TERM
  trap '' PIPE # a closed stdout must not stop the cleanup
  if [ "$finished" -ne 1 ] && [ "${#ids[@]}" -gt 0 ]; then
    for i in "${!ids[@]}"; do
      [ -s "$work/$i.err" ] || continue
      echo "--- the last lines instance ${ids[$i]} wrote to stderr ---" >&2
      tail -n 20 "$work/$i.err" >&2
    done
  fi
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      read -r -a more <<<"$(descendants "$pid" | tr '\n' ' ')"
      leftovers+=("${more[@]}")
      kill -TERM "$pid" 2>/dev/null
    fi
  done
  for _ in $(seq 50); do # the instances drain for up to --drain-timeout-ms (2 s)
    local up=0
    for pid in "${pids[@]}"; do alive "$pid" && up=1; done
    [ "$up" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
  read -r -a more <<<"${children_of[*]}"
  for pid in "${leftovers[@]}" "${more[@]}"; do # zygotes and workers, only if still ours
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in procpool*) kill -KILL "$pid" 2>/dev/null ;; esac
  done
  wait 2>/dev/null
  pg_down
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'echo "cluster demo: interrupted" >&2; exit 130' INT
trap 'exit 141' PIPE # e.g. piped into head: still clean up
trap 'exit 143' TERM

# --- PostgreSQL and three instances ---------------------------------------------------------------

say "starting a throwaway PostgreSQL 15 (Unix socket only, in a temporary directory)"
pg_up || fail "could not start PostgreSQL"
say "PostgreSQL is up: $PG_URL"

for i in $(seq 0 $((instance_count - 1))); do
  "$bin" --port 0 --db "$PG_URL" --workers 2 --heartbeat-ms "$heartbeat_ms" \
    --dead-after-ms "$dead_after_ms" --default-timeout-ms 0 --drain-timeout-ms 2000 \
    </dev/null >"$work/$i.out" 2>"$work/$i.err" &
  pids[i]=$!
done
for i in "${!pids[@]}"; do
  line=""
  for _ in $(seq 300); do # hang guard: 30 s
    line="$(grep -m1 '^procpool-service: listening on ' "$work/$i.out" || true)"
    [ -n "$line" ] && break
    alive "${pids[$i]}" || break
    sleep 0.1
  done
  if [ -z "$line" ]; then
    cat "$work/$i.out" "$work/$i.err" >&2
    fail "instance $((i + 1)) (pid ${pids[$i]}) did not start listening within 30 s"
  fi
  ports[i]="$(sed -n 's|.* on http://127\.0\.0\.1:\([0-9]*\) .*|\1|p' <<<"$line")"
  ids[i]="$(sed -n 's|.*(instance \([A-Za-z0-9._-]*\),.*|\1|p' <<<"$line")"
  if [ -z "${ports[$i]}" ] || [ -z "${ids[$i]}" ]; then
    fail "cannot read the port and the instance id from: $line"
  fi
done
for i in "${!pids[@]}"; do
  children_of[i]="$(descendants "${pids[$i]}" | sort -n | tr '\n' ' ')"
done
say "started $instance_count instances, 2 workers each, sharing that database:"
printf '           %-22s %-23s %-7s %s\n' instance address pid "its zygote and workers"
for i in "${!ids[@]}"; do
  printf '           %-22s http://127.0.0.1:%-6s %-7s %s\n' "${ids[$i]}" "${ports[$i]}" \
    "${pids[$i]}" "${children_of[$i]}"
done

# --- a burst of jobs ------------------------------------------------------------------------------

# One curl for the whole burst: it keeps a connection to each instance open, so the jobs go in
# much faster than they run, even on a slow machine.
for n in $(seq 1 $job_count); do
  i=$(((n - 1) % instance_count))
  [ "$n" -gt 1 ] && echo next
  cat <<EOF
url = "http://127.0.0.1:${ports[$i]}/jobs"
header = "Content-Type: application/json"
data = "{\"task\": \"sleep\", \"input\": {\"ms\": $((500 + (n * 131) % 401))}}"
output = "$work/post-$n.json"
write-out = "%{http_code} $n ${ids[$i]}\n"
max-time = 10
silent
show-error
EOF
done >"$work/burst.conf"
curl --config "$work/burst.conf" >"$work/burst.codes" || fail "curl could not POST the jobs"
while read -r code n id; do
  [ "$code" = 202 ] || fail "POST /jobs to $id answered $code: $(cat "$work/post-$n.json")"
done <"$work/burst.codes"
[ "$(wc -l <"$work/burst.codes")" -eq $job_count ] || fail "curl did not POST every job"
say "submitted $job_count sleep jobs of 500-900 ms, POSTed to the instances in turn; each is" \
  "claimed from the shared queue by whichever instance has a free worker"

# --- who claimed what -----------------------------------------------------------------------------

snapshot() { # owner|running|running job ids|ended|queued, one row per owner, '-' for none
  sql "SELECT coalesce(owner, '-'), count(*) FILTER (WHERE state = 'running'),
    coalesce(string_agg('#' || id, ' ' ORDER BY id) FILTER (WHERE state = 'running'), '-'),
    count(*) FILTER (WHERE state NOT IN ('queued', 'running')),
    count(*) FILTER (WHERE state = 'queued') FROM jobs GROUP BY owner ORDER BY owner NULLS LAST"
}
deadline=$(($(date +%s%3N) + 15000)) # hang guard
while :; do
  claims="$(snapshot)"
  busy="$(awk -F'|' '$1 != "-" && $2 > 0' <<<"$claims" | wc -l)"
  [ "$busy" -ge "$instance_count" ] && break
  if [ "$(date +%s%3N)" -gt "$deadline" ]; then
    [ "$busy" -ge 1 ] || fail "no instance ran a job in the 15 s after the burst"
    break
  fi
  sleep 0.05
done

# --- kill -9 the busiest instance -----------------------------------------------------------------

# Killed at once, before anything is printed, so that it still runs jobs; which ones it ran when it
# died is read from the database afterwards.
IFS='|' read -r victim _ <<<"$(awk -F'|' '$1 != "-" && $2 > max {max = $2; v = $1 "|" $3}
  END {print v}' <<<"$claims")"
[ -n "$victim" ] || fail "every job had ended before the kill (the burst took longer to submit" \
  "than to run)"
for i in "${!ids[@]}"; do [ "${ids[$i]}" = "$victim" ] && v=$i; done
victim_pid=${pids[$v]}
read -r -a victim_children <<<"${children_of[$v]}"
survivors=()
for i in "${!ids[@]}"; do [ "$i" -ne "$v" ] && survivors+=("$i"); done
{ # without bash's "Killed" notice
  kill -KILL "$victim_pid"
  kill_ms=$(date +%s%3N)
  wait "$victim_pid" || true
} 2>/dev/null
victim_beat="$(sql "SELECT heartbeat_ms FROM instances WHERE id = '$victim'")"

if [ "$busy" -ge "$instance_count" ]; then
  say "every instance runs jobs now; who claimed what (from the jobs table):"
else
  say "note: after 15 s only $busy of the $instance_count instances ran jobs; who claimed what:"
fi
printf '           %-22s %-8s %-20s %s\n' instance running jobs ended
while IFS='|' read -r owner running jobs ended queued; do
  if [ "$owner" = - ]; then
    printf '           %-22s %s\n' "(not claimed yet)" "$queued queued"
  else
    printf '           %-22s %-8s %-20s %s\n' "$owner" "$running" "$jobs" "$ended"
  fi
done <<<"$claims"
if awk -F'|' '$1 != "-" && $2 > 2 {found = 1} END {exit !found}' <<<"$claims"; then
  echo "           (2 workers each; 'running' counts the jobs claimed ahead too: --prefetch)"
fi
beat=""
[ -n "$victim_beat" ] && beat="; its last heartbeat was $((kill_ms - victim_beat)) ms before"
say "kill -9 $victim (pid $victim_pid), the instance with the most running jobs there$beat"

# Its database sessions end when PostgreSQL sees the sockets close; from then on what the database
# says about it is final: its running jobs are orphans, owned by an instance that no longer exists.
for _ in $(seq 100); do # hang guard: 10 s
  sessions="$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '% $victim'")"
  [ "$sessions" = 0 ] && break
  sleep 0.1
done
orphans="$(sql "SELECT string_agg(id::text, ' ' ORDER BY id) FROM (SELECT DISTINCT e.job_id AS id
  FROM job_events e WHERE e.owner = '$victim' AND e.state = 'running' AND NOT EXISTS (SELECT 1
  FROM job_events f WHERE f.job_id = e.job_id AND f.owner = '$victim' AND f.attempts = e.attempts
  AND f.state IN ('succeeded', 'failed', 'timed_out', 'cancelled'))) o")"
read -r -a orphan_ids <<<"$orphans"
[ "${#orphan_ids[@]}" -gt 0 ] || fail "$victim ran no job when it was killed: no rescue to show"
orphan_list="$(printf '#%s ' "${orphan_ids[@]}")"
orphan_sql="$(tr ' ' ',' <<<"$orphans")"
say "it was running ${orphan_list% } when it died: the database still says they run, owner" \
  "$victim, but nobody runs them. The survivors will find its heartbeat older than" \
  "$dead_after_ms ms and re-queue them"
for _ in $(seq 50); do # hang guard: 5 s
  left=0
  for pid in "${victim_children[@]}"; do running "$pid" && left=$((left + 1)); done
  [ "$left" -eq 0 ] && break
  sleep 0.1
done

# --- the rescue -----------------------------------------------------------------------------------

rescue_seen=0
deadline=$((kill_ms + 60000)) # hang guard
while :; do
  if [ "$rescue_seen" -eq 0 ]; then
    rescue_lines="$(for i in "${survivors[@]}"; do grep '] rescue: ' "$work/$i.err"; done || true)"
    if [ -n "$rescue_lines" ]; then
      rescue_seen=1
      say "rescue! a survivor's log says:"
      indent <<<"$rescue_lines"
      say "the rescued jobs now:"
      sql "SELECT id, state, coalesce(owner, '-'), attempts FROM jobs WHERE id IN ($orphan_sql)
        ORDER BY id" | while IFS='|' read -r id state owner attempts; do
        printf '           #%-3s %-9s owner %-22s attempts %s\n' "$id" "$state" "$owner" "$attempts"
      done
    fi
  fi
  active="$(sql "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")"
  [ "$active" = 0 ] && [ "$rescue_seen" -eq 1 ] && break
  if [ "$(date +%s%3N)" -gt "$deadline" ]; then
    unended="$(sql "SELECT string_agg('#' || id || ' ' || state || ' ' || coalesce(owner, '-'),
      ', ' ORDER BY id) FROM jobs WHERE state IN ('queued', 'running')")"
    [ "$rescue_seen" -eq 1 ] ||
      fail "no survivor logged a rescue within 60 s of the kill; not ended: $unended"
    fail "$active jobs had not ended 60 s after the kill: $unended"
  fi
  sleep 0.1
done
end_ms=$(date +%s%3N)
say "every job has ended, $(((end_ms - kill_ms) / 100 * 100)) ms after the kill"

# --- what happened --------------------------------------------------------------------------------

say "every job (from the jobs table; 'first run by' from job_events):"
printf '           %-4s %-5s %-9s %-22s %-8s %s\n' job ms state "ended by" attempts "first run by"
sql "SELECT j.id, substring(j.input FROM '[0-9]+'), j.state, coalesce(j.owner, '-'), j.attempts,
  (SELECT e.owner FROM job_events e WHERE e.job_id = j.id AND e.state = 'running'
   ORDER BY e.seq LIMIT 1) FROM jobs j ORDER BY j.id" |
  while IFS='|' read -r id ms state owner attempts first; do
    note=""
    [ "$first" != "$owner" ] && note="$first (killed)"
    printf '           #%-3s %-5s %-9s %-22s %-8s %s\n' "$id" "$ms" "$state" "$owner" "$attempts" \
      "$note"
  done
say "jobs each instance finished:"
for i in "${!ids[@]}"; do
  n="$(sql "SELECT count(*) FROM jobs WHERE owner = '${ids[$i]}' AND state = 'succeeded'")"
  label=""
  [ "$i" -eq "$v" ] && label="(killed; these ended before the kill)"
  printf '           %-22s %-3s %s\n' "${ids[$i]}" "$n" "$label"
done
IFS='|' read -r requeued_ms restarted_ms <<<"$(sql "SELECT
  (SELECT min(at_ms) FROM job_events WHERE job_id IN ($orphan_sql) AND state = 'queued'
   AND attempts >= 1), (SELECT min(at_ms) FROM job_events WHERE job_id IN ($orphan_sql)
   AND state = 'running' AND attempts = 2)")"
if [ -n "$requeued_ms" ] && [ -n "$restarted_ms" ]; then
  age=""
  [ -n "$victim_beat" ] && age=" (its heartbeat was $((requeued_ms - victim_beat)) ms old by then)"
  say "rescue delay: the jobs were re-queued $((requeued_ms - kill_ms)) ms after the kill$age" \
    "and running again $((restarted_ms - kill_ms)) ms after it"
fi

# --- checks ---------------------------------------------------------------------------------------

problems=()
check() { # description, then the offending rows (empty when the check passed)
  if [ -z "$2" ]; then
    printf '           ok    %s\n' "$1"
  else
    printf '           FAIL  %s: %s\n' "$1" "$(tr '\n' ' ' <<<"$2")"
    problems+=("$1")
  fi
}
say "checks:"
check "every job succeeded" "$(sql "SELECT '#' || id || ' ' || state FROM jobs
  WHERE state <> 'succeeded' ORDER BY id")"
check "every job has exactly one final change in job_events" "$(sql "SELECT '#' || j.id || ': '
  || count(e.seq) FROM jobs j LEFT JOIN job_events e ON e.job_id = j.id AND e.state IN
  ('succeeded', 'failed', 'timed_out', 'cancelled') GROUP BY j.id HAVING count(e.seq) <> 1
  ORDER BY j.id")"
check "the killed instance's running jobs ran again (attempt 2) on a survivor" "$(sql "SELECT '#'
  || id || ' attempts ' || attempts || ' owner ' || coalesce(owner, '-') FROM jobs
  WHERE id IN ($orphan_sql) AND (attempts <> 2 OR owner IS NULL OR owner = '$victim')
  ORDER BY id")"
check "the other jobs ran once" "$(sql "SELECT '#' || id || ' attempts ' || attempts FROM jobs
  WHERE id NOT IN ($orphan_sql) AND attempts <> 1 ORDER BY id")"
totals="$( (grep -h '] rescue: ' "$work"/*.err || true) |
  awk '{d += $3; r += $6} END {print d + 0, r + 0}')" # dead instances, re-queued jobs
check "the survivors' logs show one rescue of 1 dead instance and ${#orphan_ids[@]} jobs" \
  "$([ "$totals" = "1 ${#orphan_ids[@]}" ] || echo "dead instances, re-queued jobs: $totals")"
listed="$(curl -sS --max-time 10 "http://127.0.0.1:${ports[${survivors[0]}]}/instances" |
  grep -o '"id":"[^"]*"' | sed 's/"id":"\(.*\)"/\1/' | sort | tr '\n' ' ' || true)"
expected="$(for i in "${survivors[@]}"; do echo "${ids[$i]}"; done | sort | tr '\n' ' ')"
check "GET /instances lists the survivors only" \
  "$([ "$listed" = "$expected" ] || echo "listed: $listed")"
left=""
for pid in "${victim_children[@]}"; do running "$pid" && left+="$pid "; done
check "the killed instance's zygote and workers exited with it" "$left"

say "stopping the survivors (SIGTERM)"
children=()
for i in "${survivors[@]}"; do
  read -r -a more <<<"$(descendants "${pids[$i]}" | tr '\n' ' ')"
  children+=("${more[@]}")
  kill -TERM "${pids[$i]}"
done
for i in "${survivors[@]}"; do
  status=0
  wait "${pids[$i]}" || status=$?
  check "${ids[$i]} stopped cleanly" "$([ "$status" -eq 0 ] || echo "exit status $status")"
done
for _ in $(seq 50); do # hang guard: 5 s
  left=""
  for pid in "${children[@]}"; do running "$pid" && left+="$pid "; done
  [ -z "$left" ] && break
  sleep 0.1
done
check "their zygotes and workers exited too" "$left"
other_lines="$(grep -hv '] rescue: ' "$work"/*.err || true)"
if [ -n "$other_lines" ]; then
  say "the instances also logged:"
  indent <<<"$other_lines"
fi

finished=1
if [ "${#problems[@]}" -gt 0 ]; then
  finished=0
  summary="$(printf '%s; ' "${problems[@]}")"
  fail "${summary%; }"
fi
echo "cluster demo: ok: $job_count jobs, ${#orphan_ids[@]} rescued from the killed instance," \
  "every job ended exactly once"
