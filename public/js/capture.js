// camrelay capture page: camera + microphone → WebCodecs (or JPEG / PCM fallback) → one binary WebSocket.
// Envelope and init schema: docs/pages.md.
import {
  KIND, NAME_RE, nowUs, pack, packChunk, wsUrl, fetchInfo, shareLink, randomName,
  fmtKbps, copyText, toast, workerTicker, Meter, fillIcons,
} from '/js/common.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const KEYFRAME_INTERVAL_US = 2_000_000;
const MAX_ENCODES_IN_FLIGHT = 1;
const BITS_PER_PIXEL = { low: 0.04, medium: 0.08, high: 0.16 };
const JPEG_QUALITY = { low: 0.5, medium: 0.7, high: 0.85 };
const OPUS_BITRATE = { low: 24_000, medium: 40_000, high: 64_000 };

/** Counters for people and for tests (tests/browser reads them). */
const stats = window.captureStats = {
  state: 'idle', name: '', codec: '', audioCodec: '', width: 0, height: 0,
  framesSent: 0, keyFramesSent: 0, framesDropped: 0, bytesSent: 0, videoBytesSent: 0, audioBytesSent: 0, audioChunksSent: 0,
  viewers: 0, fps: 0, kbps: 0, encodeMs: null, bufferedBytes: 0, reconnects: 0, lastError: null,
};

const ui = {
  name: $('name'), camera: $('camera'), mic: $('mic'), resolution: $('resolution'), fps: $('fps'),
  quality: $('quality'), codec: $('codec'), start: $('start'), stop: $('stop'), share: $('share'),
  copy: $('copy'), preview: $('preview'), placeholder: $('placeholder'), error: $('error'), warning: $('warning'),
};

let info = { public_address: location.host };
let media = null;          // MediaStream
let video = null;          // VideoPipe
let audio = null;          // AudioPipe
let ws = null;
let wantLive = false;      // the user pressed start and not stop
let everOpened = false;    // this broadcast had a socket open at least once
let backoffMs = 500;
let reconnectTimer = null;
const fpsMeter = new Meter(2000);
const bitMeter = new Meter(2000);

// ---------------------------------------------------------------------------------------------
// Messages

function showError(html, code) {
  ui.error.innerHTML = html;
  ui.error.hidden = false;
  stats.lastError = code || ui.error.textContent;
}
function clearError() { ui.error.hidden = true; }
function showWarning(text) { ui.warning.textContent = text; ui.warning.hidden = !text; }
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function mediaErrorMessage(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return ['<strong>Camera or microphone permission was denied.</strong> Allow access for this site (the camera icon in the address bar), then press Start again.', 'permission-denied'];
    case 'NotFoundError':
    case 'OverconstrainedError':
      return ['<strong>No camera found.</strong> Connect a camera (or pick another one) and press Start again.', 'no-camera'];
    case 'NotReadableError':
    case 'AbortError':
      return ['<strong>The camera is busy or unavailable.</strong> Close other apps or tabs that use it and try again.', 'camera-busy'];
    default:
      return [`<strong>Could not open the camera:</strong> ${esc(err && err.message || err)}`, 'media-error'];
  }
}

function setState(s, label) {
  stats.state = s;
  const badge = $('state-badge');
  const text = label || s;
  badge.textContent = text;
  badge.className = 'badge ' + ({ live: 'live', connecting: 'warn', checking: 'warn', reconnecting: 'warn', error: 'err' }[s] || '');
  $('st-state').textContent = text;
  const on = s !== 'idle' && s !== 'error';
  ui.start.hidden = on;
  ui.stop.hidden = !on;
  ui.name.disabled = on;
  $('shuffle').disabled = on;
}

// ---------------------------------------------------------------------------------------------
// Devices

