// camrelay cast page: /ws/watch/{name} → WebCodecs (or createImageBitmap / PCM) → canvas + AudioWorklet,
// with video slaved to the audio clock. Envelope and init schema: docs/pages.md.
import { KIND, NAME_RE, nowUs, unpack, wsUrl, fetchInfo, shareLink, fmtKbps, copyText, toast, workerTicker, Meter, ICON, fillIcons } from '/js/common.js';

const $ = (id) => document.getElementById(id);
const name = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '');
const VIDEO_DELAY_US = 30_000;     // playout delay on the video clock, absorbs network jitter
const CATCH_UP_US = 300_000;       // more than this buffered: jump to live
const MAX_VIDEO_QUEUE = 90;
const AUDIO_TARGET_MS = 80;        // audio jitter buffer when video keeps up
const AUDIO_TARGET_MAX_MS = 240;   // most extra audio delay spent on lip sync (catch-up starts at 300)

/** Counters for people and for tests (tests/browser reads them). */
const stats = window.castStats = {
  name, state: 'connecting', live: false, videoCodec: '', audioCodec: '', width: 0, height: 0,
  framesReceived: 0, framesDecoded: 0, framesShown: 0, framesDropped: 0, framesLate: 0,
  audioChunksReceived: 0, audioChunksDecoded: 0, audioChunksPlayed: 0, audioChunksDropped: 0, audioUnderruns: 0,
  audioState: 'none', muted: true, syncMode: 'video', bufferedMs: 0, audioBufferedMs: 0,
  latencyMs: null, transportMs: null, decodeMs: null, avOffsetMs: null, audioTargetMs: AUDIO_TARGET_MS, fps: 0, kbps: 0, bytesReceived: 0, reconnects: 0, firstFrameAt: null, lastError: null,
  timeline: {},  // performance.now() ms of the first connect / message / init / key frame / decoded frame
};
const mark = (k) => { if (stats.timeline[k] === undefined) stats.timeline[k] = Math.round(performance.now()); };

const canvas = $('screen');
const g = canvas.getContext('2d', { alpha: false });
const stage = $('stage');

let ws = null;
let backoffMs = 500;
let info = { public_address: location.host };

// Video state
let vmode = null;            // 'webcodecs' | 'jpeg' | null
let vconfig = null;          // VideoDecoder config
let decoder = null;
let needKey = true;
let gen = 0;                 // bumps on every init/reset; stale decoder outputs are dropped
let jpegPending = 0;
const queue = [];            // decoded frames waiting to be shown: {ts, img (VideoFrame | ImageBitmap)}
let videoOffsetUs = null;    // video clock = nowUs() - videoOffsetUs
let lastClock = null;
let liveFramesShown = 0;     // frames shown since the stream last went live (hides the waiting screen)

// Audio state
let actx = null;
let player = null;           // AudioWorkletNode
let gain = null;
let amode = null;            // 'opus' | 'pcm-s16' | null
let adecoder = null;
let ainit = null;
let audioAnchor = null;      // last clock report from the worklet: {ts, time, at}
let audioTargetMs = AUDIO_TARGET_MS;
let avSamples = [];          // ms a decoded frame came after the audio clock reached it (lip sync)

const fpsMeter = new Meter(2000);
const bitMeter = new Meter(2000);
let latencyAvg = null;
let transportAvg = null;     // capture timestamp → message arrival (ms, smoothed)
let decodeAvg = null;        // message arrival → decoded frame (ms, smoothed)
const arrivals = new Map();  // video ts → performance.now() at arrival, for decodeAvg
const ema = (avg, x) => (avg === null ? x : avg * 0.9 + x * 0.1);
let lastDrawAt = 0;

function setError(msg) { stats.lastError = msg; console.warn('[cast]', msg); }
function closeImg(img) { try { img.close(); } catch { /* already closed */ } }

// ---------------------------------------------------------------------------------------------
// UI

function setWaiting(show, msg, sub) {
  $('waiting').hidden = !show;
  if (msg) $('waiting-msg').textContent = msg;
  if (sub !== undefined) $('waiting-sub').textContent = sub;
}

