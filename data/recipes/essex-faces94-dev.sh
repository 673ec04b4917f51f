#!/bin/bash
# Essex "faces94" (Libor Spacek, University of Essex), development half: people whose folder name (e.g. 9326871,
# ekavaz) has an even SHA-256; the female/male/malestaff grouping (no name is in two groups) is kept in
# OUT/groups.csv (identity,group), for results per group; female/gotone (a sheet of thumbnails, not a person)
# is left out. OUT/<person>/<person>.N.jpg, 180x200 RGB.
set -euo pipefail
G=$1; OUT=$2; C=c5c549ec6b6cefba96265ef562db7fbcd5c993e5
mkdir -p "$OUT"; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "identity,group" >"$OUT/groups.csv"
git --git-dir="$G" archive "$C" faces94 | tar -x -C "$tmp"
for d in "$tmp"/faces94/*/*/; do
  id=$(basename "$d")
  [ "$id" = gotone ] && continue
  h=$(printf %s "$id" | sha256sum | cut -c64)
  case $h in [02468ace])
    mkdir -p "$OUT/$id"
    cp "$d"/*.jpg "$OUT/$id/"
    echo "$id,$(basename "$(dirname "$d")")" >>"$OUT/groups.csv" ;;
  esac
done
echo "faces94 dev half: $(find "$OUT" -name '*.jpg' | wc -l) images, $(find "$OUT" -mindepth 1 -maxdepth 1 -type d | wc -l) identities in $OUT"