async function fillDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const fill = (sel, kind, fallback, extra) => {
    const cur = sel.value;
    sel.innerHTML = '';
    const list = devices.filter((d) => d.kind === kind);
    if (!list.length || !list[0].deviceId) sel.add(new Option(fallback, ''));
    list.forEach((d, i) => { if (d.deviceId) sel.add(new Option(d.label || `${fallback} ${i + 1}`, d.deviceId)); });
    if (extra) sel.add(new Option(extra, 'none'));
    if ([...sel.options].some((o) => o.value === cur)) sel.value = cur;
  };
  fill(ui.camera, 'videoinput', 'Camera');
  fill(ui.mic, 'audioinput', 'Microphone', 'No audio');
}

function constraints(withAudio) {
  const [w, h] = ui.resolution.value.split('x').map(Number);
  const v = { width: { ideal: w }, height: { ideal: h }, frameRate: { ideal: Number(ui.fps.value) } };
  if (ui.camera.value) v.deviceId = { exact: ui.camera.value };
  let a = false;
  if (withAudio && ui.mic.value !== 'none') {
    a = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (ui.mic.value) a.deviceId = { exact: ui.mic.value };
  }
  return { video: v, audio: a };
}

/** Opens the camera (and microphone); on failure shows the reason and returns false. */
async function openMedia() {
  closeMedia();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(constraints(true));
  } catch (err) {
    if (err.name === 'NotFoundError' && ui.mic.value !== 'none') {
      // Maybe only the microphone is missing: stream video alone.
      try {
        stream = await navigator.mediaDevices.getUserMedia(constraints(false));
        showWarning('No microphone found: streaming video only.');
      } catch (err2) { err = err2; }
    }
    if (!stream) {
      const [msg, code] = mediaErrorMessage(err);
      showError(msg, code);
      return false;
    }
  }
  media = stream;
  ui.preview.srcObject = stream;
  ui.placeholder.hidden = true;
  ui.preview.play().catch(() => {});
  await fillDevices();
  const vt = stream.getVideoTracks()[0];
  if (vt) vt.onended = () => { if (wantLive) showError('<strong>The camera stopped.</strong> It was unplugged or taken by another app.', 'camera-ended'); };
  return true;
}

function closeMedia() {
  if (media) media.getTracks().forEach((t) => t.stop());
  media = null;
}

// ---------------------------------------------------------------------------------------------
// Sending

function socketOpen() { return ws && ws.readyState === WebSocket.OPEN; }

/** Bytes we tolerate in the socket's send buffer: about half a second of video, at least 256 KiB. */
function congestionLimit() {
  const bps = video ? video.bitrate : 1e6;
  return Math.max(256 * 1024, bps / 8 / 2);
}

function send(buf, isVideo) {
  if (!socketOpen()) return false;
  ws.send(buf);
  stats.bytesSent += buf.byteLength;
  bitMeter.add(buf.byteLength * 8);
  if (isVideo === true) { stats.framesSent++; stats.videoBytesSent += buf.byteLength; fpsMeter.add(1); }
  else if (isVideo === 'audio') stats.audioBytesSent += buf.byteLength;
  return true;
}

function sendInit() {
  if (!socketOpen()) return;
  const init = { video: video ? video.describe() : null, audio: audio ? audio.describe() : null };
  send(pack(KIND.INIT, nowUs(), new TextEncoder().encode(JSON.stringify(init))), false);
  if (video) video.forceKey = true;
}

// ---------------------------------------------------------------------------------------------
// Video: frames from MediaStreamTrackProcessor (or a Worker timer over the <video>), then
// VideoEncoder (VP8 / H.264 Annex B) or JPEG from a canvas.

function h264Codec(w, h) {
  const mbs = Math.ceil(w / 16) * Math.ceil(h / 16);
  if (mbs <= 1620) return 'avc1.42E01E';   // Constrained Baseline, level 3.0
  if (mbs <= 3600) return 'avc1.42E01F';   // level 3.1 (720p)
  return 'avc1.42E028';                    // level 4.0 (1080p)
}

