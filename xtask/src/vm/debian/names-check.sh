#!/bin/sh
# Names in a Debian guest, run by the CI case after the incident
# (xtask/src/incident/names.rs judges what it leaves), while `memtrace
# events --json` and `memtrace top` (in a real tmux, filtered by the user's
# name) watch and the agent alerts:
# 1. a transient scope of the system manager squeezed to an OOM kill;
# 2. a login session of the user wizard (`runuser -l`, through PAM's
#    pam_systemd: user-1000.slice/session-c1.scope, logind's id for a
#    session without an audit session id) whose page cache is
#    reclaimed under MemoryMax, then whose hog is OOM-killed.
# Every wait is bounded. For the host: the OOM kills in
# /root/names-seen.jsonl, the session's events in
# /root/names-session.jsonl, its path in /root/names-session.txt, top's
# screen in /root/names-top.txt. What it says goes to stdout (the result)
# and, as `debian-guest:` lines, to the console, which the host watches
# for progress.
set -u
ev=/root/names-events.jsonl
err=/root/names-events.err
seen=/root/names-seen.jsonl
sessev=/root/names-session.jsonl
sesspath=/root/names-session.txt
screen=/root/names-top.txt
/usr/bin/memtrace events --json --duration 300s >"$ev" 2>"$err" &
events=$!
# The tmux server keeps no descriptor of the runner's pipes.
tmux new-session -d -s names -x 200 -y 50 \
	'/usr/bin/memtrace top --interval 500ms; echo MEMTRACE-EXITED $?; sleep 600' \
	</dev/null >/dev/null 2>&1

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

# top's screen now.
capture() {
	tmux capture-pane -p -t names >"$screen" 2>&1
}

fail() {
	say "$*"
	kill "$events" 2>/dev/null
	wait "$events"
	capture
	tmux kill-server 2>/dev/null
	grep '"type":"oom_kill"' "$ev" >"$seen"
	echo "--- top (all of it in $screen)"
	grep -v '^│ *│$' "$screen" | head -n 12
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

# top: filtered by the user's name, which no session path spells.
wait_for "top to start" 60 sh -c 'tmux capture-pane -p -t names | grep -q NAME' ||
	fail "top never drew its header"
tmux send-keys -t names /
tmux send-keys -t names -l wizard
tmux send-keys -t names Enter
wait_for "top's filter" 10 sh -c 'tmux capture-pane -p -t names | grep -q "filter: wizard"' ||
	fail "top never showed its filter"

# The agent's count of user names it found (its metrics page, as shipped
# on 127.0.0.1:9478; bash for /dev/tcp), or -1 if it does not answer.
passwd_found() {
	timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9478 &&
		printf "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
		awk 'BEGIN { n = -1 }
			/^HTTP\/1\.[01] 200/ { n = 0 }
			/^memtrace_name_lookups_total\{/ && /source="passwd"/ && /result="found"/ { n = $NF }
			END { print int(n) }'
}
found_before=$(passwd_found)
[ "$found_before" -ge 0 ] || fail "the agent's metrics do not answer on 127.0.0.1:9478"
agent_looked_up() {
	[ "$(passwd_found)" -gt "$found_before" ]
}

# A login session: the session's shell waits for its limit, writes a file
# a little larger than it (the reclaim of its page cache makes events of
# the session before anything is killed, so every reader has asked who uid
# 1000 is, and stalls the guest far less than the host alert's PSI
# trigger), then waits to run the hog.
go=/tmp/names-go
filled=/tmp/names-filled
oom=/tmp/names-oom
rm -f "$go" "$filled" "$oom"
runuser -l wizard -c "
	i=0; while [ ! -e $go ] && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i + 1)); done
	dd if=/dev/zero of=\$HOME/fill bs=1M count=56 2>/dev/null; rm -f \$HOME/fill
	touch $filled
	i=0; while [ ! -e $oom ] && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i + 1)); done
	exec /usr/bin/hog --mb 200 --step-mb 8 --until 60
" >/root/names-session.log 2>&1 &
session=$!
in_session() {
	grep -q '^0::/user.slice/user-1000.slice/session-[0-9a-z]*\.scope$' "/proc/$session/cgroup"
}
wait_for "the login session's scope" 60 in_session ||
	fail "runuser -l wizard got no session scope: $(cat "/proc/$session/cgroup")"
scope=$(sed -n 's/^0:://p' "/proc/$session/cgroup")
unit=${scope##*/}
echo "$scope" >"$sesspath"
say "the login session is $scope"
systemctl set-property --runtime "$unit" MemoryMax=48M MemorySwapMax=0 ||
	fail "cannot limit $unit"
touch "$go"
wait_for "the session's page cache" 120 test -e "$filled" ||
	fail "the session never filled its page cache"
named() {
	grep -F "\"cgroup\":\"$scope\"" "$ev" | grep -q '"user":"wizard"'
}
wait_for "events to name the session's user" 30 named ||
	fail "no event named $unit's user wizard"
# The screen kept for the host is the one that showed the row.
shown() {
	capture && grep -qF "$unit (wizard)" "$screen"
}
wait_for "top's row of the session" 30 shown ||
	fail "top never showed $unit (wizard) under its filter"
# The agent asks who uid 1000 is on its once-a-second tick and takes the
# answer on the next one: its own lookup counter says the answer is there,
# and three more seconds are three ticks before its alert must name the
# user.
wait_for "the agent to look up uid 1000" 30 agent_looked_up ||
	fail "the agent's passwd lookups stayed at $found_before (found)"
sleep 3
touch "$oom"
wait_for "the session's oom_kill" 30 oom_kill "\"$unit (wizard)\"" ||
	fail "no oom_kill named $unit (wizard)"
wait "$session"
say "the session's runuser exited $?"

tmux send-keys -t names q
wait_for "top to quit" 10 sh -c 'tmux capture-pane -p -t names | grep -q "MEMTRACE-EXITED 0"' ||
	fail "top did not quit"
tmux kill-server
kill "$events"
wait "$events"
say "events exited $?"
grep '"type":"oom_kill"' "$ev" >"$seen"
grep -F "\"cgroup\":\"$scope\"" "$ev" | tail -n 20 >"$sessev"
say "$(wc -l <"$ev") events, $(wc -l <"$seen") kept, $(wc -l <"$sessev") of the session"