function setLive(live) {
  stats.live = live;
  const b = $('live-badge');
  b.textContent = live ? 'live' : 'offline';
  b.className = 'badge' + (live ? ' live' : '');
  document.title = (live ? '🔴 ' : '') + name + ' · camrelay';
}

function fitCanvas() {
  const w = canvas.width, h = canvas.height;
  const s = Math.min(window.innerWidth / w, window.innerHeight / h);
  canvas.style.width = Math.floor(w * s) + 'px';
  canvas.style.height = Math.floor(h * s) + 'px';
}

let idleTimer = null;
function poke() {
  stage.classList.remove('idle');
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => { if (liveFramesShown > 0 && $('overlay').hidden) stage.classList.add('idle'); }, 3000);
}

function updateMuteUi() {
  const muted = stats.muted;
  $('unmute').hidden = !muted || !amode;
  $('mute').innerHTML = muted ? ICON.muted : ICON.volume;
}

async function unmute() {
  try {
    if (!actx) await setupAudio();
    await actx.resume();
    gain.gain.setTargetAtTime(1, actx.currentTime, 0.02);
    stats.muted = false;
  } catch (e) { setError('audio: ' + e.message); }
  updateMuteUi();
}
function mute() {
  if (gain) gain.gain.setTargetAtTime(0, actx.currentTime, 0.02);
  stats.muted = true;
  updateMuteUi();
}

function refreshOverlay() {
  stats.fps = Math.round(fpsMeter.rate() * 10) / 10;
  stats.kbps = Math.round(bitMeter.rate() / 1000);
  const vbuf = queue.length && lastClock !== null ? Math.max(0, (queue[queue.length - 1].ts - lastClock) / 1000) : 0;
  stats.bufferedMs = Math.round(Math.max(vbuf, stats.audioBufferedMs));
  stats.latencyMs = latencyAvg === null ? null : Math.round(latencyAvg);
  stats.transportMs = transportAvg === null ? null : Math.round(transportAvg);
  stats.decodeMs = decodeAvg === null ? null : Math.round(decodeAvg);
  stats.audioState = actx ? actx.state : 'none';
  if ($('overlay').hidden) return;
  $('o-res').textContent = stats.width ? `${stats.width}×${stats.height}` : '–';
  $('o-codec').textContent = [stats.videoCodec, stats.audioCodec].filter(Boolean).join(' + ') || '–';
  $('o-fps').textContent = stats.fps.toFixed(1);
  $('o-kbps').textContent = fmtKbps(bitMeter.rate());
  $('o-buf').textContent = `${stats.bufferedMs} ms (audio ${Math.round(stats.audioBufferedMs)})`;
  $('o-drop').textContent = `${stats.framesDropped} / ${stats.framesLate}`;
  $('o-lat').textContent = stats.latencyMs === null ? '–' : `${stats.latencyMs} ms`;
  $('o-sync').textContent = stats.syncMode === 'audio' ? 'video → audio clock' : 'video clock';
  const av = stats.avOffsetMs;
  $('o-av').textContent = av === null ? '–'
    : `${Math.abs(av)} ms ${av > 0 ? 'late' : 'early'} (audio buffer ${stats.audioTargetMs} ms)`;
}

// ---------------------------------------------------------------------------------------------
// Audio: decoded PCM → playback worklet (jitter buffer, resampler, clock)

async function setupAudio() {
  if (actx) return;
  mark('audioSetup');
  actx = new AudioContext({ latencyHint: 'interactive' });
  mark('audioContext');
  await actx.audioWorklet.addModule('/js/playback-worklet.js');
  player = new AudioWorkletNode(actx, 'playback-processor', {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [2],
    processorOptions: { targetMs: audioTargetMs, maxMs: CATCH_UP_US / 1000 },
  });
  gain = actx.createGain();
  gain.gain.value = stats.muted ? 0 : 1;
  player.connect(gain).connect(actx.destination);
  player.port.onmessage = (e) => {
    const m = e.data;
    if (m.type !== 'clock') return;
    stats.audioChunksPlayed = m.played;
    stats.audioChunksDropped = m.dropped;
    stats.audioUnderruns = m.underruns;
    stats.audioBufferedMs = m.bufferedMs;
    audioAnchor = m.ts >= 0 ? { ts: m.ts, time: m.time, at: performance.now() } : null;
    tick();
  };
  actx.onstatechange = () => { stats.audioState = actx.state; };
  mark('audioReady');
}

