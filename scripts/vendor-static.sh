#!/bin/sh
# Vendor the dashboard's browser libraries into static/vendor/ (no CDN at run time).
# Fetches the exact versions below with `npm pack` (the npm registry, checked against the
# integrity npm records), and copies their dist files and licences. Run from anywhere:
#     scripts/vendor-static.sh
set -eu

HTMX_VERSION=2.0.11
UPLOT_VERSION=1.6.32
THREEDMOL_VERSION=2.5.5

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/static/vendor"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent "htmx.org@$HTMX_VERSION" "uplot@$UPLOT_VERSION" "3dmol@$THREEDMOL_VERSION" >/dev/null
mkdir htmx uplot 3dmol
tar -xzf "htmx.org-$HTMX_VERSION.tgz" -C htmx --strip-components=1
tar -xzf "uplot-$UPLOT_VERSION.tgz" -C uplot --strip-components=1
tar -xzf "3dmol-$THREEDMOL_VERSION.tgz" -C 3dmol --strip-components=1

mkdir -p "$DEST/htmx" "$DEST/uplot" "$DEST/3dmol"
cp htmx/dist/htmx.min.js htmx/LICENSE "$DEST/htmx/"
cp uplot/dist/uPlot.iife.min.js uplot/dist/uPlot.min.css uplot/LICENSE "$DEST/uplot/"
cp 3dmol/build/3Dmol-min.js 3dmol/build/3Dmol-min.js.LICENSE.txt 3dmol/LICENSE "$DEST/3dmol/"
echo "vendored htmx.org $HTMX_VERSION, uplot $UPLOT_VERSION and 3dmol $THREEDMOL_VERSION into $DEST"
