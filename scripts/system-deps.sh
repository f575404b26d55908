#!/bin/sh
# Debian packages the test suite reads our output with (go tool pprof,
# chromium, npm) and drives the CLI in (tmux).
# Installs only what is missing; needs root (or sudo) the first time.
set -eu

need=""
command -v go >/dev/null 2>&1 || need="$need golang-go"
# headless browser for the HTML flame graph and speedscope tests (Playwright
# drives this binary; no browser is ever downloaded) and npm for speedscope
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v npm >/dev/null 2>&1 || need="$need npm"
# the HTTP endpoint's tests fetch profiles with curl
command -v curl >/dev/null 2>&1 || need="$need curl"
# `pysampler top URL` is driven in a real terminal
command -v tmux >/dev/null 2>&1 || need="$need tmux"

if [ -n "$need" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian packages:$need" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi
