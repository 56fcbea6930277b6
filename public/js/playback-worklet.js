// camrelay: AudioWorklet processor that plays decoded audio on the cast page.
// - A small jitter buffer: starts (and restarts after an underrun) once `targetMs` is queued.
// - Catch-up: when more than `maxMs` is queued, whole chunks are dropped from the head back to the target.
// - Resampling: linear interpolation from each chunk's sample rate to the context's `sampleRate`.
// - Lip sync: the page may raise the target (`{type:'target'}`) when video runs behind; the buffer
//   then grows by playing a few percent slower, and shrinks back the same way.
// - Clock: reports the media timestamp (µs) of the sample it is outputting, so the page can slave video to it.
class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.targetMs = o.targetMs || 80;
    this.baseMs = this.targetMs;   // the target without lip-sync delay
    this.maxMs = o.maxMs || 300;
    this.queue = [];          // {ts, rate, planes: Float32Array[], pos (fractional frame index), started}
    this.playing = false;
    this.played = 0;          // chunks that started playing
    this.dropped = 0;         // chunks dropped to catch up
    this.underruns = 0;
    this.lastReport = 0;
    this.curTs = -1;
    this.speed = 1;           // > 1 while draining an excess buffer
    this.windowMin = Infinity;
    this.windowStart = 0;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === 'chunk') {
        this.queue.push({ ts: m.ts, rate: m.sampleRate, planes: m.planes, pos: 0, started: false });
      } else if (m.type === 'target') {
        this.targetMs = Math.max(this.baseMs, Math.min(this.maxMs - 40, m.ms));
      } else if (m.type === 'reset') {
        this.queue = []; this.playing = false; this.curTs = -1;
      }
    };
  }

  bufferedSec() {
    let s = 0;
    for (const c of this.queue) s += (c.planes[0].length - c.pos) / c.rate;
    return s;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    let buffered = this.bufferedSec() * 1000;
    if (!this.playing && buffered >= this.targetMs) this.playing = true;
    if (this.playing && buffered > this.maxMs) {
      // Too far behind live: skip whole chunks until we are back at the target.
      while (this.queue.length > 1 && buffered > this.targetMs) {
        const c = this.queue.shift();
        buffered -= (c.planes[0].length - c.pos) / c.rate * 1000;
        this.dropped++;
      }
    }
    // Drift control: if the buffer never fell near the target during the last half second, play a few
    // percent faster (a slight pitch change) until it does, so latency does not settle at up to maxMs.
    // Below a raised (lip-sync) target, play a few percent slower until the buffer holds it.
    if (this.playing) this.windowMin = Math.min(this.windowMin, buffered);
    if (currentTime - this.windowStart >= 0.5) {
      const excess = this.windowMin === Infinity ? 0 : this.windowMin - this.targetMs;
      if (excess > 15) this.speed = 1 + Math.min(0.06, excess / 2000);
      else if (excess < -25 && this.targetMs > this.baseMs) this.speed = 1 - Math.min(0.06, -excess / 2000);
      else this.speed = 1;
      this.windowMin = Infinity;
      this.windowStart = currentTime;
    }
    let i = 0;
    if (this.playing) {
      while (i < n && this.queue.length) {
        const c = this.queue[0];
        if (!c.started) { c.started = true; this.played++; }
        const len = c.planes[0].length;
        const step = c.rate / sampleRate * this.speed;
        const next = this.queue[1];
        while (i < n && c.pos < len) {
          const i0 = Math.floor(c.pos), frac = c.pos - i0;
          for (let ch = 0; ch < out.length; ch++) {
            const p = c.planes[Math.min(ch, c.planes.length - 1)];
            const a = p[i0];
            const b = i0 + 1 < len ? p[i0 + 1] : (next ? next.planes[Math.min(ch, next.planes.length - 1)][0] : a);
            out[ch][i] = a + (b - a) * frac;
          }
          if (i === 0) this.curTs = c.ts + (c.pos / c.rate) * 1e6;
          c.pos += step;
          i++;
        }
        if (c.pos >= len) {
          this.queue.shift();
          // Carry the fractional overshoot into the next chunk so the resampler stays continuous.
          if (this.queue.length) this.queue[0].pos = Math.max(0, c.pos - len) * (this.queue[0].rate / c.rate);
        }
      }
      if (i < n) { this.playing = false; this.underruns++; }
    }
    for (let ch = 0; ch < out.length; ch++) out[ch].fill(0, i);
    if (currentTime - this.lastReport >= 0.025) {
      this.lastReport = currentTime;
      this.port.postMessage({
        type: 'clock', ts: this.playing ? this.curTs : -1, time: currentTime,
        bufferedMs: this.bufferedSec() * 1000, targetMs: this.targetMs, played: this.played, dropped: this.dropped, underruns: this.underruns, speed: this.speed,
      });
    }
    return true;
  }
}
registerProcessor('playback-processor', PlaybackProcessor);
