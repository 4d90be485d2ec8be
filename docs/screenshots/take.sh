#!/usr/bin/env bash
# Screenshots of a finished run's report in headless Chromium (Debian's `chromium` package):
#   docs/screenshots/take.sh [WORKDIR]      (default: the repository, after `make run`)
# Writes report.png (the Snakemake report's landing page), predictions.png (the Predictions page of
# the demo's ImageNet backbone) and tables.png (the demo's accuracy tables) here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(cd "${1:-$here/../..}" && pwd)"
cd "$work"
.venv/bin/snakemake --report report.html --quiet all
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
shot() {  # url, png, height
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
    --window-size=1400,"$3" --virtual-time-budget=8000 --screenshot="$here/$2" "$1" 2>/dev/null
  test -s "$here/$2"
}
# a window tall enough that the report does not scroll to its rule graph; cropped below the landing text
shot "file://$work/report.html" report.png 2600
.venv/bin/python -c "from PIL import Image; p='$here/report.png'; Image.open(p).crop((0, 0, 1400, 1350)).save(p)"
shot "file://$work/results/demo/predictions/imagenet.html" predictions.png 1400
shot "file://$work/results/report/demo.html" tables.png 1100
echo "screenshots in $here"
