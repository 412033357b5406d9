#!/usr/bin/env bash
# Refresh the dashboard's vendored front-end assets from npm (run by a maintainer, never at
# install or run time: `pip install` needs no Node.js and the dashboard loads nothing from a CDN).
#
#   bash scripts/refresh-dashboard-assets.sh            # the pinned versions below
#   ALPINE=3.15.0 UPLOT=1.6.33 bash scripts/refresh-dashboard-assets.sh
#
# Each package's licence is copied beside it; commit the changed files under
# fleetml/dashboard/static/vendor/.
set -euo pipefail
ALPINE="${ALPINE:-3.17.5}"
UPLOT="${UPLOT:-1.6.32}"
cd "$(dirname "$0")/.."
out=fleetml/dashboard/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "alpinejs@$ALPINE" "uplot@$UPLOT" >/dev/null)
for tgz in "$work"/*.tgz; do
    name=$(basename "$tgz" .tgz)
    mkdir -p "$work/$name" && tar -xzf "$tgz" -C "$work/$name"
done
a="$work/alpinejs-$ALPINE/package"
u="$work/uplot-$UPLOT/package"
cp "$a/dist/cdn.min.js" "$out/alpine.min.js"
# alpinejs ships no LICENSE file in its npm package; its package.json says MIT, Caleb Porzio
# (https://github.com/alpinejs/alpine/blob/main/LICENSE.md). Write the MIT text with that holder.
author=$(node -e "console.log(require('$a/package.json').author)")
licence=$(node -e "console.log(require('$a/package.json').license)")
[ "$licence" = "MIT" ] || { echo "alpinejs is no longer MIT ($licence): review before vendoring" >&2; exit 1; }
sed -e "s/Leon Sorokin/$author and contributors/" -e "s/2022/2019-present/" "$u/LICENSE" > "$out/alpine.LICENSE"
cp "$u/dist/uPlot.iife.min.js" "$out/uPlot.iife.min.js"
cp "$u/dist/uPlot.min.css" "$out/uPlot.min.css"
cp "$u/LICENSE" "$out/uPlot.LICENSE"
printf '{"alpinejs": "%s", "uplot": "%s"}\n' "$ALPINE" "$UPLOT" > "$out/versions.json"
ls -l "$out"
