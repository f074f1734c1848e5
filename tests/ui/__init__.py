"""Browser tests of the web UI: a live server of the app driven by Debian's Chromium via Playwright."""