/** Media time (µs) of the sample being heard now, or null when audio is not playing. */
function audioClock() {
  if (!audioAnchor || !actx || actx.state !== 'running' || performance.now() - audioAnchor.at > 250) return null;
  const outLatency = (actx.outputLatency || actx.baseLatency || 0) * 1e6;
  return audioAnchor.ts + (actx.currentTime - audioAnchor.time) * 1e6 - outLatency;
}

let audioTimer = null;
async function startAudio() {
  clearTimeout(audioTimer);
  if (actx) return;
  if (!('AudioWorkletNode' in window)) {
    setError('no AudioWorklet: audio disabled');
    toast('This browser cannot play the sound of this stream (no AudioWorklet): video only.', 6000);
    return;
  }
  try { await setupAudio(); } catch (e) { setError('audio setup: ' + e.message); }
  updateMuteUi();
}

function b64bytes(s) { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); }

function configureAudio(a) {
  if (adecoder && adecoder.state !== 'closed') adecoder.close();
  adecoder = null;
  amode = null;
  ainit = a;
  stats.audioCodec = '';
  player?.port.postMessage({ type: 'reset' });
  audioAnchor = null;
  if (!a) return;
  if (a.codec === 'pcm-s16') {
    amode = 'pcm-s16';
  } else if (a.codec === 'opus' && 'AudioDecoder' in window) {
    const g0 = gen;
    adecoder = new AudioDecoder({
      output: (data) => {
        if (g0 !== gen) { data.close(); return; }
        const planes = [];
        for (let c = 0; c < data.numberOfChannels; c++) {
          const p = new Float32Array(data.numberOfFrames);
          data.copyTo(p, { planeIndex: c, format: 'f32-planar' });
          planes.push(p);
        }
        toPlayer(data.timestamp, data.sampleRate, planes);
        data.close();
      },
      error: (e) => { setError('audio decoder: ' + e.message); if (g0 === gen) configureAudio(ainit); },
    });
    const cfg = { codec: 'opus', sampleRate: a.sampleRate, numberOfChannels: a.channels };
    if (a.description) cfg.description = b64bytes(a.description);
    try { adecoder.configure(cfg); amode = 'opus'; } catch (e) { setError('audio config: ' + e.message); }
  } else {
    setError(`audio codec ${a.codec} is not supported by this browser`);
  }
  stats.audioCodec = amode || '';
  updateMuteUi();
}

function toPlayer(ts, sampleRate, planes) {
  stats.audioChunksDecoded++;
  // A suspended context (autoplay policy, before "unmute") renders nothing: do not pile chunks up in it.
  if (!player || actx.state !== 'running') return;
  player.port.postMessage({ type: 'chunk', ts, sampleRate, planes }, planes.map((p) => p.buffer));
}

function onAudio(ts, payload) {
  stats.audioChunksReceived++;
  if (amode === 'opus') {
    if (adecoder.state !== 'configured') return;
    try { adecoder.decode(new EncodedAudioChunk({ type: 'key', timestamp: ts, data: payload })); } catch (e) { setError('audio decode: ' + e.message); }
  } else if (amode === 'pcm-s16') {
    const ch = ainit.channels || 1;
    const frames = Math.floor(payload.byteLength / 2 / ch);
    const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    const planes = Array.from({ length: ch }, () => new Float32Array(frames));
    for (let i = 0, o = 0; i < frames; i++) for (let c = 0; c < ch; c++, o += 2) planes[c][i] = dv.getInt16(o, true) / 32768;
    toPlayer(ts, ainit.sampleRate, planes);
  }
}

// ---------------------------------------------------------------------------------------------
// Video: decode → queue → shown by tick() when its time comes

function resetVideo() {
  gen++;
  if (decoder && decoder.state !== 'closed') decoder.close();
  decoder = null;
  needKey = true;
  jpegPending = 0;
  while (queue.length) closeImg(queue.shift().img);
  videoOffsetUs = null;
}

