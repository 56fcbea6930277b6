// camrelay real-browser end-to-end test: headless Chromium with a fake camera and microphone drives
// the capture page and cast pages against a running server. run.sh builds and starts the server
// twice: plain HTTP for every scenario, and HTTPS with a self-signed certificate for one more.
//
//   node e2e.mjs http://127.0.0.1:PORT [https://127.0.0.1:PORT2 CERT.pem]
//                                             (or CAMRELAY_URL=..., CAMRELAY_TLS_URL=..., CAMRELAY_TLS_CERT=...)
//                                             without an https URL the HTTPS scenario is skipped (and says so)
//   CHROMIUM=/path/to/chromium                another browser binary (default /usr/bin/chromium)
//   MEASURE_MS=5000                           the bandwidth measurement window per codec
//   DOCS_SCREENSHOTS=1                        also refresh docs/screenshots/*.png (tracked files)
//   E2E_ONLY=REGEX                            only the checks whose title matches (while working on one)
//
// Every browser context is its own Chromium with its own fresh profile (launchPersistentContext),
// as two people on two machines would be. Prints one line per check, the measured bandwidth and
// latency per codec, and finally "N passed, M failed"; exits 1 when anything failed.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const OUT = path.join(HERE, 'output');
const DOCS = path.join(ROOT, 'docs/screenshots');
const BASE = (process.argv[2] || process.env.CAMRELAY_URL || '').replace(/\/$/, '');
const TLS_BASE = (process.argv[3] || process.env.CAMRELAY_TLS_URL || '').replace(/\/$/, '');
const TLS_CERT = process.argv[4] || process.env.CAMRELAY_TLS_CERT || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const MEASURE_MS = Number(process.env.MEASURE_MS || 5000);
const DOCS_SCREENSHOTS = process.env.DOCS_SCREENSHOTS === '1';
const ONLY = process.env.E2E_ONLY ? new RegExp(process.env.E2E_ONLY) : null;
// Set by run.sh when it could make a network namespace: the second-machine scenario.
const LAN = { url: process.env.CAMRELAY_LAN_URL || '', chromium: process.env.CAMRELAY_LAN_CHROMIUM || '',
  log: process.env.CAMRELAY_LAN_LOG || '', peer: process.env.CAMRELAY_LAN_PEER || '', cert: process.env.CAMRELAY_LAN_CERT || '' };
const TEST_TIMEOUT_MS = 60_000;

// What works headless as root (DEVELOPERS.md), plus the fake camera and microphone.
// No autoplay override: the test clicks "unmute" as a viewer would.
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
];
// Only for the browsers of the HTTPS scenario: they accept the server's self-signed certificate,
// as a person does once on the browser's warning page.
const INSECURE_CERTS = ['--ignore-certificate-errors'];
const DESKTOP = { width: 1000, height: 640 };
const PHONE = { width: 390, height: 780 };

const log = (...a) => console.log(...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = () => Math.random().toString(36).slice(2, 8);

// ---------------------------------------------------------------------------------------------
// Browsers: one Chromium per context, each with a fresh profile directory

const pageErrors = [];
const open = new Set();

async function newPage(label, viewport = DESKTOP, { insecureCerts = false, executablePath = CHROMIUM } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'camrelay-chromium-'));
  const args = insecureCerts ? [...ARGS, ...INSECURE_CERTS] : ARGS;
  let ctx;
  try {
    ctx = await chromium.launchPersistentContext(dir, { executablePath, headless: true, args, viewport });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const page = ctx.pages()[0] || await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') log(`  [${label} console] ${m.text()}`); });
  page.label = label;
  page.dir = dir;
  page.sockets = [];   // every WebSocket URL the page opened
  page.on('websocket', (ws) => page.sockets.push(ws.url()));
  open.add(page);
  return page;
}

async function closePage(page) {
  if (!page || !open.delete(page)) return;
  await page.context().close().catch(() => {});
  fs.rmSync(page.dir, { recursive: true, force: true });
}

