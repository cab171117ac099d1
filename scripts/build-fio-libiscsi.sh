#!/usr/bin/env bash
# Builds fio with its libiscsi engine into /opt/fio-libiscsi (or $1): Debian's
# fio package is built without it, and the iSCSI conformance test and the iSCSI
# benchmark drive Tessera with `fio --ioengine=libiscsi`. Uses Debian's own
# source package of the installed fio version, so the result matches the distro's
# fio. Needs root (apt-get); does nothing when the engine is already there.
set -euo pipefail
PREFIX=${1:-/opt/fio-libiscsi}
if "$PREFIX/bin/fio" --enghelp 2>/dev/null | grep -qw libiscsi; then exit 0; fi
export DEBIAN_FRONTEND=noninteractive
echo "build-fio-libiscsi: building fio with the libiscsi engine into $PREFIX (a few minutes)" >&2
apt-get install -y -qq --no-install-recommends build-essential pkg-config dpkg-dev libiscsi-dev libaio-dev zlib1g-dev >/dev/null
# apt-get source needs deb-src entries; add them next to the deb ones if missing.
if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >/etc/apt/sources.list.d/tessera-deb-src.sources
  else
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/tessera-deb-src.list
  fi
  apt-get update -qq
fi
work=$(mktemp -d /tmp/tessera-fio-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source -qq fio >/dev/null 2>&1)
src=$(find "$work" -maxdepth 1 -type d -name 'fio-*' | head -n1)
[ -n "$src" ] || { echo "build-fio-libiscsi: apt-get source fio produced no source tree" >&2; exit 1; }
(cd "$src" && ./configure --prefix="$PREFIX" --enable-libiscsi >/dev/null && make -j"$(nproc)" >/dev/null && make install >/dev/null)
"$PREFIX/bin/fio" --enghelp | grep -qw libiscsi || { echo "build-fio-libiscsi: the built fio has no libiscsi engine" >&2; exit 1; }
echo "build-fio-libiscsi: $PREFIX/bin/fio" >&2