function makeDecoder() {
  const g0 = gen;
  decoder = new VideoDecoder({
    output: (frame) => {
      if (g0 !== gen) { frame.close(); return; }
      stats.framesDecoded++;
      enqueue(frame.timestamp, frame);
    },
    error: (e) => {
      setError('video decoder: ' + e.message);
      if (g0 !== gen) return;
      stats.framesDropped++;
      // A closed decoder needs configure() and then a key frame.
      gen++;
      makeDecoder();
    },
  });
  decoder.configure(vconfig);
  needKey = true;
}

function configureVideo(v) {
  resetVideo();
  vmode = null;
  vconfig = null;
  stats.videoCodec = '';
  if (!v) return;
  if (v.codec === 'jpeg') {
    vmode = 'jpeg';
  } else if ('VideoDecoder' in window) {
    vconfig = { codec: v.codec, optimizeForLatency: true };
    if (v.width && v.height) { vconfig.codedWidth = v.width; vconfig.codedHeight = v.height; }
    if (v.description) vconfig.description = b64bytes(v.description);
    try { makeDecoder(); vmode = 'webcodecs'; } catch (e) { setError('video config: ' + e.message); }
  } else {
    setError('This browser cannot decode ' + v.codec + ' (no WebCodecs). Ask the broadcaster to use ?codec=jpeg.');
    setWaiting(true, 'This browser cannot play this stream', 'It needs WebCodecs (current Chrome, Edge or Firefox), or the broadcaster can switch to JPEG.');
  }
  stats.videoCodec = vmode === 'jpeg' ? 'jpeg' : (vmode ? v.codec : '');
}

function onVideo(kind, ts, payload) {
  stats.framesReceived++;
  transportAvg = ema(transportAvg, (nowUs() - ts) / 1000);
  if (arrivals.size > 200) arrivals.clear();   // outputs that never came (a reset decoder)
  arrivals.set(ts, performance.now());
  const key = kind === KIND.KEY;
  if (key) mark('firstKey');
  if (vmode === 'jpeg') {
    if (jpegPending > 3) { stats.framesDropped++; return; }
    jpegPending++;
    const g0 = gen;
    createImageBitmap(new Blob([payload], { type: 'image/jpeg' })).then((bmp) => {
      jpegPending--;
      if (g0 !== gen) { bmp.close(); return; }
      stats.framesDecoded++;
      enqueue(ts, bmp);
    }, (e) => { jpegPending--; stats.framesDropped++; setError('jpeg: ' + e.message); });
    return;
  }
  if (vmode !== 'webcodecs') return;
  if (needKey && !key) { stats.framesDropped++; return; }   // after configure, or a gap: wait for a key frame
  // A late joiner gets a whole cached group (up to 2 s) at once, so only a much longer backlog means
  // the decoder cannot keep up: then skip to the next key frame.
  if (!key && decoder.decodeQueueSize > 120) {
    needKey = true;
    stats.framesDropped++;
    return;
  }
  try {
    decoder.decode(new EncodedVideoChunk({ type: key ? 'key' : 'delta', timestamp: ts, data: payload }));
    needKey = false;
  } catch (e) {
    setError('video decode: ' + e.message);
    stats.framesDropped++;
    needKey = true;
  }
}

function enqueue(ts, img) {
  mark('firstDecoded');
  const at = arrivals.get(ts);
  if (at !== undefined) { arrivals.delete(ts); decodeAvg = ema(decodeAvg, performance.now() - at); }
  const aclock = audioClock();
  if (aclock !== null && avSamples.length < 200) avSamples.push((aclock - ts) / 1000);
  let i = queue.length;
  while (i > 0 && queue[i - 1].ts > ts) i--;
  queue.splice(i, 0, { ts, img });
  while (queue.length > MAX_VIDEO_QUEUE) { closeImg(queue.shift().img); stats.framesDropped++; }
  tick();
}

