#!/usr/bin/env bash
# Lints what users copy: every Dockerfile (hadolint) and every Kubernetes manifest
# (kubernetes-validate --strict: unknown fields are errors). $1: the bin dir holding both tools.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: .ci/lint.sh BIN_DIR_WITH_HADOLINT_AND_KUBERNETES_VALIDATE}

mapfile -t dockerfiles < <(git ls-files 'Dockerfile' '*/Dockerfile' '*/Dockerfile.*')
echo "hadolint: ${dockerfiles[*]}"
"$bin/hadolint" "${dockerfiles[@]}"

mapfile -t manifests < <(git ls-files 'examples/*/k8s/*.yaml')
echo "kubernetes-validate --strict: ${manifests[*]}"
"$bin/kubernetes-validate" --strict "${manifests[@]}"

# The Dockerfile snippets in README.md, as users paste them (a placeholder digest stands in for
# `<index digest>`, which the reader fills in).
snippets=$(mktemp -d)
trap 'rm -rf "$snippets"' EXIT
python3 - README.md "$snippets" <<'PY'
import re, sys
readme, out = sys.argv[1], sys.argv[2]
blocks = re.findall(r"```dockerfile\n(.*?)```", open(readme).read(), re.S)
assert blocks, "README.md has no ```dockerfile block"
for i, block in enumerate(blocks, 1):
    open(f"{out}/README-{i}.Dockerfile", "w").write(block.replace("<index digest>", "0" * 64))
PY
echo "hadolint: the Dockerfile snippets of README.md"
# DL3061 (must begin with FROM): some snippets are the lines to add to a Dockerfile.
"$bin/hadolint" --ignore DL3061 "$snippets"/README-*.Dockerfile
