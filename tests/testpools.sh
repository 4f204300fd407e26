# The pools the tests, the demo and the benchmarks make, and only those (sourced by tests/setup.sh,
# tests/demo and tests/zfs-fuse-watch; tests/testpools.py is the same for Python): each is
# recorded, before it is created, in a file of its own under /var/tmp/kvm-test-pools
# (KVM_TEST_POOL_RECORDS to choose) holding `PID IMAGE`: the process that made it and its backing
# file. The folder must be root's, writable by root only, and no link: its names say which
# pools may be destroyed. A pool without a record there is never touched.

testpools_dir()
{
	local d=${KVM_TEST_POOL_RECORDS:-/var/tmp/kvm-test-pools}
	[ -e "$d" ] || [ -L "$d" ] || mkdir -m 0700 "$d" 2>/dev/null || true
	if [ -L "$d" ] || [ ! -d "$d" ] || [ "$(stat -c %u "$d")" != "$(id -u)" ] ||
	    [ $((0$(stat -c %a "$d") & 022)) -ne 0 ]; then
		echo "testpools: $d is not a folder of ours writable by us only (a link? another user's?): not using it" >&2
		return 1
	fi
	echo "$d"
}

# testpools_record NAME IMAGE: before `zpool create NAME IMAGE`
testpools_record()
{
	local d
	d=$(testpools_dir) || return 1
	echo "$$ $2" > "$d/$1"
}

# testpools_forget NAME: after the pool is destroyed
testpools_forget()
{
	local d
	d=$(testpools_dir) || return 1
	rm -f "$d/$1"
}

# testpools_recorded NAME: true when the test tooling made the pool
testpools_recorded()
{
	local d
	d=$(testpools_dir) || return 1
	[ -f "$d/$1" ] && [ ! -L "$d/$1" ]
}

# testpools_names: the recorded pool names, one a line
testpools_names()
{
	local d f
	d=$(testpools_dir) || return 0
	for f in "$d"/*; do
		[ -f "$f" ] && [ ! -L "$f" ] && echo "${f##*/}"
	done
	return 0
}

# testpools_alive PID: true when process PID runs. kill -0 alone also answers for a thread id
# (zfs-fuse's threads take pids in the same range), which is never a pool's maker.
testpools_alive()
{
	[ "$(awk '$1 == "Tgid:" {print $2}' "/proc/$1/status" 2>/dev/null)" = "$1" ]
}

# testpools_detach_dead NAME: lazily detach the mounts of recorded pool NAME that answer nothing
# (a zfs-fuse that died leaves its mounts behind: every stat under them fails "Transport endpoint
# is not connected", and a new daemon cannot mount there); a mount that answers is left alone
testpools_detach_dead()
{
	local source m
	testpools_recorded "$1" || return 0
	awk '$3 == "fuse.zfs" {print $1, $2}' /proc/mounts | sort -k2 -r | while read -r source m; do
		[ "${source%%/*}" = "$1" ] || continue
		stat "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true
	done
}

# testpools_clean_stale: destroy the recorded pools of runs that are over (their maker is gone:
# a run killed, a machine restarted, a session stopped mid-run), with their records and files;
# their dead mounts are detached first. A recorded pool whose maker still runs (a parallel run)
# is left alone, and so is every pool without a record.
testpools_clean_stale()
{
	local d name pid img health names pools
	d=$(testpools_dir) || return 0
	# ZFS must answer first: a pool missing from no answer is not gone
	names=$(zpool list -H -o name 2>/dev/null) || return 0
	pools=" $(echo $names) "
	for name in $(testpools_names); do
		read -r pid img < "$d/$name" || continue
		if [ -n "$pid" ] && testpools_alive "$pid"; then
			continue
		fi
		case "$pools" in
		*" $name "*) ;;
		*) rm -f "$d/$name"; [ -n "$img" ] && rm -f "$img"; continue ;;   # gone already
		esac
		health=$(zpool list -H -o health "$name" 2>/dev/null) || continue
		echo "testpools: destroying $name, a test pool ($health) left by a run that is over (its file $img)" >&2
		testpools_detach_dead "$name"
		zpool destroy -f "$name" && rm -f "$d/$name" "$img"
	done
	return 0
}
