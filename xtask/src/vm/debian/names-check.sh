#!/bin/sh
# Names in a Debian guest, run by the CI case after the incident
# (xtask/src/incident/names.rs judges what it leaves): a transient scope
# of the system manager squeezed to an OOM kill while `memtrace events
# --json` watches. Every wait is bounded. The events go to
# /root/names-events.jsonl, the OOM kills to /root/names-seen.jsonl for
# the host. What
# it says goes to stdout (the result) and, as `debian-guest:` lines, to the
# console, which the host watches for progress.
set -u
ev=/root/names-events.jsonl
err=/root/names-events.err
seen=/root/names-seen.jsonl
/usr/bin/memtrace events --json --duration 240s >"$ev" 2>"$err" &
events=$!

say() {
	echo "names: $*"
	echo "debian-guest: names: $*" >&2
}

# Seconds since boot (a command's own time counts: under TCG one
# `systemctl` takes a few tenths).
now() {
	cut -d. -f1 /proc/uptime
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds, for at
# most SECONDS of wall time.
wait_for() {
	what=$1
	start=$(now)
	deadline=$((start + $2))
	next=$((start + 10))
	shift 2
	until "$@"; do
		if [ "$(now)" -ge "$deadline" ]; then
			say "timed out waiting for $what"
			return 1
		fi
		if [ "$(now)" -ge "$next" ]; then
			say "still waiting for $what"
			next=$((next + 10))
		fi
		sleep 0.1
	done
	say "$what after $(($(now) - start)) s"
}

# oom_kill PATTERN: an OOM kill event matching PATTERN was printed.
oom_kill() {
	grep '"type":"oom_kill"' "$ev" | grep -q "$1"
}

fail() {
	say "$*"
	kill "$events" 2>/dev/null
	wait "$events"
	echo "--- events stderr"
	cat "$err"
	exit 1
}

# Attaching takes 2-5 s in TCG beside the agent; 120 s is the bound.
wait_for "memtrace events to attach" 120 grep -q 'memtrace: tracing' "$err" ||
	fail "events never attached"

# A scope of the system manager (systemd-run execs the hog in it).
systemd-run --quiet --scope --unit=names-batch -p MemoryMax=48M -p MemorySwapMax=0 \
	/usr/bin/hog --mb 200 --step-mb 8 --until 60 >/dev/null
say "the scope's hog exited $?"
wait_for "the scope's oom_kill" 30 oom_kill '"names-batch.scope"' ||
	fail "no oom_kill named names-batch.scope"

kill "$events"
wait "$events"
say "events exited $?"
grep '"type":"oom_kill"' "$ev" >"$seen"
say "$(wc -l <"$ev") events, $(wc -l <"$seen") kept"
