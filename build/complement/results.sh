#!/bin/sh
# results.sh turns the output of a Complement run (go test -v) into the results
# file kept in the repository: a header with the date, the Hearth and Complement
# commits and the counts, then one line per test and subtest, PASS/FAIL/SKIP.
#
#   build/complement/results.sh COMPLEMENT_DIR RUN.log > docs/complement-results.txt
#
# The Hearth version is read from the label of $COMPLEMENT_BASE_IMAGE (default
# hearth:latest), which build-image.sh sets from git describe.
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 COMPLEMENT_DIR RUN.log" >&2
	exit 2
fi
complement=$1
log=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
# The version hearth was built from is a label of the image under test.
image=${COMPLEMENT_BASE_IMAGE:-hearth:latest}
if rev=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image" 2>/dev/null); then
	hearth_rev="$rev (image $image)"
else
	hearth_rev="$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown) (working tree; image $image not found)"
fi
complement_rev=$(git -C "$complement" rev-parse HEAD 2>/dev/null || echo unknown)

# "--- PASS: TestX/sub (1.2s)" at any indentation; the package of a test is the
# next "ok  pkg" / "FAIL pkg" line. A package whose binary died (panic, timeout)
# is reported as a FAIL line of its own, since its remaining tests never ran.
results=$(awk '
	/^[ \t]*--- (PASS|FAIL|SKIP): / {
		sub(/^[ \t]*--- /, "")
		status = $1; sub(/:$/, "", status)
		pending[n++] = status " " $2
		next
	}
	/^(ok|FAIL)[ \t]+github.com\/matrix-org\/complement\// {
		pkg = $2; sub(/^github.com\/matrix-org\/complement\//, "", pkg)
		for (i = 0; i < n; i++) print pkg, pending[i]
		n = 0
	}
	/^panic: / && !panicked { panicked = 1 }
	/^FAIL[ \t]+github.com\/matrix-org\/complement\// && panicked {
		print pkg, "FAIL", "(package aborted: panic or timeout; later tests did not run)"
		panicked = 0
	}
	END { for (i = 0; i < n; i++) print "(unfinished)", pending[i] }
' "$log" | sort -k1,1 -k3,3 -u)

count() { # count STATUS top|sub
	printf '%s\n' "$results" | awk -v s="$1" -v kind="$2" '
		$2 == s && $3 ~ /^Test/ { top = ($3 !~ /\//); if ((kind == "top") == top) c++ }
		END { print c + 0 }'
}

cat <<HDR
# Complement results for Hearth (see docs/complement.md)
# date:       $(date -u +%Y-%m-%d)
# hearth:     $hearth_rev
# complement: $complement_rev
# top-level tests: $(count PASS top) pass, $(count FAIL top) fail, $(count SKIP top) skip
# subtests:        $(count PASS sub) pass, $(count FAIL sub) fail, $(count SKIP sub) skip
#
# package STATUS test
HDR
printf '%s\n' "$results"