/** Waits until fn(arg) is truthy in the page, or throws `what` with the page's stats after `ms`. */
async function waitFor(page, fn, arg, ms, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
  } catch {
    const s = await page.evaluate(() => window.castStats || window.captureStats || null).catch(() => null);
    throw new Error(`${what} (not within ${ms} ms) on ${page.label}; stats: ${JSON.stringify(s)}`);
  }
}

const castStats = (page) => page.evaluate(() => ({ ...window.castStats, timeline: undefined }));
const captureStats = (page) => page.evaluate(() => ({ ...window.captureStats }));

/** Samples the cast canvas: "blank" means (nearly) one flat colour. */
async function canvasPixels(page) {
  return page.evaluate(() => {
    const c = document.getElementById('screen');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0, sum = 0, sum2 = 0, min = 255, max = 0;
    for (let i = 0; i < d.length; i += 4 * 37) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      n++; sum += y; sum2 += y * y;
      if (y < min) min = y;
      if (y > max) max = y;
    }
    const mean = sum / n;
    return { width: c.width, height: c.height, mean: Math.round(mean), std: Math.round(Math.sqrt(Math.max(0, sum2 / n - mean * mean))), min: Math.round(min), max: Math.round(max) };
  });
}

async function assertPicture(page) {
  const p = await canvasPixels(page);
  if (!(p.std > 4 && p.max - p.min > 20)) throw new Error(`cast canvas looks blank: ${JSON.stringify(p)}`);
  return p;
}

/** GET a JSON API. Over https it trusts the server's own self-signed certificate and nothing else
 *  (Node checks the chain and that the certificate names 127.0.0.1), not "any certificate". */
