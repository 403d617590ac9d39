#!/usr/bin/env bash
# CI: the Debian packages as an operator meets them. Builds this release's packages and the
# previous release's (scripts/package.sh), prints their dpkg-deb --info, and runs
# package_upgrade (pgrx-tests/src/bin) with no cargo on PATH: install the previous package,
# ingest, upgrade the package under the running server, restart, ALTER EXTENSION UPDATE, remove.
# It changes the machine's PostgreSQL 15 install, so it is CI's, not the test command's: the
# sqs_ingest files it finds there (a build installed from source) are moved aside while it runs,
# as a machine that never had them, and put back afterwards (renames: a running server that maps
# the library keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# The release before this one: the commit its packages are built from.
PREVIOUS_RELEASE=9f6be9a

out=$(mktemp -d)
kept=
lib=/usr/lib/postgresql/15/lib ext=/usr/share/postgresql/15/extension
# Put back what was there.
restore() {
  local status=$?
  if dpkg-query -W postgresql-15-sqs-ingest >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -q postgresql-15-sqs-ingest >/dev/null || true
  fi
  if [ -n "$kept" ]; then
    find "$kept/lib" -mindepth 1 -maxdepth 1 -exec mv -f {} "$lib/" \;
    find "$kept/ext" -mindepth 1 -maxdepth 1 -exec mv -f {} "$ext/" \;
    rm -rf "$kept"
  fi
  rm -rf "$out"
  if [ $status = 0 ]; then echo "packages: 1 passed, 0 failed"; else echo "packages: 0 passed, 1 failed"; fi
  exit $status
}
trap restore EXIT
# On the same file system as the server's directories, so that moving is renaming.
kept=$(mktemp -d -p /usr/lib .sqs_ingest-kept.XXXXXX)
mkdir -p "$kept/lib" "$kept/ext"
find "$lib" -maxdepth 1 -name 'sqs_ingest*.so' -exec mv {} "$kept/lib/" \;
find "$ext" -maxdepth 1 -name 'sqs_ingest*' -exec mv {} "$kept/ext/" \;

if ! command -v lintian >/dev/null; then
  echo "==> package: apt-get install lintian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
bash scripts/package.sh "$out"
bash scripts/package.sh "$out/previous" "$PREVIOUS_RELEASE"
for deb in "$out"/*.deb "$out"/previous/*.deb; do
  echo "==> package: dpkg-deb --info $(basename "$deb")"
  dpkg-deb --info "$deb"
  dpkg-deb --contents "$deb" | awk '{ print "    " $6 }'
done

echo "==> package: install, upgrade under a running server, remove (package_upgrade, no cargo on PATH)"
cargo build -q -p sqs_ingest_it --bin package_upgrade
runner=$CARGO_TARGET_DIR/debug/package_upgrade
nocargo=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v '\.cargo/bin' | paste -sd:)
TMPDIR=$(mktemp -d)
chmod 755 "$TMPDIR"
PATH=$nocargo TMPDIR=$TMPDIR "$runner" "$(ls "$out"/previous/postgresql-15-sqs-ingest_*.deb)" \
  "$(ls "$out"/postgresql-15-sqs-ingest_*.deb)"
rm -rf "$TMPDIR"
