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

# A lingering user's manager (user@UID.service), and a service of its own,
# limited from its slice (a user manager need not delegate memory). Linger
# makes logind start the manager at boot; now, it is started here.
uid=$(id -u wizard) || fail "no user wizard"
loginctl enable-linger wizard || fail "enable-linger failed"
systemctl start "user@$uid.service" ||
	fail "user@$uid.service did not start: $(journalctl -b -u "user@$uid.service" -u systemd-logind -n 12 --no-pager 2>&1 | tr '\n' ' ')"
wait_for "the user manager's socket" 60 test -S "/run/user/$uid/systemd/private" ||
	fail "no /run/user/$uid/systemd/private: $(journalctl -b -u "user@$uid.service" -u systemd-logind -n 12 --no-pager 2>&1 | tr '\n' ' ')"
systemctl set-property --runtime "user-$uid.slice" MemoryMax=64M MemorySwapMax=0 ||
	fail "cannot limit user-$uid.slice"
# systemd-run --user reaches the manager on its private socket (no user bus).
runuser -u wizard -- env XDG_RUNTIME_DIR="/run/user/$uid" \
	systemd-run --user --quiet --unit=names-user /usr/bin/hog --mb 200 --step-mb 8 --until 60 ||
	fail "systemd-run --user failed"
wait_for "the user's oom_kill" 90 oom_kill '"uid":'"$uid" ||
	fail "no oom_kill of uid $uid"

kill "$events"
wait "$events"
say "events exited $?"
{
	grep '"type":"oom_kill"' "$ev"
	grep -m1 '"user":"wizard"' "$ev"
} >"$seen"
say "$(wc -l <"$ev") events, $(wc -l <"$seen") kept"