async function getJson(url) {
  if (!url.startsWith('https:')) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url} answered ${r.status}`);
    return r.json();
  }
  // Each https server has its own self-signed certificate.
  const cert = LAN.url && url.startsWith(LAN.url) ? LAN.cert : TLS_CERT;
  if (!cert) throw new Error(`no certificate given to check ${url} against`);
  const ca = fs.readFileSync(cert);
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${url} answered ${res.statusCode}`));
        try { resolve(JSON.parse(body)); } catch (e) { reject(new Error(`${url}: ${e.message}`)); }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within 5 s`)));
    req.on('error', reject);
  });
}

async function streamsByName(base = BASE) {
  return new Map((await getJson(`${base}/api/streams`)).map((s) => [s.name, s]));
}

async function screenshot(page, file, opts = {}) {
  await page.screenshot({ path: path.join(OUT, file), ...opts });
  if (opts.docs && DOCS_SCREENSHOTS) {
    fs.mkdirSync(DOCS, { recursive: true });
    fs.copyFileSync(path.join(OUT, file), path.join(DOCS, opts.docs));
  }
}
const docShot = (page, file, docs, extra = {}) => screenshot(page, file, { docs, ...extra });

// ---------------------------------------------------------------------------------------------
// Steps

/** Opens the capture page with ?autostart=1 and waits until it sends frames. */
async function goLive(cap, name, extra = '', base = BASE) {
  await cap.goto(`${base}/capture?autostart=1&name=${name}${extra}`);
  await waitFor(cap, () => window.captureStats.state === 'live' && window.captureStats.framesSent > 0, null, 15_000,
    'capture page did not go live');
  const s = await streamsByName(base);
  if (!s.has(name)) throw new Error(`${name} is live on the capture page but missing from /api/streams`);
  return Date.now();
}

/** The cast page plays: picture not blank, frames shown and (after "unmute") audio chunks played keep rising. */
async function assertPlaying(cast, { audio = true } = {}) {
  await waitFor(cast, () => window.castStats.framesShown >= 5, null, 15_000, 'cast page shows no frames');
  await assertPicture(cast);
  if (audio) {
    // Audio starts muted (autoplay policy); a viewer clicks the button.
    await cast.locator('#unmute').click({ timeout: 10_000 });
    await waitFor(cast, () => !window.castStats.muted && window.castStats.audioChunksPlayed >= 10, null, 10_000,
      'cast page plays no audio after "unmute"');
  }
  const s1 = await castStats(cast);
  await waitFor(cast, ([f, a, d, withAudio]) => window.castStats.framesShown >= f + 20 && window.castStats.framesDecoded >= d + 20
    && (!withAudio || window.castStats.audioChunksPlayed >= a + 25),
  [s1.framesShown, s1.audioChunksPlayed, s1.framesDecoded, audio], 10_000, 'cast counters stopped rising');
  return assertPicture(cast);
}

/** Bytes in at the server over a window, the capture page's own split and sent kbps, the cast's latency. */
async function measure(name, cap, cast, base = BASE) {
  const s0 = (await streamsByName(base)).get(name);
  const c0 = await captureStats(cap);
  const t0 = performance.now();
  const lat = [], kbps = [];
  while (performance.now() - t0 < MEASURE_MS) {   // a measurement window, not a wait for a condition
    await sleep(250);
    const [s, c] = [await castStats(cast), await captureStats(cap)];
    if (s.latencyMs !== null) lat.push(s.latencyMs);
    kbps.push(c.kbps);
  }
  const secs = (performance.now() - t0) / 1000;
  const s1 = (await streamsByName(base)).get(name);
  const c1 = await captureStats(cap);
  const cs = await castStats(cast);
  if (!s0 || !s1) throw new Error(`stream ${name} missing from /api/streams`);
  const median = (a) => { const b = [...a].sort((x, y) => x - y); return b.length ? b[Math.floor(b.length / 2)] : null; };
  return {
    codec: `${c1.codec}+${c1.audioCodec}`,
    size: `${c1.width}x${c1.height}`,
    fps: c1.fps,
    seconds: Math.round(secs * 10) / 10,
    serverBytesPerSec: Math.round((s1.bytes_in - s0.bytes_in) / secs),
    videoBytesPerSec: Math.round((c1.videoBytesSent - c0.videoBytesSent) / secs),
    audioBytesPerSec: Math.round((c1.audioBytesSent - c0.audioBytesSent) / secs),
    captureKbpsMedian: median(kbps),
    latencyMedianMs: median(lat),
    latencyMaxMs: lat.length ? Math.max(...lat) : null,
    castFps: cs.fps,
    syncMode: cs.syncMode,
    transportMs: cs.transportMs,
    decodeMs: cs.decodeMs,
    videoBehindAudioMs: cs.avOffsetMs,
    audioTargetMs: cs.audioTargetMs,
    framesDropped: cs.framesDropped,
    framesLate: cs.framesLate,
    captureFramesDropped: c1.framesDropped,
  };
}

const figures = [];

// ---------------------------------------------------------------------------------------------
// Scenarios

/** Capture with a codec, a cast page in a second browser: it plays; measure bandwidth and latency. */
async function playScenario(label, query, expect, opts = {}) {
  const name = `e2e-${label}-${rand()}`;
  const base = opts.base || BASE;
  const browser = { insecureCerts: !!opts.insecureCerts };
  const [cap, cast] = await Promise.all([newPage(`capture ${label}`, DESKTOP, browser), newPage(`cast ${label}`, DESKTOP, browser)]);
  try {
    if (opts.captureInit) await cap.addInitScript(opts.captureInit);
    await goLive(cap, name, query, base);
    const cs = await captureStats(cap);
    if (!cs.codec.startsWith(expect.video)) throw new Error(`capture uses ${cs.codec}, expected ${expect.video}`);
    if (cs.audioCodec !== expect.audio) throw new Error(`capture audio is ${cs.audioCodec}, expected ${expect.audio}`);
    await cast.goto(`${base}/cast/${name}${opts.docs ? '?stats=1' : ''}`);
    const pix = await assertPlaying(cast);
    const secure = opts.tls ? await assertSecure(base, name, cap, cast) : '';
    const fig = { label, ...(await measure(name, cap, cast, base)) };
    figures.push(fig);
    // A sanity bound, far above the ~300 ms catch-up point: a broken clock or runaway buffer fails here.
    if (!(fig.latencyMedianMs > 0 && fig.latencyMedianMs < 1000)) throw new Error(`implausible latency: ${JSON.stringify(fig)}`);
    await screenshot(cast, `cast-${label}.png`);
    if (opts.docs) {
      await docShot(cast, 'cast.png', 'cast.png');
      await docShot(cap, 'capture.png', 'capture.png', { fullPage: true });
      await homeShots(name);
    }
    const s = await castStats(cast);
    return `${s.videoCodec}+${s.audioCodec} ${pix.width}x${pix.height}: shown ${s.framesShown}, decoded ${s.framesDecoded}, ` +
      `audio played ${s.audioChunksPlayed}, sync ${s.syncMode}, latency ${s.latencyMs} ms${secure}`;
  } finally {
    await Promise.all([closePage(cast), closePage(cap)]);
  }
}

/** Over https: the server says tls, both pages are secure contexts, the share link is https:// on the
 *  server's public address, and every WebSocket the pages opened is wss:// to the page's own host. */
async function assertSecure(base, name, cap, cast) {
  const info = await getJson(`${base}/api/info`);
  if (info.tls !== true) throw new Error(`/api/info over https says ${JSON.stringify(info)}`);
  for (const page of [cap, cast]) {
    const loc = await page.evaluate(() => ({ protocol: location.protocol, secure: window.isSecureContext }));
    if (loc.protocol !== 'https:' || !loc.secure) throw new Error(`${page.label} is not a secure https page: ${JSON.stringify(loc)}`);
  }
  const link = `https://${info.public_address}/cast/${name}`;
  await waitFor(cap, (l) => document.getElementById('share').value === l, link, 5000, `capture page's share link is not ${link}`);
  const wss = base.replace(/^https:/, 'wss:');
  for (const [page, want] of [[cap, `${wss}/ws/publish/${name}`], [cast, `${wss}/ws/watch/${name}`]]) {
    if (!page.sockets.length || page.sockets.some((u) => u !== want)) {
      throw new Error(`${page.label} opened WebSockets ${JSON.stringify(page.sockets)}, expected only ${want}`);
    }
  }
  return `; share link ${link}, WebSockets ${cap.sockets[0]} and ${cast.sockets[0]}`;
}

