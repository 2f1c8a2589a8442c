// The dashboard in a real browser: runs recorded by `fedsilo run`, served by
// `fedsilo ui`, opened in Debian's headless chromium (driven by
// playwright-core). Asserts that the charts show the rounds and values the
// run store holds, that a run in progress updates on its own, that the
// compare view draws one line per run, and that the page asks nothing of any
// server but `fedsilo ui`.
//
//   node tests/e2e/dashboard.test.mjs [FEDSILO_BINARY]
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = process.argv[2] || process.env.FEDSILO_BINARY || join(root, "build", "fedsilo");
const workdir = mkdtempSync(join(tmpdir(), "fedsilo-dashboard-"));
const example = join(root, "examples", "digits.yaml");
const children = [];

function fedsilo(...args) {
  return execFileSync(binary, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
}
function lastJson(text) { return JSON.parse(text.trim().split("\n").pop()); }
function step(what) { console.log(`dashboard test: ${what}`); }

// Starts `fedsilo ui --port 0` and resolves with its URL.
function startUi() {
  const ui = spawn(binary, ["ui", "--workdir", workdir, "--port", "0"],
                   { stdio: ["ignore", "pipe", "inherit"] });
  children.push(ui);
  return new Promise((resolve, reject) => {
    let out = "";
    ui.stdout.on("data", chunk => {
      out += chunk;
      const m = out.match(/(http:\/\/127\.0\.0\.1:\d+\/)/);
      if (m) resolve(m[1]);
    });
    ui.on("exit", code => reject(new Error(`fedsilo ui exited with ${code}: ${out}`)));
    setTimeout(() => reject(new Error("fedsilo ui printed no URL within 20 s")), 20000);
  });
}

async function chartData(page, key) {
  await page.waitForSelector(`.chart[data-metric="${key}"]`, { timeout: 20000 });
  return page.evaluate(k => {
    const c = window.fedsilo.charts[k];
    return { xs: Array.from(c.data[0]), labels: c.series.slice(1).map(s => s.label),
             series: c.data.slice(1).map(a => Array.from(a)) };
  }, key);
}

let browser;
try {
  step("two finished runs");
  const a = lastJson(fedsilo("run", example, "--set", "training.rounds=4", "--set",
                             "experiment=e2e", "--quiet", "--json", "--workdir", workdir));
  const b = lastJson(fedsilo("run", example, "--set", "training.rounds=3", "--set",
                             "training.learning_rate=0.02", "--set", "experiment=e2e",
                             "--quiet", "--json", "--workdir", workdir));
  const stored = lastJson(fedsilo("runs", "show", a.run_id, "--json", "--workdir", workdir));

  const url = await startUi();
  step(`fedsilo ui at ${url}`);
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  // The page and uPlot are built into the binary: every request goes to it.
  const requests = [];
  page.on("request", r => requests.push(r.url()));

  step("experiments page lists both runs");
  await page.goto(url);
  await page.waitForSelector("body[data-ready='1']");
  for (const run of [a, b]) {
    assert.equal(await page.locator(`tr[data-run="${run.run_id}"]`).count(), 1, run.run_id);
  }

  step("run page: the chart shows the stored rounds and values");
  await page.goto(`${url}#/run/${a.run_id}`);
  const accuracy = await chartData(page, "test_accuracy");
  const storedRounds = stored.rounds.map(r => r.round);
  assert.deepEqual(accuracy.xs, storedRounds);
  assert.equal(accuracy.labels[0], "global");
  assert.deepEqual(accuracy.labels.slice(1), stored.silos.map(s => s.silo));
  const storedGlobal = stored.rounds.map(r => r.metrics["global/test_accuracy"]);
  accuracy.series[0].forEach((v, i) => assert.ok(Math.abs(v - storedGlobal[i]) < 1e-12, `round ${i + 1}`));
  assert.equal(await page.locator("table.silos tr").count(), stored.silos.length + 1);
  await page.screenshot({ path: join(workdir, "run.png"), fullPage: true });

  step("compare page: one line per run");
  await page.goto(`${url}#/compare/${a.run_id},${b.run_id}`);
  const compared = await chartData(page, "compare");
  assert.deepEqual(compared.labels, [a.run_id, b.run_id]);
  assert.deepEqual(compared.xs, [1, 2, 3, 4]);
  assert.equal(compared.series[1][3], null);  // run b has 3 rounds

  step("a run in progress updates on its own");
  const live = spawn(binary, ["run", example, "--set", "training.rounds=400", "--set",
                              "training.local_epochs=4", "--quiet", "--workdir", workdir],
                     { stdio: "ignore" });
  children.push(live);
  let liveRun;
  for (let i = 0; i < 200 && !liveRun; ++i) {
    const runs = lastJson(fedsilo("runs", "list", "--json", "--workdir", workdir));
    liveRun = runs.find(r => r.state === "running" && r.rounds_completed >= 1);
    if (!liveRun) await new Promise(r => setTimeout(r, 100));
  }
  assert.ok(liveRun, "the third run never showed a finished round");
  await page.goto(`${url}#/run/${liveRun.run_id}`);
  const first = (await chartData(page, "test_accuracy")).xs.length;
  await page.waitForFunction(n => window.fedsilo.charts.test_accuracy &&
                                  window.fedsilo.charts.test_accuracy.data[0].length > n,
                             first, { timeout: 30000 });
  const later = (await chartData(page, "test_accuracy")).xs.length;
  assert.ok(later > first, `rounds shown went from ${first} to ${later}`);

  assert.deepEqual(errors, [], "no script errors on the page");
  assert.ok(requests.some(u => u.startsWith(`${url}api/`)), `no API request among ${requests}`);
  assert.deepEqual(requests.filter(u => !u.startsWith(url)), [],
                   "requests to anywhere but fedsilo ui");
  step(`passed (screenshot ${join(workdir, "run.png")})`);
} catch (err) {
  console.error(`dashboard test FAILED: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  for (const c of children) c.kill("SIGTERM");
  if (process.exitCode !== 1) rmSync(workdir, { recursive: true, force: true });
}