function draw(f) {
  const w = f.img.displayWidth || f.img.width, h = f.img.displayHeight || f.img.height;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; fitCanvas(); }
  stats.width = w;
  stats.height = h;
  g.drawImage(f.img, 0, 0, w, h);
  closeImg(f.img);
  stats.framesShown++;
  fpsMeter.add(1);
  if (stats.firstFrameAt === null) stats.firstFrameAt = Math.round(performance.now());
  if (liveFramesShown++ === 0) { setWaiting(false); poke(); if (!actx) setTimeout(startAudio, 50); }
  lastDrawAt = performance.now();
  const lat = (nowUs() - f.ts) / 1000;
  latencyAvg = ema(latencyAvg, lat);
}

/**
 * Lip sync, once a second. Video is slaved to the audio clock, but a slow encoder or decoder can
 * deliver frames after the audio clock passed them: then they show late, out of sync. So when most
 * frames of the last second came late, the audio jitter buffer grows by that much (the worklet
 * plays a little slower until it holds the new target), up to AUDIO_TARGET_MAX_MS; when frames
 * come early again, it shrinks back towards AUDIO_TARGET_MS, keeping latency as low as sync allows.
 */
function lipSync() {
  const samples = avSamples.sort((a, b) => a - b);
  avSamples = [];
  if (samples.length < 5 || !player) { stats.avOffsetMs = null; return; }
  const p80 = samples[Math.floor(samples.length * 0.8)];
  stats.avOffsetMs = Math.round(samples[Math.floor(samples.length / 2)]);
  let target = audioTargetMs;
  if (p80 > 15) target = Math.min(AUDIO_TARGET_MAX_MS, target + Math.min(60, p80));
  else if (p80 < -40) target = Math.max(AUDIO_TARGET_MS, target - 20);
  if (Math.abs(target - audioTargetMs) >= 5) {
    audioTargetMs = Math.round(target);
    player.port.postMessage({ type: 'target', ms: audioTargetMs });
  }
  stats.audioTargetMs = audioTargetMs;
}

/** Shows the frame that is due. Driven by a Worker timer, decoder output and audio clock reports. */
function tick() {
  const now = nowUs();
  let clock = audioClock();
  let mode = 'audio';
  if (clock !== null && queue.length && queue[0].ts - clock > 1_000_000) clock = null; // audio lags far behind: ignore it
  if (clock === null) {
    mode = 'video';
    if (videoOffsetUs === null) {
      if (!queue.length) return;
      // Start the video clock just behind the first frame (or where the audio clock left off).
      videoOffsetUs = lastClock !== null && stats.syncMode === 'audio' ? now - lastClock : now - (queue[0].ts - VIDEO_DELAY_US);
    }
    clock = now - videoOffsetUs;
    if (queue.length) {
      const newest = queue[queue.length - 1].ts;
      if (newest - clock > CATCH_UP_US) {                  // piled up: jump to live
        videoOffsetUs = now - (newest - VIDEO_DELAY_US);
        clock = now - videoOffsetUs;
      } else if (clock - queue[0].ts > 150_000 && queue.length === 1) {
        videoOffsetUs = now - queue[0].ts;                 // frames arrive later than the clock expects: re-anchor
        clock = queue[0].ts;
      }
    }
  } else {
    videoOffsetUs = now - clock;                           // keep the video clock in step for when audio stops
  }
  stats.syncMode = mode;
  lastClock = clock;
  while (queue.length) {
    const f = queue[0];
    if (f.ts > clock) break;
    queue.shift();
    if (queue.length && queue[0].ts <= clock) { closeImg(f.img); stats.framesLate++; continue; }
    // Working through a backlog (a late joiner's cached group): skip stale frames, but show one
    // every 100 ms so the picture moves while the decoder catches up.
    if (clock - f.ts > CATCH_UP_US && decoder && decoder.decodeQueueSize > 0 && performance.now() - lastDrawAt < 100) {
      closeImg(f.img); stats.framesLate++; continue;
    }
    draw(f);
    break;
  }
}

// ---------------------------------------------------------------------------------------------
// Connection

function onInit(payload) {
  let cfg;
  try { cfg = JSON.parse(new TextDecoder().decode(payload)); } catch { setError('bad init message'); return; }
  mark('init');
  gen++;
  configureVideo(cfg.video || null);
  configureAudio(cfg.audio || null);
  if (!cfg.video) { setWaiting(true, 'Audio only', 'This broadcast has no video.'); startAudio(); }
}

