// Watches the dashboard while the host restarts: it must come back by itself (no reload) and
// show the new host's data, live.
//
// usage: node reconnect.mjs <base-url>
// Prints "watching" once live; the caller then restarts the host on the same address.
// exit 0 when the page reconnected; otherwise prints why and exits 1.

import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const problems = [];
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "lookout-chromium-")), {
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  let loads = 0;
  page.on("load", () => { loads += 1; });
  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForSelector("#link.live", { timeout: 20000 });
  const pidsBefore = await page.locator(".worker").evaluateAll((w) => w.map((e) => e.dataset.worker));
  console.log("watching");
  // The new host's overviews arrive over the same page: the uptime shown starts again (it
  // drops below the highest seen). A short gap may show as "reconnecting" on the way.
  await page.waitForFunction(() => {
    const text = document.querySelector(".host .stat .value")?.textContent || "";
    const m = /^(\d+) s$/.exec(text);
    if (!m) return false;
    const now = Number(m[1]);
    window.__maxUptime = Math.max(window.__maxUptime || 0, now);
    return window.__maxUptime - now >= 2;
  }, null, { timeout: 60000, polling: 200 });
  await page.waitForSelector("#link.live", { timeout: 20000 });
  if (loads !== 1) problems.push(`the page reloaded (${loads} loads)`);
  if (pidsBefore.length === 0) problems.push("no workers were shown before the restart");
} catch (e) {
  problems.push(String(e && e.stack || e));
} finally {
  await context.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("reconnected");
