// Load the dashboard in headless chromium, check that the topology and the
// rates appear and then change, and save a screenshot.
// Usage: node dashboard.mjs URL SCREENSHOT.png  → prints a JSON report; exits 1 on failure.
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
});
const report = { ok: false };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await page.goto(url, { timeout: 15000 });
  await page.waitForSelector('[data-node="broker"]', { timeout: 15000 });
  const read = () => page.evaluate(() => ({
    nodes: [...document.querySelectorAll("[data-node]")].map(n => n.dataset.node),
    rates: [...document.querySelectorAll(".rate")].map(n => n.textContent),
    liveEdges: document.querySelectorAll(".edge.live").length,
    state: document.getElementById("state").textContent,
    updated: document.getElementById("updated").textContent,
    queues: [...document.querySelectorAll("#queues tbody tr")].map(r => r.innerText),
    sparklines: document.querySelectorAll("svg.spark polyline").length,
  }));
  const first = await read();
  // Rates need two snapshots; wait until an edge is live (traffic flows).
  await page.waitForFunction(() => document.querySelectorAll(".edge.live").length > 0, null, { timeout: 15000 });
  await page.waitForTimeout(1500);
  const later = await read();
  await page.screenshot({ path: shot, fullPage: true });
  report.first = first;
  report.later = later;
  report.ok = later.liveEdges > 0 && later.updated !== first.updated;
} catch (e) {
  report.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