/** The home page lists the stream, at desktop and at phone width. */
async function homeShots(name) {
  for (const [vp, file] of [[DESKTOP, 'home.png'], [PHONE, 'home-phone.png']]) {
    const home = await newPage(`home ${vp.width}px`, vp);
    try {
      await home.goto(`${BASE}/`);
      await waitFor(home, (n) => [...document.querySelectorAll('.stream-card .name')].some((e) => e.textContent === n), name,
        10_000, 'home page does not list the live stream');
      await docShot(home, file, file, vp === PHONE ? { fullPage: true } : {});
    } finally { await closePage(home); }
  }
}

/** A cast page opened 3 s after the broadcast started shows a picture within 1 s. */
async function lateJoiner() {
  const name = `e2e-late-${rand()}`;
  // The viewer's browser starts alongside the broadcast, so "opened" below means navigation.
  const [cap, cast] = await Promise.all([newPage('capture late'), newPage('cast late')]);
  try {
    const liveAt = await goLive(cap, name);
    await sleep(Math.max(0, 3000 - (Date.now() - liveAt)));   // the scenario itself: arrive 3 s in
    await cast.goto(`${BASE}/cast/${name}`);
    await waitFor(cast, () => window.castStats.framesShown >= 1, null, 5000, 'late joiner shows no picture');
    await assertPicture(cast);
    const s = await castStats(cast);
    // firstFrameAt is performance.now() at the first drawn frame: ms since this navigation started.
    if (s.firstFrameAt > 1000) throw new Error(`first picture ${s.firstFrameAt} ms after opening (> 1000 ms)`);
    await screenshot(cast, 'cast-late-joiner.png');
    return `first picture ${s.firstFrameAt} ms after opening the page (joined ${((Date.now() - liveAt) / 1000).toFixed(1)} s into the broadcast)`;
  } finally {
    await Promise.all([closePage(cast), closePage(cap)]);
  }
}

