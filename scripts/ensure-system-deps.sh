#!/usr/bin/env bash
# Installs the Debian packages that Tessera's tests and benchmarks drive as real
# clients and peers (qemu-img/qemu-io/qemu-nbd, nbdinfo/nbdcopy/nbdsh, fio, nbdkit,
# etcd for the monitor's etcd store tests, libiscsi's iscsi-test-cu/iscsi-inq and
# qemu's iscsi:// driver, tgtd as the iSCSI benchmark peer), and fio with its
# libiscsi engine (scripts/build-fio-libiscsi.sh; Debian's fio lacks it), and a
# C compiler for the native modules (crc32c, page-cache advice), if any is missing. Runs `apt-get update` first, as the machine image may have no lists.
# Needs root (or sudo); prints what it installs. Safe to run repeatedly.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-img || need+=(qemu-utils)
have nbdinfo || need+=(libnbd-bin)
have nbdsh || need+=(libnbd-bin)
have fio || need+=(fio)
have nbdkit || need+=(nbdkit)
# Debian's etcd-server installs /usr/bin/etcd, which may not be on a restricted PATH.
have etcd || [ -x /usr/bin/etcd ] || need+=(etcd-server)
PATH=/usr/bin:$PATH nbdsh -c 'pass' >/dev/null 2>&1 || need+=(libnbd-bin python3-libnbd)
have iscsi-test-cu || need+=(libiscsi-bin)
have iscsi-inq || need+=(libiscsi-bin)
have tgtd || [ -x /usr/sbin/tgtd ] || need+=(tgt)
# A C compiler for the native modules (scripts/build-native.mjs; without it,
# crc32c falls back to @node-rs/crc32, no page-cache advice is given, and the
# tests that expect the modules fail).
have cc || need+=(gcc libc6-dev)
# qemu-img's iscsi:// driver lives in qemu-block-extra.
dpkg -s qemu-block-extra >/dev/null 2>&1 || need+=(qemu-block-extra)

# A failed fio build (no Debian source mirror, say) must not stop every other test:
# it is reported here, and the one test that needs it fails naming the binary.
fio_libiscsi() {
  /opt/fio-libiscsi/bin/fio --enghelp 2>/dev/null | grep -qw libiscsi && return 0
  bash "$(dirname "$0")/build-fio-libiscsi.sh" /opt/fio-libiscsi || echo "ensure-system-deps: WARNING: building fio with libiscsi failed; the iSCSI fio test will fail" >&2
}
if [ ${#need[@]} -eq 0 ]; then fio_libiscsi; exit 0; fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "ensure-system-deps: installing ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if have sudo; then SUDO=sudo; else echo "ensure-system-deps: need root to apt-get install ${need[*]}" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fio_libiscsi