class VideoPipe {
  constructor(track, codec, fps, quality, onConfig) {
    this.track = track;
    this.want = codec;        // 'vp8' | 'h264' | 'jpeg'
    this.fps = fps;
    this.quality = quality;
    this.onConfig = onConfig; // called when the init must be re-sent
    this.mode = null;         // 'webcodecs' | 'jpeg'
    this.codec = '';
    this.width = 0;
    this.height = 0;
    this.bitrate = 1e6;
    this.forceKey = true;
    this.lastKeyTs = 0;
    this.lastFrameTs = 0;
    this.gen = 0;
    this.encoder = null;
    this.busy = false;
    this.pending = [];        // timestamps handed to the encoder and not yet output
    this.stopped = false;
  }

  describe() {
    return { codec: this.codec, width: this.width, height: this.height, framerate: this.fps };
  }

  async start() {
    const s = this.track.getSettings();
    this.width = s.width || 640;
    this.height = s.height || 480;
    await this.chooseCodec();
    if ('MediaStreamTrackProcessor' in window) {
      this.reader = new MediaStreamTrackProcessor({ track: this.track }).readable.getReader();
      this.readLoop();
    } else {
      // Timer in a Worker: page timers are throttled to 1 Hz in background tabs.
      this.ticker = workerTicker(1000 / this.fps, () => this.fromElement());
    }
  }

  async chooseCodec() {
    let want = this.want;
    if (want !== 'jpeg' && !('VideoEncoder' in window)) {
      showWarning('This browser has no WebCodecs: sending JPEG frames (more bandwidth). Use a current Chrome, Edge or Firefox for VP8/H.264.');
      want = 'jpeg';
    }
    if (want === 'jpeg') {
      this.mode = 'jpeg';
      this.codec = 'jpeg';
      this.bitrate = this.width * this.height * this.fps * 1.2; // rough, for the congestion limit
      return;
    }
    const pick = async (name) => {
      const codec = name === 'h264' ? h264Codec(this.width, this.height) : 'vp8';
      const cfg = this.config(codec);
      try {
        const r = await VideoEncoder.isConfigSupported(cfg);
        return r.supported ? cfg : null;
      } catch { return null; }
    };
    let cfg = await pick(want);
    if (!cfg && want === 'h264') {
      showWarning('H.264 encoding is not supported by this browser: using VP8.');
      cfg = await pick('vp8');
    }
    if (!cfg) {
      showWarning('No WebCodecs video encoder available: sending JPEG frames.');
      this.mode = 'jpeg';
      this.codec = 'jpeg';
      return;
    }
    this.mode = 'webcodecs';
    this.makeEncoder(cfg);
  }

  config(codec) {
    this.bitrate = Math.round(this.width * this.height * this.fps * BITS_PER_PIXEL[this.quality]);
    const cfg = {
      codec, width: this.width, height: this.height, bitrate: this.bitrate, framerate: this.fps,
      latencyMode: 'realtime',
    };
    if (codec.startsWith('avc1')) cfg.avc = { format: 'annexb' }; // in-band SPS/PPS: no description needed
    return cfg;
  }

  makeEncoder(cfg) {
    if (this.encoder && this.encoder.state !== 'closed') this.encoder.close();
    const gen = ++this.gen;
    this.codec = cfg.codec;
    this.encoder = new VideoEncoder({
      output: (chunk) => {
        if (gen !== this.gen) return; // output of a replaced encoder
        const key = chunk.type === 'key';
        // Everything submitted up to this timestamp is done (an encoder may also drop a frame).
        while (this.pending.length && this.pending[0] <= chunk.timestamp) this.pending.shift();
        const ms = (nowUs() - chunk.timestamp) / 1000;   // capture → encoded
        stats.encodeMs = stats.encodeMs === null ? ms : stats.encodeMs * 0.9 + ms * 0.1;
        if (send(packChunk(key ? KIND.KEY : KIND.DELTA, chunk.timestamp, chunk), true) && key) stats.keyFramesSent++;
      },
      error: (e) => {
        showError(`<strong>Video encoder failed:</strong> ${esc(e.message)}`, 'encoder-error');
        if (gen === this.gen) { this.forceKey = true; setTimeout(() => !this.stopped && this.makeEncoder(this.config(this.codec)), 500); }
      },
    });
    this.encoder.configure(cfg);
    this.pending = [];
    this.forceKey = true;
  }

