#!/usr/bin/env bash
# Make Debian's chromium available for the admin page's browser test
# (tests/test_browser_admin.py drives it with Playwright).
# Under CI (CI set) a browser is required: if it cannot be installed this exits non-zero and
# says why, so the suite never passes without opening the page. On a developer machine a
# missing browser is a warning, and the test is skipped saying why.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
fail() {
  echo "ensure-browser: $1" >&2
  if [ -n "${CI:-}" ]; then
    echo "ensure-browser: CI needs chromium for tests/test_browser_admin.py; stopping" >&2
    exit 1
  fi
  echo "ensure-browser: the browser test will be skipped" >&2
  exit 0
}
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  fail "/usr/bin/chromium is missing and this is not root with apt-get"
fi
echo "ensure-browser: installing Debian's chromium for the browser test" >&2
log=$(mktemp)
if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  fail "apt-get could not install chromium"
fi
rm -f "$log"
[ -x /usr/bin/chromium ] || fail "chromium installed but /usr/bin/chromium is not there"
exit 0
