// Drives the playground page in Debian's Chromium (tests/e2e/test_browser_e2e.py runs it inside
// the e2e network namespace). Usage:
//   node drive.mjs <page url> <microphone wav> <result json> <screenshot png> [<ready file>]
// With <ready file>, the call is resumed mid-way: once two turns are answered the file is
// written (the test then kills the agent's worker and another worker takes the call again), and
// the page must wait for the new agent, take its resume line as the next seq, then hang up.
// The page's own state (window.playground) is what is checked; every wait is bounded. The result
// file is written whatever happens (with `error` set on a failure), then the exit code says.
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, wav, resultPath, screenshotPath, readyPath] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

const result = { steps: [], console: [] };
const t0 = Date.now();
const step = (name) => result.steps.push({ name, at: (Date.now() - t0) / 1000 });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox", // as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking", // the machine's network is closed: no Google lookups
    "--disable-component-update",
    "--disable-sync",
    // host candidates as plain addresses: the stand-in cannot resolve mDNS names
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}%noloop`,
    "--autoplay-policy=no-user-gesture-required",
  ],
});

async function snapshot(page) {
  return page.evaluate(() => {
    const s = window.playground;
    return {
      turns: [...s.turns.values()].sort((a, b) => a.seq - b.seq),
      shownSeqs: [...document.querySelectorAll("#turns li")].map((li) => Number(li.dataset.seq)),
      gaps: s.gaps,
      end: s.end,
      endShown: document.getElementById("end").textContent,
      agentLeft: s.agentLeft,
      agentIdentity: s.agentIdentity,
      agentChanges: s.agentChanges,
      awayShown: s.awayShown || null,
      hangup: s.hangup,
      agentAudioSeconds: s.agentAudioSeconds,
      delivered: s.delivered,
      deliveredShown: document.getElementById("delivered").children.length,
      rejected: s.rejected,
      connection: document.getElementById("connection").textContent,
      agentState: document.getElementById("agent-state").textContent,
      error: document.getElementById("error").textContent,
    };
  });
}

let page;
let code = 0;
try {
  page = await browser.newPage();
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`.slice(0, 300)));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#scenario option").length > 0, null, {
    timeout: 10_000,
  });
  await page.click("#call");
  step("call");
  // the greeting: its turn (seq 1) and its sound
  await page.waitForFunction(
    () => window.playground.turns.has(1) && window.playground.agentAudioSeconds >= 0.3,
    null,
    { timeout: 45_000, polling: 100 },
  );
  step("greeting");
  // the microphone WAV speaks twice: two whole replies, the last turn one of them. Not "seq 5":
  // Chromium's noise suppression can split an utterance into two user turns (the reply between
  // them cut off), and then seq 5 is a user turn whose reply a hang-up would cut
  await page.waitForFunction(
    () => {
      const turns = [...window.playground.turns.values()].sort((a, b) => a.seq - b.seq);
      const whole = turns.filter((t) => t.seq > 1 && t.role === "assistant" && !t.interrupted);
      const last = turns[turns.length - 1];
      return whole.length >= 2 && last === whole[whole.length - 1];
    },
    null,
    { timeout: 60_000, polling: 100 },
  );
  step("two turns answered");
  if (readyPath) {
    // what the page shows while the agent is gone, recorded by the page itself
    await page.evaluate(() => {
      const shown = document.getElementById("agent-state");
      new MutationObserver(() => {
        if (shown.textContent.startsWith("away")) window.playground.awayShown = shown.textContent;
      }).observe(shown, { childList: true, characterData: true, subtree: true });
    });
    writeFileSync(readyPath, "two turns answered\n");
    // the agent is killed; another one joins and says the resume line, the next seq
    await page.waitForFunction(
      () => {
        const s = window.playground;
        return (
          s.agentChanges >= 1 &&
          [...s.turns.values()].some((t) => t.role === "assistant" && t.seq > s.agentChangedAtSeq)
        );
      },
      null,
      { timeout: 90_000, polling: 100 },
    );
    step("resumed");
    await page.waitForFunction(() => !document.getElementById("hangup").disabled, null, {
      timeout: 10_000,
      polling: 50,
    });
  }
  await page.click("#hangup");
  step("hang-up clicked");
  // the agent leaves; `end` is best effort (the test reports whether it came)
  await page.waitForFunction(() => window.playground.agentLeft, null, {
    timeout: 15_000,
    polling: 50,
  });
  step("agent gone");
  await page.waitForFunction(() => window.playground.delivered !== null, null, {
    timeout: 35_000,
    polling: 200,
  });
  step("delivered shown");
} catch (error) {
  result.error = String(error && error.message ? error.message : error).slice(0, 2000);
  code = 1;
} finally {
  if (page) {
    try {
      result.state = await snapshot(page);
      await page.screenshot({ path: screenshotPath, fullPage: true });
    } catch (error) {
      result.snapshotError = String(error);
    }
  }
  await browser.close();
  writeFileSync(resultPath, JSON.stringify(result, null, 2));
}
process.exit(code);