  async readLoop() {
    const reader = this.reader;
    while (!this.stopped) {
      let r;
      try { r = await reader.read(); } catch { break; }
      if (r.done) break;
      const frame = r.value;
      try { await this.handle(frame, frame.displayWidth, frame.displayHeight); } finally { frame.close(); }
    }
  }

  fromElement() {
    const el = ui.preview;
    if (this.stopped || el.readyState < 2 || !el.videoWidth) return;
    this.handle(el, el.videoWidth, el.videoHeight);
  }

  /** One captured frame (a VideoFrame or the <video> element); the caller closes VideoFrames. */
  async handle(src, w, h) {
    const ts = nowUs();
    if (ts - this.lastFrameTs < 0.85e6 / this.fps) return;           // above the chosen frame rate
    if (!socketOpen()) return;
    if (ws.bufferedAmount > congestionLimit()) {                      // uplink is behind: skip, key next
      stats.framesDropped++;
      this.forceKey = true;
      return;
    }
    this.lastFrameTs = ts;
    if (w !== this.width || h !== this.height) {                      // camera changed its size
      this.width = w; this.height = h;
      if (this.mode === 'webcodecs') this.makeEncoder(this.config(this.codec.startsWith('avc1') ? h264Codec(w, h) : this.codec));
      this.onConfig();
    }
    const key = this.forceKey || ts - this.lastKeyTs >= KEYFRAME_INTERVAL_US;
    if (this.mode === 'jpeg') return this.jpeg(src, ts);
    // encodeQueueSize only counts requests not yet handed to the codec, so count what is in flight
    // ourselves: a slow (software) encoder must skip frames, not build up seconds of latency.
    // Skipping a raw frame keeps the encoded stream intact, so no key frame is needed.
    if (this.encoder.state !== 'configured' || this.pending.length >= MAX_ENCODES_IN_FLIGHT) {
      stats.framesDropped++;
      return;
    }
    const frame = new VideoFrame(src, { timestamp: ts });
    try {
      this.encoder.encode(frame, { keyFrame: key });
      this.pending.push(ts);
    } finally { frame.close(); }
    if (key) { this.forceKey = false; this.lastKeyTs = ts; }
  }

  async jpeg(src, ts) {
    if (this.busy) { stats.framesDropped++; return; }
    this.busy = true;
    try {
      if (!this.canvas || this.canvas.width !== this.width || this.canvas.height !== this.height) {
        this.canvas = 'OffscreenCanvas' in window ? new OffscreenCanvas(this.width, this.height) : document.createElement('canvas');
        this.canvas.width = this.width;
        this.canvas.height = this.height;
        this.ctx = this.canvas.getContext('2d');
      }
      this.ctx.drawImage(src, 0, 0, this.width, this.height);
      const q = JPEG_QUALITY[this.quality];
      const blob = this.canvas.convertToBlob
        ? await this.canvas.convertToBlob({ type: 'image/jpeg', quality: q })
        : await new Promise((res) => this.canvas.toBlob(res, 'image/jpeg', q));
      const bytes = new Uint8Array(await blob.arrayBuffer());
      if (send(pack(KIND.KEY, ts, bytes), true)) stats.keyFramesSent++;
      this.forceKey = false;
      this.lastKeyTs = ts;
    } finally { this.busy = false; }
  }

