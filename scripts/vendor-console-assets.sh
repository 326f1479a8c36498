#!/bin/sh
# Refresh the console's vendored front-end assets (bayou/console/static/vendor/) from npm:
# uPlot (charts) and Pico CSS (accessible, responsive styles for semantic HTML).  The broker
# serves them from the package; nothing is loaded from a CDN at run time.
set -eu
UPLOT=1.6.32
PICO=2.1.1
dest="$(cd "$(dirname "$0")/.." && pwd)/bayou/console/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "uplot@$UPLOT" "@picocss/pico@$PICO" >/dev/null
mkdir uplot pico
tar -xzf "uplot-$UPLOT.tgz" -C uplot
tar -xzf "picocss-pico-$PICO.tgz" -C pico
cp uplot/package/dist/uPlot.iife.min.js uplot/package/dist/uPlot.min.css "$dest/"
cp uplot/package/LICENSE "$dest/uPlot.LICENSE"
cp pico/package/css/pico.min.css "$dest/"
cp pico/package/LICENSE.md "$dest/pico.LICENSE.md"
echo "uPlot $UPLOT, Pico CSS $PICO -> $dest"