/** A cast page opened before the broadcast waits, then plays when it starts (no reload). */
async function castBeforePublisher() {
  const name = `e2e-early-${rand()}`;
  const [cap, cast] = await Promise.all([newPage('capture early'), newPage('cast early')]);
  try {
    await cast.goto(`${BASE}/cast/${name}`);
    await waitFor(cast, () => window.castStats.state === 'open' && !window.castStats.live
      && !document.getElementById('waiting').hidden, null, 10_000, 'cast page is not waiting for the broadcaster');
    await screenshot(cast, 'cast-waiting.png');
    await goLive(cap, name);
    await assertPlaying(cast);
    const s = await castStats(cast);
    if (s.reconnects !== 0) throw new Error(`cast page reconnected ${s.reconnects} times instead of staying connected`);
    return `played when the broadcaster came: shown ${s.framesShown}, audio played ${s.audioChunksPlayed}`;
  } finally {
    await Promise.all([closePage(cast), closePage(cap)]);
  }
}

/** What Chrome does to a background tab: `document.hidden`, page timers woken at most once a second,
 *  `requestAnimationFrame` stopped. Headless Chromium keeps every tab visible, so the test imposes
 *  it (before any page script runs) and counts a 50 ms sentinel timer to prove it is in force. */
function backgroundTab() {
  Object.defineProperty(Document.prototype, 'hidden', { get: () => true });
  Object.defineProperty(Document.prototype, 'visibilityState', { get: () => 'hidden' });
  window.requestAnimationFrame = () => 0;
  const [setT, setI] = [window.setTimeout, window.setInterval];
  window.setTimeout = (f, ms, ...a) => setT(f, Math.max(1000, ms || 0), ...a);
  window.setInterval = (f, ms, ...a) => setI(f, Math.max(1000, ms || 0), ...a);
  window.sentinelTicks = 0;
  window.setInterval(() => { window.sentinelTicks++; }, 50);
}

/** Capture (on its Worker-timer path, as in Firefox) and cast both in background tabs: frames keep
 *  coming at the camera's rate, not at the once-a-second rate of the page's own timers. */
async function backgroundTabs() {
  const name = `e2e-background-${rand()}`;
  const [cap, cast] = await Promise.all([newPage('capture background'), newPage('cast background')]);
  try {
    await cap.addInitScript(() => { delete window.MediaStreamTrackProcessor; });
    await cap.addInitScript(backgroundTab);
    await cast.addInitScript(backgroundTab);
    await goLive(cap, name, '&codec=jpeg');
    await cast.goto(`${BASE}/cast/${name}`);
    await waitFor(cast, () => window.castStats.framesShown >= 1, null, 15_000, 'cast page shows no frames');
    const [c0, s0] = [await captureStats(cap), await castStats(cast)];
    const ticks0 = await Promise.all([cap, cast].map((p) => p.evaluate(() => window.sentinelTicks)));
    // A throttled loop would manage 4 frames in 4 s; the fake camera gives about 20 a second.
    await waitFor(cap, (n) => window.captureStats.framesSent >= n, c0.framesSent + 30, 4000, 'capture page slowed down in the background');
    await waitFor(cast, (n) => window.castStats.framesShown >= n, s0.framesShown + 30, 4000, 'cast page slowed down in the background');
    const ticks = await Promise.all([cap, cast].map((p, i) => p.evaluate(() => window.sentinelTicks).then((t) => t - ticks0[i])));
    const hidden = await cast.evaluate(() => document.hidden);
    // Both waits took at most 8 s: a 50 ms timer would have ticked 160 times unthrottled.
    if (!hidden || ticks.some((t) => t > 10)) throw new Error(`background emulation not in force: hidden ${hidden}, sentinel ticks ${ticks}`);
    await assertPicture(cast);
    const [c1, s1] = [await captureStats(cap), await castStats(cast)];
    return `in hidden tabs with page timers at 1/s (sentinel ticked ${ticks.join(' and ')} times): capture sent ` +
      `${c1.framesSent - c0.framesSent} frames, cast showed ${s1.framesShown - s0.framesShown}`;
  } finally {
    await Promise.all([closePage(cast), closePage(cap)]);
  }
}

