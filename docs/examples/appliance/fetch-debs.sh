#!/bin/sh
# Downloads the Debian packages a manifest pins ([[debs]] file and sha256)
# with apt-get download into the cache, checks each one's SHA-256, and
# prints the cache directory (for image build --debs). A package already
# there with the right digest is not downloaded again.
#
# Cache: $CUSTODIAN_CACHE/debs, else $XDG_CACHE_HOME/custodian/debs, else
# ~/.cache/custodian/debs. The build host needs apt with the arm64
# architecture added (dpkg --add-architecture arm64; apt-get update) and
# the non-free-firmware component (raspi-firmware).
set -eu
manifest=${1:?usage: fetch-debs.sh MANIFEST}
cache=${CUSTODIAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/custodian}/debs
mkdir -p "$cache"

# file and sha256 of each [[debs]] entry, one pair a line.
pins=$(sed -n 's/^file *= *"\(.*\)"$/\1/p; s/^sha256 *= *"\([0-9a-f]*\)"$/\1/p' "$manifest" | paste - -)
[ -n "$pins" ] || { echo "fetch-debs: $manifest pins no debs" >&2; exit 1; }

echo "$pins" | while read -r file sum; do
	base=${file##*/}
	if [ -f "$cache/$base" ] && echo "$sum  $cache/$base" | sha256sum -c --status; then
		continue
	fi
	# name_version_arch.deb; apt writes an epoch's colon as %3a.
	name=${base%%_*}
	rest=${base#*_}
	version=$(echo "${rest%_*}" | sed 's/%3a/:/g')
	arch=${rest##*_}
	arch=${arch%.deb}
	spec="$name=$version"
	[ "$arch" = all ] || spec="$name:$arch=$version"
	(cd "$cache" && apt-get download -q "$spec" >&2) || {
		echo "fetch-debs: apt-get download $spec failed: is the $arch architecture added and the version still on the mirror?" >&2
		exit 1
	}
	if ! echo "$sum  $cache/$base" | sha256sum -c --status; then
		echo "fetch-debs: $cache/$base has SHA-256 $(sha256sum "$cache/$base" | cut -d' ' -f1), the manifest pins $sum" >&2
		exit 1
	fi
done
echo "$cache"
