#!/bin/sh
# `make test`'s second part: the database-facing tiers on the other PostgreSQL versions at hand,
# the embedded 16 (the store tier) and each server under /usr/lib/postgresql (the store tier and
# the daemon tier's lifecycle files, given as arguments), all at once: each run is its own
# pytest on its own server (the distribution's: two workers, a server each), and mostly waits
# on round trips, so together they take little longer than the longest alone. Each one's
# output is printed whole when it ends, in order.
# Exit status: 1 if any run failed.
#
#   tests/other_postgres.sh PYTEST LIFECYCLE_FILE...
set -u
pytest=$1
shift
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

names=""
start() {  # start NAME POSTGRES PYTEST-ARGS...
    name=$1 postgres=$2
    shift 2
    names="$names $name"
    echo "TASKD_TEST_POSTGRES=$postgres pytest -q $*" >"$logs/$name.log"
    (
        TASKD_TEST_POSTGRES=$postgres "$pytest" -q -p no:cacheprovider "$@" \
            >>"$logs/$name.log" 2>&1
        echo $? >"$logs/$name.rc"
    ) &
}

start pg16 16 tests/store --ignore=tests/store/test_schema_file.py
found=
for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/postgres" ] || continue
    found=1
    # the longest of these runs (the lifecycle files too): on two workers (pytest-xdist, each
    # with its own server), so that it ends about when the store tier alone does
    start "$(basename "$(dirname "$bin")")" "$bin" -n 2 --dist worksteal tests/store "$@" \
        --ignore=tests/store/test_schema_file.py
done
wait

failed=0
for name in $names; do
    cat "$logs/$name.log"
    [ "$(cat "$logs/$name.rc" 2>/dev/null)" = 0 ] || failed=1
done
[ -n "$found" ] || echo "make test: no PostgreSQL under /usr/lib/postgresql:" \
    "the daemon tier ran on the embedded 18 only (install Debian's postgresql to add it)"
exit $failed
