#!/bin/bash
# Extended Yale Face Database B, cropped (CroppedYale), development half: subjects whose folder name (yaleB01..
# yaleB39; there is no yaleB14) has an even SHA-256. OUT/<subject>/yaleBxx_P00A±aaaE±ee.pgm, 168x192 8-bit grey,
# the 64 flash directions of the frontal pose; the ambient-only frame and the stray .info/.LOG files are left out.
set -euo pipefail
G=$1; OUT=$2; C=f9d4b43974c083e50429c715770176532028355c
mkdir -p "$OUT"; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
git --git-dir="$G" archive "$C" CroppedYale | tar -x -C "$tmp"
for d in "$tmp"/CroppedYale/yaleB*/; do
  id=$(basename "$d")
  h=$(printf %s "$id" | sha256sum | cut -c64)
  case $h in [02468ace])
    mkdir -p "$OUT/$id"
    cp "$d"/"$id"_P00A*.pgm "$OUT/$id/" ;;
  esac
done
echo "Extended Yale B dev half: $(find "$OUT" -name '*.pgm' | wc -l) images, $(find "$OUT" -mindepth 1 -maxdepth 1 -type d | wc -l) identities in $OUT"
