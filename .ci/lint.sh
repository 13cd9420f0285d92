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
