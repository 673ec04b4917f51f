#!/bin/bash
# AT&T (formerly ORL) Database of Faces, development half: subjects whose folder name (s1..s40) has an even
# SHA-256. OUT/<subject>/<n>.pgm, 92x112 8-bit grey.
set -euo pipefail
G=$1; OUT=$2; C=3edc842bc89bddbd3d6bcf12d23a4f9c2a493883
mkdir -p "$OUT"; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
git --git-dir="$G" archive "$C" orl_faces | tar -x -C "$tmp"
for d in "$tmp"/orl_faces/s*/; do
  id=$(basename "$d")
  h=$(printf %s "$id" | sha256sum | cut -c64)
  case $h in [02468ace])
    mkdir -p "$OUT/$id"
    cp "$d"/*.pgm "$OUT/$id/" ;;
  esac
done
echo "ORL dev half: $(find "$OUT" -name '*.pgm' | wc -l) images, $(find "$OUT" -mindepth 1 -maxdepth 1 -type d | wc -l) identities in $OUT"
