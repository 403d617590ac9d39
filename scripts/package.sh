#!/usr/bin/env bash
# Builds sqs_ingest's Debian packages with Debian's own tools (dpkg-shlibdeps, dpkg-gencontrol,
# dpkg-deb, lintian when installed): postgresql-15-sqs-ingest for the system's PostgreSQL 15, and
# postgresql-18-sqs-ingest laid out as Debian's PostgreSQL 18 is, built against the tests'
# relocatable 18 (the same major, so the same ABI; PostgreSQL checks it when it loads the file).
# Usage: package.sh OUT_DIR [COMMIT]. With COMMIT (an earlier release, for the upgrade test), that
# commit's source is built for 15 only, with today's debian/ files and its own changelog entry,
# and the package is kept by commit in the cache: a release never changes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/setup.sh --package
out=$(realpath -m "${1:?usage: package.sh OUT_DIR [COMMIT]}")
commit=${2:-}
mkdir -p "$out"
debian=$PWD/debian
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The source to build: this tree, or the commit's.
if [ -n "$commit" ]; then
  kept=$SQS_INGEST_CACHE/debs/$commit
  if ls "$kept"/*.deb >/dev/null 2>&1; then
    cp "$kept"/*.deb "$out"/
    echo "==> package: $(cd "$kept" && ls ./*.deb | xargs -n1 basename) (built before, kept by commit)"
    exit 0
  fi
  src=$work/src
  mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  majors=(15)
  # A target directory of its own: in the shared one, cargo took this tree's library for fresh
  # and packaged the last one built there (another version, another major). It starts as hard
  # links to the shared one's third-party artifacts, so that only sqs_ingest itself is compiled.
  export CARGO_TARGET_DIR=$SQS_INGEST_CACHE/target-previous
  if ! [ -d "$CARGO_TARGET_DIR/release" ] && [ -d "$SQS_INGEST_CACHE/target/release" ]; then
    mkdir -p "$CARGO_TARGET_DIR"
    cp -al "$SQS_INGEST_CACHE/target/release" "$CARGO_TARGET_DIR/release"
    find "$CARGO_TARGET_DIR/release" -maxdepth 2 \( -name '*sqs_ingest*' -o -name 'libsqs_ingest*' \) -exec rm -rf {} +
  fi
else
  src=$PWD
  majors=(15 18)
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$src/Cargo.toml" | head -n1)

# The changelog from this version's entry down: its top entry names the package's version.
changelog=$work/changelog
awk -v v="$version" '$1 == "sqs-ingest" && index($2, "(" v "-") == 1 { on = 1 } on' "$debian/changelog" > "$changelog"
if ! [ -s "$changelog" ]; then
  echo "package: debian/changelog has no entry for $version (Cargo.toml's version); add one" >&2
  exit 1
fi

for major in "${majors[@]}"; do
  package=postgresql-$major-sqs-ingest
  if [ "$major" = 18 ]; then
    config=$PG18_CONFIG features=(--no-default-features --features pg18)
  else
    config=$PG_CONFIG features=()
  fi
  echo "==> package: $package $version (cargo pgrx package --pg-config $config)"
  raw=$work/raw-$major
  (cd "$src" && cargo pgrx package --pg-config "$config" "${features[@]}" --out-dir "$raw" >/dev/null)

  # Debian's layout, whatever the building PostgreSQL's own.
  stage=$work/$package
  lib=$stage/usr/lib/postgresql/$major/lib
  ext=$stage/usr/share/postgresql/$major/extension
  doc=$stage/usr/share/doc/$package
  install -d -m 755 "$lib" "$ext" "$doc" "$stage/DEBIAN"
  install -m 644 "$raw$("$config" --pkglibdir)/sqs_ingest.so" "$lib/"
  install -m 644 "$raw$("$config" --sharedir)"/extension/sqs_ingest* "$ext/"
  # As dh_strip does: the debug sections are most of the file's size.
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$lib/sqs_ingest.so"
  install -m 644 "$debian/copyright" "$doc/copyright"
  gzip -9n < "$changelog" > "$doc/changelog.Debian.gz"
  gzip -9n < "$src/README.md" > "$doc/README.md.gz"
  chmod 644 "$doc"/*

  # Control file: dpkg-shlibdeps names the libraries the .so needs, dpkg-gencontrol writes the
  # rest from debian/control and the changelog; both work in a directory holding debian/.
  mkdir -p "$work/ctl-$major/debian"
  cp "$debian/control" "$work/ctl-$major/debian/control"
  cp "$changelog" "$work/ctl-$major/debian/changelog"
  (
    cd "$work/ctl-$major"
    dpkg-shlibdeps -Tdebian/substvars "$lib/sqs_ingest.so" 2>/dev/null
    dpkg-gencontrol -p"$package" -P"$stage" -Tdebian/substvars
  )
  (cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
  chmod 644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
done

debs=()
for major in "${majors[@]}"; do
  debs+=("$out/postgresql-$major-sqs-ingest_${version}-"*"_$(dpkg --print-architecture).deb")
done
if [ -n "$commit" ]; then
  mkdir -p "$kept"
  cp "${debs[@]}" "$kept"/
fi
for deb in "${debs[@]}"; do
  echo "==> package: built $deb"
done
if command -v lintian >/dev/null; then
  echo "==> package: lintian"
  lintian --fail-on error "${debs[@]}"
fi
