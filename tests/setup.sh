#!/usr/bin/env bash
# Prepares a Debian machine for kvm's tests and demo: zfs-fuse (real ZFS in user
# space) with its daemon running, and a virtualenv .venv with kvm installed.
# Run by tests/run and tests/demo; safe to run again. What it does to the host: installs the
# missing Debian packages below (apt-get), starts zfs-fuse when none runs, destroys the test
# pools an earlier run recorded and left behind (tests/testpools.sh; no other pool), and makes
# .venv in the checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "tests/setup.sh: run as root (ZFS pools and the kvm commands need it): su - first, then run it again" >&2
	exit 1
fi

need_pkgs=()
command -v zfs-fuse >/dev/null 2>&1 || need_pkgs+=(zfs-fuse)
command -v setpriv >/dev/null 2>&1 || need_pkgs+=(util-linux)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
# real guests: qemu with OVMF, and what tests/guest/build-guest makes the test guest with
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_pkgs+=(qemu-system-x86)
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need_pkgs+=(ovmf)
[ -e /bin/busybox ] || need_pkgs+=(busybox-static)
[ -d /usr/lib/grub/i386-pc ] || need_pkgs+=(grub-pc-bin)
[ -d /usr/lib/grub/x86_64-efi ] || need_pkgs+=(grub-efi-amd64-bin)
command -v grub-mkrescue >/dev/null 2>&1 || need_pkgs+=(grub-common)
command -v xorriso >/dev/null 2>&1 || need_pkgs+=(xorriso)
command -v mformat >/dev/null 2>&1 || need_pkgs+=(mtools)
command -v cpio >/dev/null 2>&1 || need_pkgs+=(cpio)
command -v qemu-img >/dev/null 2>&1 || need_pkgs+=(qemu-utils)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
# kvm switch: its own dnsmasq per switch (DHCP) and its own nftables table (NAT), proven in namespaces
command -v dnsmasq >/dev/null 2>&1 || need_pkgs+=(dnsmasq-base)
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)   # vmsend tests run their own sshd
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)   # dorc's units are verified
command -v zsh >/dev/null 2>&1 || need_pkgs+=(zsh)   # the zsh completion is run
command -v mandoc >/dev/null 2>&1 || need_pkgs+=(mandoc)          # the man pages are linted (tests/unit/test_manpages.py)
command -v swtpm >/dev/null 2>&1 || need_pkgs+=(swtpm swtpm-tools)   # TPM="swtpm" (tests/unit/test_swtpm.py, the TPM guest test)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
	echo "== installing ${need_pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The zfs-fuse daemon: started here when none runs (a machine just booted). One that runs is the
# host's, and is left alone. The pid of the one started here goes into KVM_TEST_STARTED_DAEMON
# when set (tests/run sets it: its watcher may restart only that daemon, see tests/zfs-fuse-watch).
if ! zpool list >/dev/null 2>&1; then
	[ -e /dev/fuse ] || { echo "tests/setup.sh: /dev/fuse is missing: zfs-fuse cannot run" >&2; exit 1; }
	# A daemon still exiting makes a new one quit silently: wait for it to be gone.
	for _ in $(seq 50); do pgrep -x zfs-fuse >/dev/null || break; sleep 0.2; done
	started=0
	if ! pgrep -x zfs-fuse >/dev/null; then
		# A daemon killed without its clean-up (a machine stopped, kill -9) leaves its pid
		# file behind, and zfs-fuse then exits 1 without a word: remove it (none runs).
		rm -f /run/zfs-fuse.pid
		echo "== starting zfs-fuse (none runs)"
		zfs-fuse --pidfile /run/zfs-fuse.pid || {
			echo "tests/setup.sh: zfs-fuse would not start (exit $?)" >&2; exit 1; }
		started=1
	fi
	# (a zfs-fuse that runs without answering is not ours: it is waited for, never restarted)
	for _ in $(seq 150); do zpool list >/dev/null 2>&1 && break; sleep 0.2; done
	zpool list >/dev/null 2>&1 || { echo "tests/setup.sh: zfs-fuse did not come up" >&2; exit 1; }
	if [ "$started" = 1 ] && [ -n "${KVM_TEST_STARTED_DAEMON:-}" ]; then
		pgrep -xo zfs-fuse > "$KVM_TEST_STARTED_DAEMON" || true
	fi
fi
# Test pools of earlier runs that are over (killed, a machine restarted, a session stopped
# mid-run: zfs-fuse brings them back from its cache, sometimes behind the dead mounts of the daemon
# that made them), as recorded by the run that made them (tests/testpools.sh): destroyed with their
# files. No other pool is ever touched, whatever its name.
. tests/testpools.sh
testpools_clean_stale

if [ ! -x .venv/bin/python ]; then
	echo "== creating .venv"
	python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
