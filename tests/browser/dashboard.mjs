// Drives the dashboard of a running lookout host in headless Debian chromium, with real
// workers and traffic, and checks what a person would see:
//  - the pool card shows the right number of workers, and changes when one is killed;
//  - a failing command's errors appear as one row with their count, the latest traceback
//    behind a click;
//  - saturating the pool turns the health indicator, and it turns back;
//  - swapping a plugin shows its new version;
//  - an event posted after load appears in the tap, sanitized; no secret anywhere on the page;
//  - no page or console errors; phone width and both colour schemes render.
// Saves screenshots and prints one JSON line of measurements (first render time).
//
// usage: node dashboard.mjs <base-url> <screenshot-dir> <redact.wasm>
// exit 0 on success; on failure prints why and exits 1.

import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, shots, redactWasm] = process.argv.slice(2);
if (!base || !shots || !redactWasm) {
  console.error("usage: node dashboard.mjs <base-url> <screenshot-dir> <redact.wasm>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const problems = [];
const measured = {};

const api = async (path, init) => {
  const response = await fetch(base + path, init);
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: response.status, body };
};
const execute = (body) => api("/api/v1/pools/demo/execute", {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
});

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "lookout-chromium-")), {
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 900 },
});
try {
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  page.on("requestfailed", (r) => {
    // Live streams are cut when the page closes; anything else failing is a problem.
    if (!r.url().includes("/stream")) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });

  // First render: from navigation to the first pool card on screen.
  await page.goto(base + "/", { waitUntil: "commit" });
  await page.waitForSelector('.pool-card[data-pool="demo"]', { timeout: 20000 });
  measured.first_render_ms = await page.evaluate(() => performance.now());
  await page.waitForSelector("#link.live", { timeout: 20000 });

  // Two workers on the card once both are up.
  const workers = page.locator('.pool-card[data-pool="demo"] .worker');
  await page.waitForFunction(() =>
    document.querySelectorAll('.pool-card[data-pool="demo"] .worker.available, .pool-card[data-pool="demo"] .worker.busy').length === 2,
    null, { timeout: 20000 });
  if (await workers.count() !== 2) problems.push(`pool card shows ${await workers.count()} workers`);
  await page.waitForSelector("#health.ok", { timeout: 20000 });

  // Kill a worker: its chip goes, a new one comes.
  const pool = await api("/api/v1/pools/demo");
  const victim = pool.body.workers[0];
  process.kill(victim.pid, "SIGKILL");
  await page.waitForFunction((id) =>
    !document.querySelector(`.pool-card[data-pool="demo"] .worker[data-worker="${id}"]`),
    victim.id, { timeout: 20000 });
  await page.waitForFunction(() =>
    document.querySelectorAll('.pool-card[data-pool="demo"] .worker.available').length === 2,
    null, { timeout: 20000 });

  // A failing command, three times: one row with the count, the latest traceback behind a click.
  const marker = `browser-${Date.now()}`;
  for (const n of [1, 2, 3]) {
    const failed = await execute({ command: "fail", args: { message: `${marker}-${n} password=hunter2-in-the-browser` } });
    if (failed.status !== 500) problems.push(`fail answered ${failed.status}`);
  }
  const row = page.locator("#errors tr.error", { hasText: `${marker}-3` });
  await row.waitFor({ timeout: 20000 });
  if (await row.getAttribute("data-count") !== "3") problems.push(`the error row counts ${await row.getAttribute("data-count")}, not 3`);
  const rows = await page.locator("#errors tr.error", { hasText: "ValueError" }).count();
  if (rows !== 1) problems.push(`${rows} rows for one failing command`);
  await row.locator("summary").click();
  const traceback = await row.locator("pre.traceback").innerText();
  if (!traceback.includes("raise ValueError(message)")) problems.push(`traceback not shown: ${traceback}`);
  await page.screenshot({ path: join(shots, "dashboard.png"), fullPage: true });

  // Saturate the pool: more waiting than its max_queue_length; the indicator turns and back.
  const load = Array.from({ length: 8 }, () => execute({ command: "sleep", args: { seconds: 0.8 } }));
  await page.waitForSelector("#health.not_ready", { timeout: 20000 });
  const failing = await page.locator("#failing").innerText();
  if (!failing.includes("queue_length")) problems.push(`failing checks do not name the queue: ${failing}`);
  await page.screenshot({ path: join(shots, "dashboard-not-ready.png"), fullPage: false });
  await Promise.all(load);
  await page.waitForSelector("#health.ok", { timeout: 30000 });

  // Swap the sanitizer in again: its row shows the new version.
  const before = await page.locator('#plugins tr[data-plugin="redact"] .plugin-version').innerText();
  const form = new FormData();
  form.append("manifest", new Blob(['name = "redact"\nworld = "sanitizer"\nversion = "9.9.9"\n']), "redact.toml");
  form.append("wasm", new Blob([readFileSync(redactWasm)]), "redact.wasm");
  const swapped = await api("/api/v1/plugins/redact", { method: "PUT", body: form });
  if (swapped.status !== 200) problems.push(`swap answered ${swapped.status}: ${JSON.stringify(swapped.body)}`);
  await page.waitForFunction(() =>
    (document.querySelector('#plugins tr[data-plugin="redact"] .plugin-version')?.textContent || "").includes("9.9.9"),
    null, { timeout: 20000 });
  const after = await page.locator('#plugins tr[data-plugin="redact"] .plugin-version').innerText();
  if (before === after) problems.push(`plugin version did not change: ${after}`);

  // The tap: an event posted now appears, sanitized; the filter narrows it down.
  await page.fill("#tap-correlation", marker);
  const posted = await api("/api/v1/events", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify([{ kind: "dashboard.check", severity: "warn", correlation_id: marker,
      fields: { marker, password: "hunter2-in-the-browser", note: "key AKIAIOSFODNN7EXAMPLE" } }]),
  });
  if (posted.status !== 202) problems.push(`POST /api/v1/events answered ${posted.status}`);
  const tapped = page.locator("#events tr.event", { hasText: "dashboard.check" });
  await tapped.waitFor({ timeout: 20000 });
  const tapText = await tapped.innerText();
  if (!tapText.includes("[REDACTED")) problems.push(`tap row shows no redaction: ${tapText}`);
  const visible = await page.locator("#events tr.event").count();
  const matching = await page.locator("#events tr.event", { hasText: marker }).count();
  if (visible !== matching) problems.push(`the correlation filter shows ${visible} rows, ${matching} match`);
  // The host selector: this host's events show under "this host" and carry its name.
  const hostCell = await tapped.locator("td.host").innerText();
  if (hostCell !== "this host") problems.push(`the tap's host column says ${hostCell}`);
  await page.selectOption("#tap-host", "this host");
  if (await page.locator("#events tr.event", { hasText: marker }).count() !== 1)
    problems.push("choosing this host hid its own event");
  await page.selectOption("#tap-host", "");

  const body = await page.locator("body").innerText();
  for (const secret of ["hunter2-in-the-browser", "AKIAIOSFODNN7EXAMPLE"]) {
    if (body.includes(secret)) problems.push(`secret on the page: ${secret}`);
  }

  // A phone, and the other colour scheme.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: join(shots, "dashboard-phone-dark.png"), fullPage: false });
  const overflow = await page.evaluate(() => document.querySelector(".pools").scrollWidth > window.innerWidth + 1);
  if (overflow) problems.push("the pool cards overflow a phone's width");
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.screenshot({ path: join(shots, "dashboard-light.png"), fullPage: false });
} catch (e) {
  problems.push(String(e && e.stack || e));
} finally {
  await context.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify(measured));
