#!/bin/sh
# Compiles the example's device tree, boot/bcm2711-rpi-4-b.dtb, from
# dts/bcm2711-rpi-4-b-custodian.dts and the Raspberry Pi 4's tree in
# Debian's linux-source-6.1 (the kernel the image runs), pinned below by
# SHA-256, with cpp and dtc (Debian: cpp, device-tree-compiler).
#
#   sh make-dtb.sh OUT    writes the device tree to OUT
#
# The same inputs give the same bytes: TestExampleDeviceTreeIsItsSource
# compiles it again and compares it with the one in boot/.
#
# The source package is fetched with apt-get download into the cache
# fetch-debs.sh uses ($CUSTODIAN_CACHE/debs, else
# $XDG_CACHE_HOME/custodian/debs, else ~/.cache/custodian/debs), and only
# the device tree files are unpacked from it (about a minute: the
# tarball is 140 MB of xz).
set -eu
out=${1:?usage: make-dtb.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
SOURCE=linux-source-6.1_6.1.192-3_all.deb
SOURCE_SHA256=5259c57ca92092da39bd2ea803046da0e3c28f2b6a11ea20f6297468188ceb67
cache=${CUSTODIAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/custodian}/debs
mkdir -p "$cache"
for tool in cpp dtc; do
	command -v $tool >/dev/null || { echo "make-dtb: $tool is missing (apt-get install cpp device-tree-compiler)" >&2; exit 1; }
done

deb=$cache/$SOURCE
if ! [ -f "$deb" ] || ! echo "$SOURCE_SHA256  $deb" | sha256sum -c --status; then
	(cd "$cache" && apt-get download -q linux-source-6.1=6.1.192-3 >&2) || {
		echo "make-dtb: apt-get download linux-source-6.1=6.1.192-3 failed: is that version still on the mirror (bookworm-security)?" >&2
		exit 1
	}
	if ! echo "$SOURCE_SHA256  $deb" | sha256sum -c --status; then
		echo "make-dtb: $deb has SHA-256 $(sha256sum "$deb" | cut -d' ' -f1), this script pins $SOURCE_SHA256" >&2
		exit 1
	fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only the Broadcom trees and the bindings' headers, streamed.
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/src/linux-source-6.1.tar.xz | xz -dc |
	tar -x -C "$work" --strip-components=1 --wildcards \
		'linux-source-6.1/arch/arm/boot/dts/bcm*' 'linux-source-6.1/include/dt-bindings/*'
[ -f "$work/arch/arm/boot/dts/bcm2711-rpi-4-b.dts" ] || { echo "make-dtb: bcm2711-rpi-4-b.dts not found in $SOURCE" >&2; exit 1; }

# As the kernel's own build runs them (scripts/Makefile.lib: cmd_dtc).
cpp -nostdinc -undef -D__DTS__ -x assembler-with-cpp -P \
	-I "$work/arch/arm/boot/dts" -I "$work/include" \
	"$here/dts/bcm2711-rpi-4-b-custodian.dts" >"$work/tree.dts"
dtc -q -I dts -O dtb -o "$work/tree.dtb" "$work/tree.dts"
mv "$work/tree.dtb" "$out"