/** Issue 6: a second machine on the LAN broadcasts over https. run.sh puts its Chromium in a network
 *  namespace joined by a veth pair, so it reaches the server only at the LAN address, as a phone
 *  would; a viewer on this machine plays the stream. The server's log names the publisher's address. */
async function secondMachine() {
  const name = `e2e-lan-${rand()}`;
  const lan = { insecureCerts: true, executablePath: LAN.chromium };
  const [cap, cast] = await Promise.all([newPage('capture on the LAN host', DESKTOP, lan), newPage('cast LAN', DESKTOP, { insecureCerts: true })]);
  try {
    await goLive(cap, name, '', LAN.url);
    const loc = await cap.evaluate(() => ({ host: location.host, secure: window.isSecureContext, camera: !!navigator.mediaDevices }));
    if (loc.host !== new URL(LAN.url).host || !loc.secure || !loc.camera) throw new Error(`capture page on the LAN host: ${JSON.stringify(loc)}`);
    const from = new RegExp(`${LAN.peer.replace(/\./g, '\\.')}:\\d+: publisher /ws/publish/${name}`);
    if (!from.test(fs.readFileSync(LAN.log, 'utf8'))) throw new Error(`the server log shows no publisher of ${name} from ${LAN.peer}`);
    await cast.goto(`${LAN.url}/cast/${name}`);
    const pix = await assertPlaying(cast);
    const s = await castStats(cast);
    return `capture at ${LAN.url} from ${LAN.peer} (secure context), cast shows ${pix.width}x${pix.height}: shown ${s.framesShown}, audio played ${s.audioChunksPlayed}`;
  } finally {
    await Promise.all([closePage(cast), closePage(cap)]);
  }
}