  stop() {
    this.stopped = true;
    this.gen++;
    if (this.reader) this.reader.cancel().catch(() => {});
    if (this.ticker) this.ticker.stop();
    if (this.encoder && this.encoder.state !== 'closed') this.encoder.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Audio: AudioWorklet on the microphone → AudioEncoder Opus, or 16-bit PCM at the device rate.

class AudioPipe {
  constructor(track, quality, onConfig) {
    this.track = track;
    this.quality = quality;
    this.onConfig = onConfig;
    this.codec = '';
    this.sampleRate = 48000;
    this.channels = Math.max(1, Math.min(2, track.getSettings().channelCount || 1));
    this.description = null;
    this.offsetUs = null;     // page clock − audio context clock (µs), see onChunk
    this.lateRun = 0;         // consecutive chunks whose offset was well above offsetUs
    this.lateMin = Infinity;
    // The browser's estimate of the microphone's input latency (Chrome reports it), in µs.
    const lat = Number(track.getSettings().latency);
    this.inputLatencyUs = lat > 0 && lat < 0.5 ? lat * 1e6 : 0;
    this.stopped = false;
  }

  describe() {
    const d = { codec: this.codec, sampleRate: this.sampleRate, channels: this.channels };
    if (this.description) d.description = this.description;
    return d;
  }

  async start() {
    if (!('AudioWorkletNode' in window)) throw new Error('no AudioWorklet');
    let opus = null;
    if ('AudioEncoder' in window) {
      const cfg = {
        codec: 'opus', sampleRate: 48000, numberOfChannels: this.channels,
        bitrate: OPUS_BITRATE[this.quality] * this.channels, opus: { frameDuration: 20000 },
      };
      try { if ((await AudioEncoder.isConfigSupported(cfg)).supported) opus = cfg; } catch { /* PCM */ }
    }
    // Opus runs at 48 kHz, so let the context resample the microphone; PCM keeps the device rate.
    this.ctx = opus ? new AudioContext({ sampleRate: 48000 }) : new AudioContext();
    this.sampleRate = this.ctx.sampleRate;
    await this.ctx.audioWorklet.addModule('/js/capture-worklet.js');
    if (this.stopped) return;
    this.source = this.ctx.createMediaStreamSource(new MediaStream([this.track]));
    this.node = new AudioWorkletNode(this.ctx, 'capture-processor', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { channels: this.channels, chunkMs: 20 },
    });
    this.source.connect(this.node);
    this.node.connect(this.ctx.destination); // silent: the processor writes no output, but it keeps it pulled
    if (opus) {
      this.codec = 'opus';
      this.encoder = new AudioEncoder({
        output: (chunk, meta) => {
          const desc = meta?.decoderConfig?.description;
          if (desc && !this.description) {
            this.description = btoa(String.fromCharCode(...new Uint8Array(desc.buffer || desc)));
            this.onConfig();
          }
          this.sendAudio(packChunk(KIND.AUDIO, chunk.timestamp, chunk));
        },
        error: (e) => showError(`<strong>Audio encoder failed:</strong> ${esc(e.message)}`, 'audio-encoder-error'),
      });
      this.encoder.configure(opus);
    } else {
      this.codec = 'pcm-s16';
    }
    this.node.port.onmessage = (e) => this.onChunk(e.data);
    if (this.ctx.state !== 'running') {
      // Autoplay policy: without a click on this page (e.g. with ?autostart=1) the browser may hold
      // the audio context; say so, and start it on the first click anywhere.
      this.ctx.resume().catch(() => {});
      const kick = () => { this.ctx.resume().catch(() => {}); };
      document.addEventListener('click', kick, { once: true });
      const msg = 'Click anywhere on this page to start sending audio (the browser holds it until you interact).';
      this.ctx.onstatechange = () => {
        if (this.stopped) return;
        if (this.ctx.state !== 'running') showWarning(msg);
        else if (ui.warning.textContent === msg) showWarning('');
      };
      setTimeout(() => this.ctx.onstatechange && this.ctx.onstatechange(), 500);
    }
  }

  onChunk({ planes, frames, sampleRate, endTime }) {
    if (this.stopped) return;
    // Map the audio context clock onto the page clock, so audio and video share one timeline.
    // Each message reaches this thread a little late, so the smallest offset seen is the truest:
    // keep the minimum, let it creep up by 100 ppm to follow clock drift, and move up at once
    // only when half a second of chunks all say so (the audio device restarted).
    const ctxUs = endTime * 1e6;
    const off = nowUs() - ctxUs;
    if (this.offsetUs === null || off < this.offsetUs) {
      this.offsetUs = off;
      this.lateRun = 0;
    } else if (off - this.offsetUs > 30_000) {
      this.lateMin = Math.min(this.lateRun ? this.lateMin : Infinity, off);
      if (++this.lateRun >= 25) { this.offsetUs = this.lateMin; this.lateRun = 0; }
    } else {
      this.offsetUs += (frames / sampleRate) * 100;
      this.lateRun = 0;
    }
    // The chunk's first sample, minus the time the microphone took to deliver it.
    const ts = Math.round(this.offsetUs + ctxUs - (frames / sampleRate) * 1e6 - this.inputLatencyUs);
    if (!socketOpen()) return;
    if (this.codec === 'opus') {
      if (this.encoder.state !== 'configured') return;
      const data = new Float32Array(frames * planes.length);
      planes.forEach((p, i) => data.set(p, i * frames));
      const ad = new AudioData({ format: 'f32-planar', sampleRate, numberOfFrames: frames, numberOfChannels: planes.length, timestamp: ts, data });
      try { this.encoder.encode(ad); } finally { ad.close(); }
    } else {
      const out = new Uint8Array(frames * planes.length * 2);
      const dv = new DataView(out.buffer);
      for (let i = 0, o = 0; i < frames; i++) {
        for (let c = 0; c < planes.length; c++, o += 2) {
          const s = Math.max(-1, Math.min(1, planes[c][i]));
          dv.setInt16(o, s < 0 ? s * 0x8000 : s * 0x7fff, true); // little-endian, interleaved
        }
      }
      this.sendAudio(pack(KIND.AUDIO, ts, out));
    }
  }

  sendAudio(buf) {
    // Audio is small and matters most: only drop it when the socket is hopelessly behind.
    if (!socketOpen() || ws.bufferedAmount > 4 * congestionLimit()) return;
    if (send(buf, 'audio')) stats.audioChunksSent++;
  }

  stop() {
    this.stopped = true;
    try { this.node?.port.postMessage('stop'); this.source?.disconnect(); this.node?.disconnect(); } catch { /* closed */ }
    if (this.encoder && this.encoder.state !== 'closed') this.encoder.close();
    this.ctx?.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Pipelines and connection

async function startPipes() {
  stopPipes();
  const vt = media.getVideoTracks()[0];
  const at = media.getAudioTracks()[0];
  const onConfig = () => sendInit();
  const v = vt ? new VideoPipe(vt, ui.codec.value, Number(ui.fps.value), ui.quality.value, onConfig) : null;
  let a = at ? new AudioPipe(at, ui.quality.value, onConfig) : null;
  video = v;
  audio = a;
  // Audio is optional: without AudioWorklet (or with a broken audio device) stream video alone.
  const audioStart = a ? a.start().catch((e) => {
    a.stop();
    a = audio = null;
    showWarning(`Audio is not available in this browser (${e.message}): streaming video only.`);
  }) : null;
  try {
    await Promise.all([v?.start(), audioStart]);
  } catch (e) {
    showError(`<strong>Could not start encoding:</strong> ${esc(e.message)}`, 'pipeline-error');
    throw e;
  }
  stats.codec = v ? v.codec : '';
  stats.audioCodec = a ? a.codec : '';
  stats.width = v ? v.width : 0;
  stats.height = v ? v.height : 0;
  $('st-codec').textContent = [v && v.codec.split('.')[0].toUpperCase(), a && a.codec.toUpperCase()].filter(Boolean).join(' + ') || '–';
  sendInit();
}

function stopPipes() {
  video?.stop();
  audio?.stop();
  video = audio = null;
}

/** Asks the server whether we may publish (browsers hide a refused handshake's status). */
async function preflight(name) {
  const key = params.get('key');
  const url = `/api/publish/${encodeURIComponent(name)}` + (key ? `?key=${encodeURIComponent(key)}` : '');
  try {
    const r = await fetch(url, { cache: 'no-store' });
    return r.status;
  } catch {
    return 0;
  }
}

function preflightMessage(status, name) {
  switch (status) {
    case 0: return [`<strong>The server at ${esc(location.host)} is unreachable.</strong> Check that camrelay is running and your network is up.`, 'server-unreachable'];
    case 409: return [`<strong>The name “${esc(name)}” is already live.</strong> Someone is broadcasting under it: choose another name.`, 'name-taken'];
    case 403: return ['<strong>Publishing was refused (403).</strong> This server needs a publish key: open this page with <code>?key=YOUR_KEY</code> (or the key is wrong, or this site’s origin is not allowed).', 'forbidden'];
    case 400: return ['<strong>Invalid stream name.</strong> Use 1–64 letters, digits, “-” or “_”.', 'bad-name'];
    default: return [`<strong>The server answered ${status}.</strong> Try again in a moment.`, 'server-error'];
  }
}

async function start() {
  clearError();
  const name = ui.name.value.trim();
  if (!NAME_RE.test(name)) { showError(...preflightMessage(400, name)); return; }
  wantLive = true;
  everOpened = false;
  backoffMs = 500;
  stats.name = name;
  updateShare();
  setState('checking', 'checking…');
  const status = await preflight(name);
  if (!wantLive) return;
  if (status !== 200) {
    wantLive = false;
    showError(...preflightMessage(status, name));
    setState('error', 'not live');
    return;
  }
  if (!media && !(await openMedia())) { wantLive = false; setState('error', 'no camera'); return; }
  if (!wantLive) return;
  try { await startPipes(); } catch { wantLive = false; setState('error', 'error'); return; }
  connect();
}

function connect() {
  clearTimeout(reconnectTimer);
  const name = stats.name;
  const key = params.get('key');
  setState(everOpened ? 'reconnecting' : 'connecting', everOpened ? 'reconnecting…' : 'connecting…');
  const sock = new WebSocket(wsUrl(`/ws/publish/${encodeURIComponent(name)}`) + (key ? `?key=${encodeURIComponent(key)}` : ''));
  sock.binaryType = 'arraybuffer';
  ws = sock;
  let opened = false;
  sock.onopen = () => {
    if (ws !== sock) return;
    opened = true;
    everOpened = true;
    backoffMs = 500;
    clearError();
    setState('live', 'live');
    sendInit();
  };
  sock.onmessage = (e) => {
    if (typeof e.data !== 'string') return;
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    if (m.event === 'stream' && m.name && m.name !== stats.name) { stats.name = m.name; ui.name.value = m.name; updateShare(); }
    else if (m.event === 'watchers') setViewers(m.count);
    else if (m.event === 'keyframe' && video) video.forceKey = true;
  };
  sock.onclose = async (e) => {
    if (ws !== sock) return;
    ws = null;
    setViewers(0);
    if (!wantLive) return;
    if (!opened && !everOpened) {
      // Refused at the handshake: ask the server why.
      const status = await preflight(name);
      if (status !== 200) {
        wantLive = false;
        stopPipes();
        showError(...preflightMessage(status, name));
        setState('error', 'not live');
        return;
      }
    }
    if (e.code === 1008 || e.code === 1003) showError(`<strong>The server closed the broadcast:</strong> ${esc(e.reason || 'policy violation')} (${e.code}). Reconnecting…`, 'closed-' + e.code);
    else if (everOpened) showWarning('Connection to the server lost: reconnecting…');
    stats.reconnects++;
    setState('reconnecting', 'reconnecting…');
    reconnectTimer = setTimeout(reconnect, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 10_000);
  };
}

async function reconnect() {
  if (!wantLive) return;
  const status = await preflight(stats.name);
  if (!wantLive) return;
  if (status === 403 || status === 400) {
    wantLive = false;
    stopPipes();
    showError(...preflightMessage(status, stats.name));
    setState('error', 'not live');
    return;
  }
  if (status !== 200) {                       // unreachable, or our old session not yet reaped (409)
    if (status === 0) showError(...preflightMessage(0));
    stats.reconnects++;
    reconnectTimer = setTimeout(reconnect, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 10_000);
    return;
  }
  clearError();
  showWarning('');
  connect();
}

function stop() {
  wantLive = false;
  clearTimeout(reconnectTimer);
  if (ws) { const s = ws; ws = null; s.close(1000, 'publisher stopped'); }
  stopPipes();
  setViewers(0);
  setState('idle', 'offline');
}

function setViewers(n) {
  stats.viewers = n;
  $('st-viewers').textContent = n;
  $('viewers-badge-n').textContent = n;
  $('viewers-badge').hidden = !socketOpen();
}

function updateShare() {
  const name = ui.name.value.trim() || stats.name;
  ui.share.value = NAME_RE.test(name) ? shareLink(info, name) : '';
}

/** Settings changed: reopen the camera if needed and restart the encoders; the init follows. */
let applying = Promise.resolve();
function applySettings(reopen) {
  applying = applying.then(async () => {
    if (!media) return;
    if (reopen) {
      stopPipes();
      if (!(await openMedia())) { if (wantLive) stop(); return; }
    }
    if (wantLive) { try { await startPipes(); } catch { stop(); } }
  });
}

// ---------------------------------------------------------------------------------------------
// Start-up

function refreshStats() {
  stats.fps = Math.round(fpsMeter.rate() * 10) / 10;
  stats.kbps = Math.round(bitMeter.rate() / 1000);
  stats.bufferedBytes = ws ? ws.bufferedAmount : 0;
  $('st-fps').textContent = socketOpen() ? stats.fps.toFixed(0) : '0';
  $('st-kbps').textContent = fmtKbps(socketOpen() ? bitMeter.rate() : 0);
  $('st-dropped').textContent = stats.framesDropped;
}

async function main() {
  fillIcons();
  const codecParam = (params.get('codec') || '').toLowerCase();
  if (['jpeg', 'vp8', 'h264'].includes(codecParam)) ui.codec.value = codecParam;
  else if (!('VideoEncoder' in window)) ui.codec.value = 'jpeg';
  const nameParam = params.get('name');
  ui.name.value = nameParam && NAME_RE.test(nameParam) ? nameParam : randomName();
  stats.name = ui.name.value;

  ui.start.onclick = start;
  ui.stop.onclick = stop;
  $('shuffle').onclick = () => { ui.name.value = randomName(); updateShare(); };
  ui.name.oninput = updateShare;
  ui.copy.onclick = async () => { await copyText(ui.share.value); toast('Link copied'); };
  ui.camera.onchange = ui.mic.onchange = ui.resolution.onchange = ui.fps.onchange = () => applySettings(true);
  ui.quality.onchange = ui.codec.onchange = () => applySettings(false);
  setInterval(refreshStats, 500);
  setState('idle', 'offline');

  fetchInfo().then((i) => { info = i; updateShare(); });
  updateShare();

  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    showError(`<strong>Camera access needs a secure page.</strong> Browsers only allow the camera on HTTPS or on
      <code>http://localhost</code>. Open this page through HTTPS (for example behind a TLS proxy), or on this machine at
      <code>http://localhost:${esc(location.port || '80')}/capture</code>.`, 'insecure-context');
    ui.start.disabled = true;
    return;
  }
  await fillDevices().catch(() => {});
  if (params.get('autostart') === '1') { start(); return; }
  // If the camera was allowed before, show the preview right away.
  try {
    const p = await navigator.permissions.query({ name: 'camera' });
    if (p.state === 'granted' && !media) await openMedia();
  } catch { /* Firefox has no 'camera' permission name */ }
}

main();
