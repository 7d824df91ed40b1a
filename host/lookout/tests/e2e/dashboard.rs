//! The dashboard in a real browser (headless Debian chromium driven by playwright-core).

use crate::default_host;

/// The page loads, the WASM app connects to the live stream, and an event posted after the
/// page loaded appears in the list — redacted — with no page or console errors.
#[test]
fn dashboard_renders_an_event_posted_after_it_loaded() {
    let host = default_host();
    let screenshot = lookout_testkit::check_dashboard_in_browser(&host).unwrap();
    let size = std::fs::metadata(&screenshot).unwrap().len();
    assert!(
        size > 1000,
        "screenshot {} is only {size} bytes",
        screenshot.display()
    );
}
