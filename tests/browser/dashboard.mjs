// Loads the dashboard of a running lookout host in headless Debian chromium, posts an event
// (with a secret in it) after the page has loaded, and checks that the WASM app renders it,
// sanitized, with no page or console errors. Saves a screenshot.
//
// usage: node dashboard.mjs <base-url> <screenshot.png>
// exit 0 on success; on failure prints why and exits 1.

import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node dashboard.mjs <base-url> <screenshot.png>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const problems = [];

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "lookout-chromium-")), {
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 800 },
});
try {
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  page.on("requestfailed", (r) => {
    // The live stream is cut when the page closes; anything else failing is a problem.
    if (!r.url().includes("/api/v1/events/stream")) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });

  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForSelector("#link.live", { timeout: 20000 });

  const marker = `browser-${Date.now()}`;
  const response = await fetch(base + "/api/v1/events", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify([{
      kind: "dashboard.check",
      severity: "warn",
      correlation_id: marker,
      fields: { marker, password: "hunter2-in-the-browser", note: "key AKIAIOSFODNN7EXAMPLE" },
    }]),
  });
  if (response.status !== 202) throw new Error(`POST /api/v1/events answered ${response.status}`);

  const row = page.locator("#events tr.event", { hasText: marker });
  await row.waitFor({ timeout: 20000 });
  const text = await row.innerText();
  if (!text.includes("dashboard.check")) problems.push(`row lacks its kind: ${text}`);
  if (!text.includes("[REDACTED")) problems.push(`row shows no redaction: ${text}`);
  const body = await page.locator("body").innerText();
  for (const secret of ["hunter2-in-the-browser", "AKIAIOSFODNN7EXAMPLE"]) {
    if (body.includes(secret)) problems.push(`secret on the page: ${secret}`);
  }
  const count = await page.locator('.card.kind[data-kind="dashboard.check"] .value').innerText();
  if (Number(count) < 1) problems.push(`kind counter shows ${count}`);
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  problems.push(String(e && e.stack || e));
} finally {
  await context.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("dashboard ok");
