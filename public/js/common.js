// camrelay: helpers shared by the pages: the media envelope, URLs, clocks and formatting.

/** Message kinds: byte 0 of every binary message (see docs/pages.md). */
export const KIND = Object.freeze({ INIT: 1, KEY: 2, DELTA: 3, AUDIO: 4 });
export const HEADER_BYTES = 9;
export const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The one media clock: microseconds since the Unix epoch on the sender's clock
 * (performance.timeOrigin + performance.now(), so it is monotonic within a page).
 * Audio and video use it alike; a watcher on a synced clock can estimate latency from it.
 */
export function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** Writes the 9-byte envelope header into `buf` (a Uint8Array at least 9 bytes long). */
function writeHeader(buf, kind, tsUs) {
  buf[0] = kind;
  new DataView(buf.buffer, buf.byteOffset, 9).setBigUint64(1, BigInt(Math.max(0, Math.round(tsUs))), false);
}

/** Envelope around bytes (Uint8Array / ArrayBuffer). */
export function pack(kind, tsUs, payload) {
  const p = payload instanceof Uint8Array ? payload : new Uint8Array(payload);
  const buf = new Uint8Array(HEADER_BYTES + p.byteLength);
  writeHeader(buf, kind, tsUs);
  buf.set(p, HEADER_BYTES);
  return buf;
}

/** Envelope around a WebCodecs EncodedVideoChunk / EncodedAudioChunk, copied once. */
export function packChunk(kind, tsUs, chunk) {
  const buf = new Uint8Array(HEADER_BYTES + chunk.byteLength);
  writeHeader(buf, kind, tsUs);
  chunk.copyTo(buf.subarray(HEADER_BYTES));
  return buf;
}

/** Splits a received ArrayBuffer into {kind, ts, payload (Uint8Array view)} or null if too short. */
export function unpack(ab) {
  if (ab.byteLength < HEADER_BYTES) return null;
  const dv = new DataView(ab);
  return { kind: dv.getUint8(0), ts: Number(dv.getBigUint64(1, false)), payload: new Uint8Array(ab, HEADER_BYTES) };
}

export function wsUrl(path) {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
}

export async function fetchInfo() {
  try {
    const r = await fetch('/api/info', { cache: 'no-store' });
    if (r.ok) return await r.json();
  } catch { /* fall through */ }
  return { public_address: location.host, version: '', tls: location.protocol === 'https:' };
}

/** The link viewers open: the server's public address (it may sit behind a proxy), never a guess. */
export function shareLink(info, name) {
  const tls = typeof info.tls === 'boolean' ? info.tls : location.protocol === 'https:';
  const scheme = tls || location.protocol === 'https:' ? 'https://' : 'http://';
  return scheme + (info.public_address || location.host) + '/cast/' + encodeURIComponent(name);
}

const ADJ = ['amber', 'brave', 'calm', 'crisp', 'dusty', 'eager', 'fuzzy', 'golden', 'happy', 'icy', 'jolly', 'lucky', 'misty', 'noble', 'quiet', 'rapid', 'sunny', 'swift', 'tidy', 'vivid', 'windy', 'zesty'];
const NOUN = ['otter', 'falcon', 'panda', 'lynx', 'heron', 'koala', 'badger', 'comet', 'maple', 'river', 'harbor', 'meadow', 'canyon', 'pebble', 'willow', 'tiger', 'orca', 'sparrow', 'cedar', 'summit'];
export function randomName() {
  const r = (n) => crypto.getRandomValues(new Uint32Array(1))[0] % n;
  return `${ADJ[r(ADJ.length)]}-${NOUN[r(NOUN.length)]}-${100 + r(900)}`;
}

export function fmtKbps(bitsPerSec) {
  if (!isFinite(bitsPerSec)) return '–';
  return bitsPerSec >= 1e6 ? (bitsPerSec / 1e6).toFixed(2) + ' Mbps' : Math.round(bitsPerSec / 1000) + ' kbps';
}

export function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + ':' + String(m).padStart(2, '0') : m) + ':' + String(sec).padStart(2, '0');
}

export function toast(text, ms = 1800) {
  const el = document.createElement('div');
  el.className = 'toast';
  el.textContent = text;
  document.body.appendChild(el);
  setTimeout(() => el.remove(), ms);
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Clipboard API needs a secure context; fall back to a temporary textarea.
    const ta = document.createElement('textarea');
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
}

/** A periodic tick from a dedicated Worker: unlike page timers it is not throttled in background tabs. */
export function workerTicker(intervalMs, onTick) {
  const w = new Worker('/js/timer-worker.js');
  w.onmessage = onTick;
  w.postMessage({ cmd: 'start', interval: intervalMs });
  return {
    setInterval(ms) { w.postMessage({ cmd: 'start', interval: ms }); },
    stop() { w.postMessage({ cmd: 'stop' }); w.terminate(); },
  };
}

/** Rate meter over a sliding ~2 s window. */
export class Meter {
  constructor(windowMs = 2000) { this.windowMs = windowMs; this.samples = []; }
  add(v = 1, t = performance.now()) { this.samples.push([t, v]); this.trim(t); }
  trim(t) { while (this.samples.length && t - this.samples[0][0] > this.windowMs) this.samples.shift(); }
  rate(t = performance.now()) {
    this.trim(t);
    if (!this.samples.length) return 0;
    let sum = 0;
    for (const [, v] of this.samples) sum += v;
    return sum / (this.windowMs / 1000);
  }
}

/** Inline SVG icons (no emoji: many systems, and headless browsers, have no emoji font). */
const svg = (body) => `<svg class="ico" viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${body}</svg>`;
export const ICON = {
  eye: svg('<path d="M1 12s4-7 11-7 11 7 11 7-4 7-11 7S1 12 1 12z"/><circle cx="12" cy="12" r="3"/>'),
  clock: svg('<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>'),
  rate: svg('<path d="M3 17l6-6 4 4 8-8"/><path d="M14 7h7v7"/>'),
  muted: svg('<path d="M11 5L6 9H2v6h4l5 4z"/><path d="M23 9l-6 6M17 9l6 6"/>'),
  volume: svg('<path d="M11 5L6 9H2v6h4l5 4z"/><path d="M15.5 8.5a5 5 0 0 1 0 7M19 5a10 10 0 0 1 0 14"/>'),
  link: svg('<path d="M10 13a5 5 0 0 0 7.5.5l3-3a5 5 0 0 0-7-7l-1.7 1.7"/><path d="M14 11a5 5 0 0 0-7.5-.5l-3 3a5 5 0 0 0 7 7l1.7-1.7"/>'),
  stats: svg('<path d="M4 20V10M10 20V4M16 20v-7M22 20H2"/>'),
  fullscreen: svg('<path d="M8 3H3v5M16 3h5v5M8 21H3v-5M16 21h5v-5"/>'),
  dice: svg('<rect x="3" y="3" width="18" height="18" rx="4"/><circle cx="8.5" cy="8.5" r="1.2" fill="currentColor"/><circle cx="15.5" cy="15.5" r="1.2" fill="currentColor"/><circle cx="12" cy="12" r="1.2" fill="currentColor"/>'),
};

/** Replaces every <i data-icon="name"></i> placeholder in the document with its SVG. */
export function fillIcons(root = document) {
  for (const el of root.querySelectorAll('i[data-icon]')) el.outerHTML = ICON[el.dataset.icon] || '';
}