function connect() {
  stats.state = 'connecting';
  mark('connect');
  const sock = new WebSocket(wsUrl(`/ws/watch/${encodeURIComponent(name)}`));
  sock.binaryType = 'arraybuffer';
  ws = sock;
  let gotData = false;
  sock.onopen = () => { stats.state = 'open'; };
  sock.onmessage = (e) => {
    if (typeof e.data === 'string') {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m.event === 'publisher') {
        gotData = true;
        backoffMs = 500;
        setLive(!!m.live);
        liveFramesShown = 0;
        if (m.live) {
          setWaiting(true, 'Starting…', 'The broadcast is live; the picture appears in a moment.');
        } else {
          gen++;
          resetVideo();
          configureAudio(null);
          setWaiting(true, stats.framesShown ? 'The broadcast has paused' : 'Waiting for the broadcaster…',
            'This page starts playing by itself when the stream goes live.');
        }
      }
      return;
    }
    gotData = true;
    mark('firstMedia');
    stats.bytesReceived += e.data.byteLength;
    bitMeter.add(e.data.byteLength * 8);
    const m = unpack(e.data);
    if (!m) return;
    if (m.kind === KIND.INIT) onInit(m.payload);
    else if (m.kind === KIND.KEY || m.kind === KIND.DELTA) onVideo(m.kind, m.ts, m.payload);
    else if (m.kind === KIND.AUDIO) onAudio(m.ts, m.payload);
  };
  sock.onclose = (e) => {
    if (ws !== sock) return;
    ws = null;
    stats.state = 'reconnecting';
    stats.reconnects++;
    setLive(false);
    resetVideo();
    configureAudio(null);
    liveFramesShown = 0;
    if (e.code === 1008) setError('server closed the connection: ' + (e.reason || 'too slow'));
    if (!gotData) backoffMs = Math.min(backoffMs * 2, 10_000);
    setWaiting(true, 'Connection lost', `Reconnecting in ${Math.round(backoffMs / 1000) || 1} s…`);
    setTimeout(connect, backoffMs);
  };
}

async function pollViewers() {
  try {
    const list = await (await fetch('/api/streams', { cache: 'no-store' })).json();
    const s = list.find((x) => x.name === name);
    $('viewers').hidden = !s;
    if (s) $('viewers').innerHTML = `${ICON.eye} ${s.watchers}`;
  } catch { /* the socket reports connectivity */ }
}

async function main() {
  fillIcons();
  $('title').textContent = name || '(no stream)';
  setLive(false);
  if (!NAME_RE.test(name)) {
    setWaiting(true, 'No such stream', 'A stream name uses 1–64 letters, digits, “-” or “_”.');
    document.querySelector('.spinner').hidden = true;
    stats.state = 'bad-name';
    return;
  }
  fitCanvas();
  window.addEventListener('resize', fitCanvas);
  for (const ev of ['mousemove', 'touchstart', 'keydown']) window.addEventListener(ev, poke, { passive: true });
  $('unmute').onclick = unmute;
  $('mute').onclick = () => (stats.muted ? unmute() : mute());
  $('stats').onclick = () => { $('overlay').hidden = !$('overlay').hidden; refreshOverlay(); };
  $('fullscreen').onclick = () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else (stage.requestFullscreen || stage.webkitRequestFullscreen).call(stage);
  };
  canvas.ondblclick = () => $('fullscreen').onclick();
  $('share').onclick = async () => { await copyText(shareLink(info, name)); toast('Link copied'); };
  if (new URLSearchParams(location.search).get('stats') === '1') $('overlay').hidden = false;
  fetchInfo().then((i) => { info = i; });
  setInterval(refreshOverlay, 500);
  setInterval(lipSync, 1000);
  setInterval(pollViewers, 5000);
  pollViewers();
  workerTicker(8, tick); // not rAF: keeps playing in background tabs
  connect();
  // Creating the AudioContext and loading the worklet blocks this thread for a few hundred ms, so it
  // waits until the first picture is up (or a second has passed): a late joiner sees video at once.
  audioTimer = setTimeout(startAudio, 1000);
  updateMuteUi();
}

main();
