#!/usr/bin/env bash
# Installs the system packages the project needs from Debian's: Chromium for the browser tests
# (tests/ui), driven by the `playwright` Python package through executable_path (Playwright's own
# browser download is not used), and the Noto CJK font: without it Chinese text renders as boxes in
# screenshots, and PDF documents (engine/documents, which embeds it with fpdf2; checked with its CFF
# outlines) have no CJK glyphs (they fall back to a Latin font; see docs/operations.md).
# Idempotent: does nothing when both are present. Installs as root, or with `sudo -n` when that
# works; otherwise prints what to install and exits 0, so that `make test` still runs (the UI tests
# then skip, or fail when CRM_REQUIRE_BROWSER=1, as in CI).
set -uo pipefail

CHROMIUM=/usr/bin/chromium
PACKAGES=(chromium fonts-noto-cjk)

have_font() {
    if command -v fc-list >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
        return 0
    fi
    compgen -G "/usr/share/fonts/opentype/noto/NotoSansCJK*" >/dev/null
}

missing=()
[ -x "$CHROMIUM" ] || missing+=("$CHROMIUM")
have_font || missing+=("the Noto Sans CJK font")
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install_browser: the browser tests need the Debian packages ${PACKAGES[*]}; missing:" \
         "$(IFS=,; echo "${missing[*]}" | sed 's/,/, /g'). Not root and 'sudo -n' is not allowed here," \
         "so install them yourself:" >&2
    echo "    sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
    echo "install_browser: until then the UI tests are skipped (they fail when CRM_REQUIRE_BROWSER=1)." >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no apt-get here; install Chromium (as $CHROMIUM) and the Noto Sans CJK font" \
         "yourself. Until then the UI tests are skipped (they fail when CRM_REQUIRE_BROWSER=1)." >&2
    exit 0
fi

install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
}

echo "install_browser: installing ${PACKAGES[*]} from Debian's packages ..."
# `apt-get update` only when the package lists are missing or the install fails with the ones there.
status=0
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || ! install; then
    "${SUDO[@]}" apt-get update -q && install
    status=$?
fi
if [ $status -ne 0 ] || [ ! -x "$CHROMIUM" ]; then
    echo "install_browser: could not install ${PACKAGES[*]} (exit $status); the UI tests will be skipped" \
         "(or fail when CRM_REQUIRE_BROWSER=1)." >&2
fi
exit 0