/** A raw WebSocket publisher (no browser) holding a stream name; resolves once the server said 101. */
function holdName(name) {
  return new Promise((resolve, reject) => {
    const url = new URL(BASE);
    const sock = net.connect(Number(url.port), url.hostname, () => {
      sock.write(`GET /ws/publish/${name} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    });
    sock.once('data', (d) => (d.toString().startsWith('HTTP/1.1 101') ? resolve(sock) : reject(new Error(`publisher refused: ${d}`))));
    sock.once('error', reject);
  });
}

/** The capture page says why it cannot broadcast when the name is taken (the server's 409). */
async function nameTaken() {
  const name = `e2e-taken-${rand()}`;
  const holder = await holdName(name);
  const cap = await newPage('capture taken');
  try {
    await cap.goto(`${BASE}/capture?autostart=1&name=${name}`);
    await waitFor(cap, () => window.captureStats.lastError === 'name-taken', null, 15_000, 'capture page did not report the taken name');
    const text = await cap.locator('#error').innerText();
    if (!text.includes('already live') || !(await cap.locator('#error').isVisible())) throw new Error(`error shown: ${text}`);
    const s = await captureStats(cap);
    if (s.state === 'live' || s.framesSent > 0) throw new Error(`capture page went live anyway: ${JSON.stringify(s)}`);
    return `shows “${text.trim()}”`;
  } finally {
    holder.destroy();
    await closePage(cap);
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  if (!BASE) throw new Error('usage: node e2e.mjs http://127.0.0.1:PORT (run.sh starts the server)');
  fs.mkdirSync(OUT, { recursive: true });
  for (const f of fs.readdirSync(OUT)) if (f.endsWith('.png')) fs.rmSync(path.join(OUT, f));   // this run's only
  const info = await getJson(`${BASE}/api/info`);
  log(`server: ${BASE} (camrelay ${info.version})${TLS_BASE ? ` and ${TLS_BASE} (self-signed)` : ''}; browser: ${CHROMIUM}`);
  const started = performance.now();

  const tests = [
    ['default codecs (VP8 + Opus) play on a cast page', () => playScenario('vp8', '', { video: 'vp8', audio: 'opus' }, { docs: true })],
    ['?codec=jpeg plays on a cast page', () => playScenario('jpeg', '&codec=jpeg', { video: 'jpeg', audio: 'opus' })],
    ['a late joiner (3 s after the start) shows a picture within 1 s', lateJoiner],
    ['a cast page opened before the broadcast plays when it starts', castBeforePublisher],
    ['?codec=h264 plays on a cast page', () => playScenario('h264', '&codec=h264', { video: 'avc1', audio: 'opus' })],
    ['without WebCodecs and MediaStreamTrackProcessor (JPEG on a Worker timer + PCM) it plays', () => playScenario(
      'fallback', '', { video: 'jpeg', audio: 'pcm-s16' },
      { captureInit: () => { delete window.VideoEncoder; delete window.AudioEncoder; delete window.MediaStreamTrackProcessor; } })],
    ['capture and cast keep their frame rate in background tabs (page timers throttled, no rAF)', backgroundTabs],
    ['the capture page says when the name is already live (409)', nameTaken],
  ];
  if (TLS_BASE) {
    tests.push(['over https:// with a self-signed certificate (--ignore-certificate-errors), default codecs play via wss://',
      () => playScenario('https', '', { video: 'vp8', audio: 'opus' }, { base: TLS_BASE, tls: true, insecureCerts: true })]);
  } else {
    log('SKIP the https scenario: no https URL given (run.sh starts an https server)');
  }
  if (LAN.url) {
    tests.push(['a second machine on the LAN (a network namespace) broadcasts over https, a viewer plays it', secondMachine]);
  } else {
    log('SKIP the second-machine scenario: no network namespace (run.sh makes one when it runs as root)');
  }
  let passed = 0, failed = 0;
  for (const [title, fn] of tests.filter(([t]) => !ONLY || ONLY.test(t))) {
    const before = pageErrors.length;
    const t0 = performance.now();
    let timer;
    try {
      const note = await Promise.race([fn(), new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${TEST_TIMEOUT_MS} ms`)), TEST_TIMEOUT_MS); })]);
      if (pageErrors.length > before) throw new Error('uncaught page errors: ' + pageErrors.slice(before).join(' | '));
      passed++;
      log(`PASS ${title} (${((performance.now() - t0) / 1000).toFixed(1)} s): ${note}`);
    } catch (e) {
      failed++;
      log(`FAIL ${title} (${((performance.now() - t0) / 1000).toFixed(1)} s): ${e.message}`);
      for (const p of [...open]) await closePage(p);
    } finally { clearTimeout(timer); }
  }

  log('');
  log(`Bandwidth of the 640x480 fake-camera stream: the server's /api/streams bytes_in over ${MEASURE_MS / 1000} s;`);
  log('latency: the cast page\'s estimate (capture timestamp to picture on screen), median and max of 4 samples/s.');
  const kB = (b) => `${(b / 1000).toFixed(1)} kB/s`;
  for (const f of figures) {
    log(`  ${f.label.padEnd(9)} ${f.codec.padEnd(22)} ${f.size} @ ${String(f.fps).padStart(4)} fps: ${kB(f.serverBytesPerSec).padStart(11)} ` +
      `(video ${kB(f.videoBytesPerSec)}, audio ${kB(f.audioBytesPerSec)}; capture page says ${f.captureKbpsMedian} kbps), ` +
      `latency ${f.latencyMedianMs} ms (max ${f.latencyMaxMs}; to arrival ${f.transportMs} ms)`);
  }
  fs.writeFileSync(path.join(OUT, 'figures.json'), JSON.stringify(figures, null, 2) + '\n');
  log(`browser run: ${((performance.now() - started) / 1000).toFixed(1)} s; screenshots in ${path.relative(ROOT, OUT)}/` +
    (DOCS_SCREENSHOTS ? ' and docs/screenshots/' : ''));
  log(`${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then((code) => { process.exitCode = code; }, async (e) => {
  console.error('e2e: ' + (e.stack || e));
  for (const p of [...open]) await closePage(p);
  log('0 passed, 1 failed');
  process.exitCode = 1;
});
