#!/bin/sh
# build-image.sh builds Hearth's Complement image: static hearth and entrypoint
# binaries, then a FROM scratch Docker image holding them.
#
#   build/complement/build-image.sh [IMAGE]     (default IMAGE: hearth:latest)
#
# Needs Go, a C compiler with a static libc (Debian: gcc and libc6-dev) and a
# Docker engine. Run it from anywhere inside the repository.
set -eu

image=${1:-hearth:latest}
root=$(cd "$(dirname "$0")/../.." && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

version=$(git -C "$root" describe --always --dirty 2>/dev/null || echo dev)
export GOEXPERIMENT=jsonv2 CGO_ENABLED=1
# netgo/osusergo: the pure-Go resolver and user lookup, so the static binary does
# not need glibc's NSS at run time (scratch has none).
cd "$root"
go build -trimpath -tags netgo,osusergo,sqlite_omit_load_extension \
	-ldflags "-X hearth/internal/version.Version=$version -linkmode external -extldflags -static" \
	-o "$ctx/hearth" ./cmd/hearth
go build -trimpath -tags netgo,osusergo \
	-ldflags "-linkmode external -extldflags -static" \
	-o "$ctx/entrypoint" ./build/complement/entrypoint
cp build/complement/Dockerfile "$ctx/Dockerfile"

# The classic builder writes Docker-format images; Complement needs that format
# for HEALTHCHECK (OCI images drop it).
DOCKER_BUILDKIT=0 docker build --label "org.opencontainers.image.version=$version" -t "$image" "$ctx"
echo "built $image (hearth $version)"
