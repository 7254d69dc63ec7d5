#!/bin/sh
# Names in a Debian guest, run by the CI case after the incident
# (xtask/src/incident/names.rs judges what it leaves): a transient scope
# of the system manager and a service of a lingering user's own manager,
# each squeezed to an OOM kill while `memtrace events --json` watches.
# Every wait is bounded. The events go to /root/names-events.jsonl; the
# OOM kills and the first event that names the user, to
# /root/names-seen.jsonl for the host (a user's name is looked up while
# events flow, so the OOM kill may come before the answer). What
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

# wait_for WHAT TENTHS COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
	what=$1 tenths=$2
	shift 2
	i=0
	until "$@"; do
		i=$((i + 1))
		if [ "$i" -gt "$tenths" ]; then
			say "timed out waiting for $what"
			return 1
		fi
		[ $((i % 100)) -eq 0 ] && say "still waiting for $what"
		sleep 0.1
	done
	say "$what after $((i / 10)).$((i % 10)) s"
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
wait_for "memtrace events to attach" 1200 grep -q 'memtrace: tracing' "$err" ||
	fail "events never attached"

# A scope of the system manager (systemd-run execs the hog in it).
systemd-run --quiet --scope --unit=names-batch -p MemoryMax=48M -p MemorySwapMax=0 \
	/usr/bin/hog --mb 200 --step-mb 8 --until 60 >/dev/null
say "the scope's hog exited $?"
wait_for "the scope's oom_kill" 300 oom_kill '"names-batch.scope"' ||
	fail "no oom_kill named names-batch.scope"

# A lingering user's manager (user@UID.service), and a service of its own,
# limited from its slice (a user manager need not delegate memory).
uid=$(id -u wizard) || fail "no user wizard"
loginctl enable-linger wizard || fail "enable-linger failed"
wait_for "user@$uid.service" 1200 systemctl is-active --quiet "user@$uid.service" ||
	fail "user@$uid.service did not start: $(systemctl status "user@$uid.service" 2>&1 | tail -5)"
systemctl set-property --runtime "user-$uid.slice" MemoryMax=64M MemorySwapMax=0 ||
	fail "cannot limit user-$uid.slice"
# systemd-run --user reaches the manager on its private socket (no user bus).
runuser -u wizard -- env XDG_RUNTIME_DIR="/run/user/$uid" \
	systemd-run --user --quiet --unit=names-user /usr/bin/hog --mb 200 --step-mb 8 --until 60 ||
	fail "systemd-run --user failed"
wait_for "the user's oom_kill" 900 oom_kill '"uid":'"$uid" ||
	fail "no oom_kill of uid $uid"

kill "$events"
wait "$events"
say "events exited $?"
{
	grep '"type":"oom_kill"' "$ev"
	grep -m1 '"user":"wizard"' "$ev"
} >"$seen"
say "$(wc -l <"$ev") events, $(wc -l <"$seen") kept"
