#!/usr/bin/env bash
# Draw the DVC plots of the repository in the current folder to OUT/index.html (default dvc_plots/), a page that
# works with no network: DVC's own page loads vega from a CDN, this one loads the copies in plots/vendor/.
# Usage: plots/show.sh [OUT] (`make plots` runs it); `dvc` must be on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-dvc_plots}"
dvc plots show --html-template "$here/template.html" --out "$out"
mkdir -p "$out/vendor"
cp "$here"/vendor/*.min.js "$here"/vendor/LICENSE.* "$out/vendor/"
