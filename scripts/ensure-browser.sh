#!/usr/bin/env bash
# Best effort: make Debian's chromium available for the admin page's browser test
# (tests/test_browser_admin.py drives it with Playwright). Never fails the build: without a
# browser that test is skipped with a message saying why.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-browser: installing Debian's chromium for the browser test" >&2
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; then
    echo "ensure-browser: could not install chromium; the browser test will be skipped" >&2
  fi
else
  echo "ensure-browser: /usr/bin/chromium missing and not root; the browser test will be skipped" >&2
fi
exit 0
