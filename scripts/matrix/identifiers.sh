#!/bin/sh
# Every wheel we promise is one that cibuildwheel will build: for linux,
# macos and windows, `cibuildwheel --print-build-identifiers` (reading
# [tool.cibuildwheel] in pyproject.toml) must list exactly the identifiers
# below, no more, no fewer: 24 + 12 + 12 = 48 wheels.
set -eu
cd "$(dirname "$0")/../.."
cibw=${CIBUILDWHEEL:-cibuildwheel}
[ -x .venv/bin/cibuildwheel ] && cibw=.venv/bin/cibuildwheel

versions="cp39 cp310 cp311 cp312 cp313 cp314"
promised() {
    for v in $versions; do
        case $1 in
            linux) for t in manylinux_x86_64 manylinux_aarch64 musllinux_x86_64 musllinux_aarch64; do echo "$v-$t"; done ;;
            macos) for t in macosx_x86_64 macosx_arm64; do echo "$v-$t"; done ;;
            windows) for t in win_amd64 win_arm64; do echo "$v-$t"; done ;;
        esac
    done
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad=0
for platform in linux macos windows; do
    promised "$platform" | sort >"$tmp/want"
    # no CIBW_* from the environment: the file alone decides
    env -u CIBW_BUILD -u CIBW_SKIP -u CIBW_ARCHS -u CIBW_ENABLE \
        "$cibw" --platform "$platform" --print-build-identifiers | sort >"$tmp/got"
    if cmp -s "$tmp/want" "$tmp/got"; then
        echo "$platform: $(wc -l <"$tmp/got") identifiers, all promised ones present"
    else
        echo "$platform: identifiers differ (- promised, + listed by cibuildwheel):" >&2
        diff "$tmp/want" "$tmp/got" | grep '^[<>]' | sed 's/^</-/; s/^>/+/' >&2
        bad=1
    fi
done
exit $bad
