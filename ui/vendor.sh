#!/bin/sh
# Copy the pinned front-end libraries (package-lock.json) into the package's static files, each with
# its licence, and list them in MANIFEST.tsv. `make ui` runs it after `npm ci`; the copied files are
# committed, so installing or running profstore needs no Node.js.
set -eu
cd "$(dirname "$0")"
out=../service/ui/static/vendor
rm -rf "$out"
mkdir -p "$out"
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css "$out/"
cp node_modules/uplot/LICENSE "$out/uPlot.LICENSE"
version=$(node -p "require('./node_modules/uplot/package.json').version")
licence=$(node -p "require('./node_modules/uplot/package.json').license")
printf 'file\tlibrary\tversion\tlicence\tsource\n' > "$out/MANIFEST.tsv"
for f in uPlot.iife.min.js uPlot.min.css uPlot.LICENSE; do
  printf '%s\tuplot\t%s\t%s\thttps://github.com/leeoniya/uPlot (npm: uplot)\n' "$f" "$version" "$licence" >> "$out/MANIFEST.tsv"
done
